import ArgumentParser
import Foundation
import PlunkdCore

@main
struct PlunkdCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "plunkd",
        abstract: "A durable local forwarder of events to Plunk's track API.",
        version: PlunkdVersion.string,
        subcommands: [
            RunCommand.self, StatusCommand.self, SendCommand.self, ResumeCommand.self, ParkedCommand.self,
            CheckConfigCommand.self, ManualCommand.self,
        ])
}

/// Options shared by every subcommand that needs the configuration.
struct ConfigOptions: ParsableArguments {
    @Option(name: .long, help: "Configuration file (default: $PLUNKD_CONFIG, else /etc/plunkd/plunkd.yaml when it exists).")
    var config: String?

    /// `explicit` when given, else `socket.path` from the configuration.
    func socketPath(_ explicit: String?) async throws -> String {
        if let explicit { return explicit }
        return try await load().configuration.socketPath
    }

    func load() async throws -> LoadedConfiguration {
        do {
            return try await ConfigLoader.load(
                file: config, environment: ProcessInfo.processInfo.environment, uid: getuid())
        } catch {
            throw CommandFailure("configuration: \(error)")
        }
    }
}

/// An error whose message is all the user needs; printed as `plunkd: <message>`.
struct CommandFailure: Error, CustomStringConvertible {
    let description: String
    let exitCode: Int32

    init(_ description: String, exitCode: Int32 = 1) {
        self.description = description
        self.exitCode = exitCode
    }
}

extension AsyncParsableCommand {
    /// Runs `body`, turning a failure into one line on stderr and a non-zero exit status.
    func reportingFailures(_ body: () async throws -> Void) async throws {
        do {
            try await body()
        } catch let failure as CommandFailure {
            FileHandle.standardError.write(Data("plunkd: \(failure.description)\n".utf8))
            throw ExitCode(failure.exitCode)
        } catch let exit as ExitCode {
            throw exit
        } catch {
            FileHandle.standardError.write(Data("plunkd: \(error)\n".utf8))
            throw ExitCode(1)
        }
    }
}
