import ArgumentParser
import Foundation
import Logging
import PlunkdCore

struct RunCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "run",
        abstract: "Run the daemon in the foreground, logging to stderr (as systemd runs it).")

    @OptionGroup var options: ConfigOptions

    @Option(help: "text or json (one JSON object per line); overrides log.format.")
    var logFormat: LogFormat?

    func run() async throws {
        try await reportingFailures {
            let loaded = try await options.load()
            let instance = try options.instanceName()
            let config = loaded.configuration
            let level = Logger.Level(rawValue: config.logLevel) ?? .info
            let journal = JournalLogHandler.stderrIsJournal(environment: ProcessInfo.processInfo.environment)
            if (logFormat ?? config.logFormat) == .json {
                LoggingSystem.bootstrap { label in
                    var handler = JSONLogHandler(label: label, journal: journal)
                    handler.logLevel = level
                    return handler
                }
            } else if journal {
                LoggingSystem.bootstrap { label in
                    var handler = JournalLogHandler(label: label)
                    handler.logLevel = level
                    return handler
                }
            } else {
                LoggingSystem.bootstrap { label in
                    var handler = StreamLogHandler.standardError(label: label)
                    handler.logLevel = level
                    return handler
                }
            }
            let logger = Logger(label: "plunkd")
            for warning in loaded.warnings + ConfigAdvice.warnings(for: config) {
                logger.warning("\(warning)")
            }
            logger.info(
                "plunkd \(PlunkdVersion.string) starting",
                metadata: [
                    "instance": "\(instance?.unit ?? "plunkd.service")",
                    "config": "\(loaded.file ?? "none (defaults and environment)")",
                    "socket": "\(config.socketPath)",
                    "storage": "\(config.storagePath)",
                    "api_key": "\(config.apiKey.map { "configured (\($0))" } ?? "not configured")",
                ])
            let options = self.options
            try await Daemon.run(config, logger: logger, reload: { try await options.load().configuration })
        }
    }
}

extension LogFormat: ExpressibleByArgument {}
