import Foundation
import PlunkdTestSupport
import Testing

@testable import PlunkdCore

@Suite("Ingest tokens", .timeLimit(.minutes(2)), .watchdog)
struct IngestTokensTests {
    static let token = "local-token-0123456789abcdef"

    func load(_ file: String?, _ environment: [String: String] = [:]) async throws(ConfigurationError) -> LoadedConfiguration {
        try await ConfigLoader.load(file: file, environment: environment, uid: 1000, defaultFile: nil)
    }

    @Test("a token admits only as Authorization: Bearer (any case), whole: no prefix, no extension, no other scheme")
    func admits() {
        let tokens = IngestTokens([Self.token, "second-token-ffffffffffff"])
        #expect(tokens.admits(authorization: "Bearer \(Self.token)"))
        #expect(tokens.admits(authorization: "bearer second-token-ffffffffffff"))
        #expect(!tokens.admits(authorization: nil))
        #expect(!tokens.admits(authorization: "Bearer"))
        #expect(!tokens.admits(authorization: "Bearer \(Self.token.dropLast())"))
        #expect(!tokens.admits(authorization: "Bearer \(Self.token)0"))
        #expect(!tokens.admits(authorization: "Basic \(Self.token)"))
        #expect(!tokens.admits(authorization: Self.token))
        #expect(!IngestTokens([]).admits(authorization: "Bearer \(Self.token)"))
        #expect("\(tokens)" == "2 tokens <redacted>" && !"\(String(reflecting: tokens))".contains("local"))
    }

    @Test("ingest.tokens as a YAML list or a comma-separated variable; ingest.tokens_file one per line with comments")
    func sources() async throws {
        let directory = try DaemonProcess.makeScratchDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let yaml = "\(directory)/plunkd.yaml"
        try "ingest:\n  listen: 18080\n  tokens:\n    - \(Self.token)\n    - second-token-ffffffffffff\n".write(
            toFile: yaml, atomically: true, encoding: .utf8)
        chmod(yaml, 0o644)
        let listed = try await load(yaml)
        #expect(listed.configuration.ingestTokens.count == 2)
        #expect(listed.configuration.ingestListen == HostAndPort(host: "127.0.0.1", port: 18080))
        #expect(listed.configuration.ingestTokensInConfigFile)
        // As the package installs the config file (0644), every local user could read them.
        let advice = ConfigAdvice.warnings(for: listed.configuration)
        #expect(advice.contains { $0.contains("ingest.tokens: the config file \(yaml) is readable by every user") && $0.contains("ingest.tokens_file") })
        chmod(yaml, 0o640)
        #expect(!ConfigAdvice.warnings(for: try await load(yaml).configuration).contains { $0.contains("ingest.tokens") })

        let fromEnvironment = try await load(nil, ["PLUNKD_INGEST_TOKENS": "\(Self.token), second-token-ffffffffffff"]).configuration
        #expect(fromEnvironment.ingestTokens.count == 2 && fromEnvironment.ingestTokensFile == nil)
        #expect(ConfigAdvice.warnings(for: fromEnvironment).contains { $0.contains("ingest.listen is not") })

        let file = "\(directory)/tokens"
        try "# rotated 2026-12\n\n\(Self.token)\n  second-token-ffffffffffff  \n".write(toFile: file, atomically: true, encoding: .utf8)
        chmod(file, 0o644)
        let fromFile = try await load(nil, ["PLUNKD_INGEST_TOKENS_FILE": file, "PLUNKD_INGEST_LISTEN": "18080"]).configuration
        #expect(fromFile.ingestTokens == IngestTokens([Self.token, "second-token-ffffffffffff"]))
        #expect(ConfigAdvice.warnings(for: fromFile).contains { $0.contains("ingest.tokens_file \(file) is readable by every user") })
        await #expect(throws: ConfigurationError.self) {
            try await load(nil, ["PLUNKD_INGEST_TOKENS_FILE": "\(directory)/missing", "PLUNKD_INGEST_LISTEN": "18080"])
        }
    }

    @Test("a token with a space, or a listener address beyond loopback, is refused with the key named")
    func refusals() async {
        let spaced = await #expect(throws: ConfigurationError.self) {
            try await load(nil, ["PLUNKD_INGEST_TOKENS": "\(Self.token) x"])
        }
        #expect(spaced.map { $0.description.contains("ingest.tokens: token 1 holds whitespace") && !$0.description.contains(Self.token) } == true)
        await #expect(throws: ConfigurationError.self) {
            try await load(nil, ["PLUNKD_INGEST_LISTEN": "[::]:18080", "PLUNKD_INGEST_TOKENS": Self.token])
        }
        await #expect(throws: ConfigurationError.self) {
            try await load(nil, ["PLUNKD_INGEST_LISTEN_BEYOND_LOOPBACK": "maybe"])
        }
    }
}
