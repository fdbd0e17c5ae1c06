import ArgumentParser
import Foundation
import PlunkdCore

@main
struct PlunkdCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "plunkd",
        abstract: "A durable local forwarder of events and transactional email to Plunk's API.",
        version: PlunkdVersion.string,
        subcommands: [
            RunCommand.self, StatusCommand.self, TrackCommand.self, EmailCommand.self, DeprecatedSendCommand.self, ResumeCommand.self, ParkedCommand.self,
            CheckConfigCommand.self, ManualCommand.self,
        ])
}

/// Options shared by every subcommand that needs the configuration.
struct ConfigOptions: ParsableArguments {
    @Option(
        name: .long,
        help: "Configuration file (default: $PLUNKD_CONFIG, else /etc/plunkd/plunkd.yaml, or /etc/plunkd/NAME.yaml with --instance, when it exists).")
    var config: String?

    @Option(
        name: .long,
        help: "The instance plunkd@NAME: its configuration /etc/plunkd/NAME.yaml, socket /run/plunkd-NAME/plunkd.sock and store /var/lib/plunkd-NAME.")
    var instance: String?

    func instanceName() throws -> InstanceName? {
        do {
            return try instance.map { text throws(ConfigurationError) in try InstanceName(text) }
        } catch {
            throw CommandFailure("--instance: \(error)")
        }
    }

    func load() async throws -> LoadedConfiguration {
        let instance = try instanceName()
        do {
            return try await ConfigLoader.load(
                file: config, environment: ProcessInfo.processInfo.environment, uid: getuid(),
                defaultFile: ConfigLoader.defaultFile(for: instance), instance: instance)
        } catch {
            throw CommandFailure("configuration: \(error)")
        }
    }
}

/// Options of every command that talks to the running daemon.
struct ClientOptions: ParsableArguments {
    @Option(help: "Socket path (default: socket.path from the configuration).") var socket: String?
    @OptionGroup var configuration: ConfigOptions

    /// `--socket` when given, else `socket.path` from the configuration.
    func socketPath() async throws -> String {
        if let socket { return socket }
        return try await configuration.load().configuration.socketPath
    }
}

extension ParkReason: ExpressibleByArgument {}

/// An error whose message is all the user needs; printed as `plunkd: <message>`.
struct CommandFailure: Error, CustomStringConvertible {
    let description: String
    let exitCode: Int32

    init(_ description: String, exitCode: Int32 = 1) {
        self.description = description
        self.exitCode = exitCode
    }
}

extension ParsableArguments {
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
