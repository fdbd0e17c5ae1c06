import ArgumentParser
import Foundation
import PlunkdCore

struct StatusCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "status",
        abstract: "Show whether events flow and, when they don't, why and what to do.",
        discussion: """
            Asks the running daemon over its socket; when nothing answers, reads the store \
            read-only and reports the daemon as not running.
            Exit status (monitoring-plugins convention): 0 OK; 1 WARNING (backing off, rate \
            limited, old pending events, events parked as rejected or expired); 2 CRITICAL \
            (quota paused, auth held, no API key, not running, storage error); 3 UNKNOWN.
            """)

    @Flag(help: "Print the stable JSON object (documented in docs/operations.md) instead of text.") var json = false
    @Flag(help: "Every plunkd on this host: plunkd.service and each plunkd@NAME, each from its own configuration; exits with the worst status.")
    var all = false
    @OptionGroup var options: ClientOptions

    func validate() throws {
        if all && (options.socket != nil || options.configuration.config != nil || options.configuration.instance != nil) {
            throw ValidationError("--all reads each instance's own configuration: drop --socket, --config and --instance")
        }
    }

    func run() async throws {
        if all {
            let host = await hostStatus()
            print(json ? host.json() : host.text())
            throw ExitCode(host.severity.exitCode)
        }
        let loaded = await Result(asyncCatching: { try await options.configuration.load().configuration })
        let report = await makeReport(loaded, socket: options.socket)
        print(json ? report.json(pretty: true) : StatusText.render(report))
        throw ExitCode(report.severity.exitCode)
    }

    /// Each instance's configuration as its daemon reads it: its own file and defaults,
    /// none of this shell's PLUNKD_ and PLUNK_ variables, which would name one daemon's
    /// paths for all of them.
    private func hostStatus() async -> HostStatus {
        let environment = ProcessInfo.processInfo.environment.filter { !$0.key.hasPrefix("PLUNKD_") && !$0.key.hasPrefix("PLUNK_") }
        // nil: the plain plunkd.service.
        let daemons: [InstanceName?] = (InstanceName.plainServiceOnHost() ? [nil] : []) + InstanceName.onHost()
        var entries: [HostStatus.Entry] = []
        for instance in daemons {
            let loaded = await Result(asyncCatching: {
                try await ConfigLoader.load(
                    file: nil, environment: environment, uid: getuid(), defaultFile: ConfigLoader.defaultFile(for: instance), instance: instance
                ).configuration
            })
            entries.append(.init(unit: instance?.unit ?? "plunkd.service", report: await makeReport(loaded, socket: nil)))
        }
        return HostStatus(entries: entries)
    }

    private func makeReport(_ loaded: Result<DaemonConfiguration, any Error>, socket: String?) async -> StatusReport {
        let now = Date()
        let config: DaemonConfiguration
        switch loaded {
        case .success(let loaded): config = loaded
        case .failure(let error):
            let context = StatusContext(socketPath: socket ?? "unknown", databasePath: "unknown", warnOldestAge: 900)
            return StatusAssessment.unknown("\(error)", context: context, now: now)
        }
        let socketPath = socket ?? config.socketPath
        let context = StatusContext(
            socketPath: socketPath, databasePath: config.storagePath, warnOldestAge: config.warnOldestAge, parkedMaxAge: config.parkedMaxAge)
        let horizon = context.retentionHorizon(now: now)
        do {
            let answer = try await IngestClient.control(method: "GET", path: "/status", socketPath: socketPath, timeout: .seconds(10))
            guard answer.status == 200 else {
                return StatusAssessment.unknown("the daemon answered \(answer.status): \(answer.body.prefix(200))", context: context, now: now)
            }
            return try StatusReport.decoder().decode(StatusReport.self, from: Data(answer.body.utf8))
        } catch let failure as IngestClient.Failure where failure.unreachable {
            let stored = Result { try OutboxReader(path: config.storagePath).storedStatus(retentionHorizon: horizon) }
            let emailPath = config.emailStoragePath
            let email =
                FileManager.default.fileExists(atPath: emailPath)
                ? (stored: Result { try OutboxReader(path: emailPath).storedStatus(retentionHorizon: horizon) }, databasePath: emailPath) : nil
            return StatusAssessment.notRunning(
                stored: stored, unreachable: "nothing answers on \(socketPath)", context: context, now: now, email: email)
        } catch {
            return StatusAssessment.unknown("cannot read the daemon's answer: \(error)", context: context, now: now)
        }
    }
}

extension Result where Failure == any Error {
    /// `Result(catching:)` for an async body.
    init(asyncCatching body: () async throws -> Success) async {
        do {
            self = .success(try await body())
        } catch {
            self = .failure(error)
        }
    }
}
