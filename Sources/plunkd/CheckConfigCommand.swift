import ArgumentParser
import Foundation
import PlunkdCore

struct CheckConfigCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "check-config",
        abstract: "Validate the configuration without starting anything (exit 0 valid, 1 not).",
        discussion: "Reads the file and the environment exactly as `plunkd run` would; the key is never printed.")

    @OptionGroup var options: ConfigOptions

    func run() async throws {
        try await reportingFailures {
            let loaded = try await options.load()
            for warning in loaded.warnings + ConfigAdvice.warnings(for: loaded.configuration) {
                print("warning: \(warning)")
            }
            let config = loaded.configuration
            // Run from a shell on the service's own configuration: the unit's key files
            // are where the service finds its keys.
            let instance = try options.instanceName()
            let asTheService =
                ProcessInfo.processInfo.environment["CREDENTIALS_DIRECTORY"] == nil
                && (loaded.file == nil || loaded.file == ConfigLoader.defaultFile(for: instance))
            let keyLine: String
            if let key = config.apiKey {
                keyLine = "configured (\(key))"
            } else if asTheService, let credential = ServiceCredential.installed(.api, instance: instance) {
                keyLine = credential.summary()
            } else {
                keyLine = "not configured: events are kept, nothing is sent"
            }
            let secretLine: String
            if let key = config.secretKey {
                secretLine = "configured (\(key))"
            } else if asTheService, let credential = ServiceCredential.installed(.secret, instance: instance) {
                secretLine = credential.summary()
            } else if let key = config.emailKey {
                secretLine = "not set: the secret plunk.api_key (\(key)) serves /v1/send"
            } else {
                secretLine = "not configured: emails are kept, none is sent"
            }
            print(
                """
                configuration is valid (\(loaded.file ?? "no file: defaults and environment"))
                  plunk.base_url   \(config.plunkBaseURL.absoluteString)
                  plunk.api_key    \(keyLine)
                  plunk.secret_key \(secretLine)
                  burned keys      \(ConfigAdvice.burnedKeyChoice(for: config))
                  socket.path      \(config.socketPath)
                  storage.path     \(config.storagePath)
                """)
        }
    }
}
