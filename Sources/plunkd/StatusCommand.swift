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

    @Flag(help: "Print the stable JSON object (documented in README.md) instead of text.") var json = false
    @OptionGroup var options: ClientOptions

    func run() async throws {
        let report = await makeReport()
        print(json ? report.json(pretty: true) : StatusText.render(report))
        throw ExitCode(report.severity.exitCode)
    }

    private func makeReport() async -> StatusReport {
        let now = Date()
        let config: DaemonConfiguration
        do {
            config = try await options.configuration.load().configuration
        } catch {
            let context = StatusContext(socketPath: options.socket ?? "unknown", databasePath: "unknown", warnOldestAge: 900)
            return StatusAssessment.unknown("\(error)", context: context, now: now)
        }
        let socketPath = options.socket ?? config.socketPath
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
