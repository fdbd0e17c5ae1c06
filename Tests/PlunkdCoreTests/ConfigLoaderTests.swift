import Foundation
import PlunkdTestSupport
import Testing

@testable import PlunkdCore

@Suite("Configuration", .timeLimit(.minutes(2)), .watchdog)
struct ConfigLoaderTests {
    func writeConfig(_ yaml: String) throws -> (directory: String, file: String) {
        let directory = try DaemonProcess.makeScratchDirectory()
        let file = "\(directory)/plunkd.yaml"
        try yaml.write(toFile: file, atomically: true, encoding: .utf8)
        return (directory, file)
    }

    func load(_ file: String?, _ environment: [String: String] = [:], uid: UInt32 = 1000) async throws(ConfigurationError) -> LoadedConfiguration {
        try await ConfigLoader.load(file: file, environment: environment, uid: uid, defaultFile: nil)
    }

    @Test("plunk.concurrency takes auto (any case) or a number; max_concurrency bounds what auto learns")
    func concurrencyAuto() async throws {
        let auto = try await load(nil, ["PLUNKD_CONFIG": "", "PLUNK_CONCURRENCY": "Auto", "PLUNK_MAX_CONCURRENCY": "100"]).configuration
        #expect(auto.concurrency == nil && auto.maxConcurrency == 100 && auto.requestSlotsCeiling == 100)
        let fixed = try await load(nil, ["PLUNKD_CONFIG": "", "PLUNK_CONCURRENCY": "12"]).configuration
        #expect(fixed.concurrency == 12 && fixed.requestSlotsCeiling == 12)
        await #expect(throws: ConfigurationError.self) { try await load(nil, ["PLUNKD_CONFIG": "", "PLUNK_CONCURRENCY": "automatic"]) }
    }

    @Test("plunk.max_rate is off by default and in YAML's own word; a number turns it on, with a burst of one second unless given")
    func maxRate() async throws {
        let defaults = try await load(nil, ["PLUNKD_CONFIG": ""]).configuration
        #expect(defaults.maxRate == nil && defaults.maxRateBurst == nil)
        let (directory, file) = try writeConfig("plunk:\n  max_rate: off\n")
        defer { try? FileManager.default.removeItem(atPath: directory) }
        #expect(try await load(file).configuration.maxRate == nil)
        let (onDirectory, onFile) = try writeConfig("plunk:\n  max_rate: 2.5\n  max_rate_burst: 10\n")
        defer { try? FileManager.default.removeItem(atPath: onDirectory) }
        let on = try await load(onFile).configuration
        #expect(on.maxRate == 2.5 && on.maxRateBurst == 10)
        #expect(try await load(nil, ["PLUNKD_CONFIG": "", "PLUNK_MAX_RATE": "40"]).configuration.maxRate == 40)
        for bad in ["0", "-1", "fast", "1e9"] {
            await #expect(throws: ConfigurationError.self, "\(bad)") { try await load(nil, ["PLUNKD_CONFIG": "", "PLUNK_MAX_RATE": bad]) }
        }
        await #expect(throws: ConfigurationError.self) { try await load(nil, ["PLUNKD_CONFIG": "", "PLUNK_MAX_RATE_BURST": "0.5"]) }
    }

    @Test("defaults for root are the system paths")
    func rootDefaults() async throws {
        let config = try await load(nil, ["PLUNKD_CONFIG": ""], uid: 0).configuration
        #expect(config.socketPath == "/run/plunkd/plunkd.sock")
        #expect(config.storagePath == "/var/lib/plunkd/outbox.sqlite")
        #expect(config.plunkBaseURL.absoluteString == "https://api.useplunk.com/v1")
        #expect(config.concurrency == nil, "auto")
        #expect(config.requestSlotsCeiling == 64)
        #expect(config.socketMode == 0o660)
        #expect(config.apiKey == nil)
    }

    @Test("defaults for other users follow XDG, with fallbacks")
    func userDefaults() {
        let xdg = DefaultPaths(uid: 1000, environment: ["XDG_RUNTIME_DIR": "/run/user/1000", "XDG_STATE_HOME": "/home/u/.state"])
        #expect(xdg.socketPath == "/run/user/1000/plunkd/plunkd.sock")
        #expect(xdg.storagePath == "/home/u/.state/plunkd/outbox.sqlite")
        let bare = DefaultPaths(uid: 1000, environment: ["HOME": "/home/u"])
        #expect(bare.socketPath == "/tmp/plunkd-1000/plunkd.sock")
        #expect(bare.storagePath == "/home/u/.local/state/plunkd/outbox.sqlite")
    }

    @Test("the YAML file sets every key; the environment overrides it")
    func fileAndEnvironment() async throws {
        let (directory, file) = try writeConfig(
            """
            plunk:
              base_url: https://next-api.useplunk.com/v1/
              api_key: pk_from_file
              concurrency: 4
              request_timeout: 2.5
            socket:
              path: /tmp/x/plunkd.sock
              mode: 0600
              max_connections: 10
              idle_timeout: 5m
            storage:
              path: /tmp/x/outbox.sqlite
              max_pending: 1_000
              max_bytes: 64m
            ingest:
              max_event_bytes: 1024
            retry:
              initial_backoff: 0.5
              max_backoff: 60
              max_age: 2d
            shutdown_grace: 3
            log:
              level: debug
            """)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let loaded = try await load(file, ["PLUNK_API_KEY": "pk_from_env", "PLUNKD_SOCKET_MODE": "0640"])
        let config = loaded.configuration
        #expect(loaded.warnings.isEmpty)
        #expect(config.plunkBaseURL.absoluteString == "https://next-api.useplunk.com/v1")
        #expect(config.apiKey?.value == "pk_from_env")
        #expect(config.concurrency == 4)
        #expect(config.requestTimeout == 2.5)
        #expect(config.socketPath == "/tmp/x/plunkd.sock")
        #expect(config.socketMode == 0o640)
        #expect(config.maxConnections == 10)
        #expect(config.idleTimeout == 300)
        #expect(config.storagePath == "/tmp/x/outbox.sqlite")
        #expect(config.maxPending == 1000)
        #expect(config.maxStorageBytes == 64 << 20)
        #expect(config.maxEventBytes == 1024)
        #expect(config.initialBackoff == 0.5)
        #expect(config.maxBackoff == 60)
        #expect(config.maxAge == 2 * 86_400)
        #expect(config.shutdownGrace == 3)
        #expect(config.logLevel == "debug")
    }

    @Test(
        "a wrong value is an error naming the key and its source",
        arguments: [
            ("plunk:\n  concurrency: eight\n", "plunk.concurrency", "whole number"),
            ("plunk:\n  concurrency: 0\n", "plunk.concurrency", "from 1 to"),
            ("plunk:\n  request_timeout: soon\n", "plunk.request_timeout", "duration"),
            ("plunk:\n  base_url: ftp://x\n", "plunk.base_url", "http(s) URL"),
            ("socket:\n  mode: 0999\n", "socket.mode", "octal"),
            ("socket:\n  path: relative.sock\n", "socket.path", "absolute path"),
            ("storage:\n  max_pending: -5\n", "storage.max_pending", "whole number"),
            ("retry:\n  max_backoff: [1, 2]\n", "retry.max_backoff", "single value"),
            ("log:\n  level: loud\n", "log.level", "one of"),
        ])
    func wrongValues(yaml: String, key: String, expected: String) async throws {
        let (directory, file) = try writeConfig(yaml)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        do {
            _ = try await load(file)
            Issue.record("accepted \(yaml)")
        } catch {
            #expect(error.description.contains(key))
            #expect(error.description.contains(expected))
            #expect(error.description.contains(file))
        }
    }

    @Test("a wrong value from the environment names the variable")
    func wrongEnvironmentValue() async {
        do {
            _ = try await load(nil, ["PLUNK_CONCURRENCY": "lots", "PLUNKD_CONFIG": ""])
            Issue.record("accepted")
        } catch {
            #expect(error.description.contains("plunk.concurrency"))
            #expect(error.description.contains("environment variable PLUNK_CONCURRENCY"))
        }
    }

    @Test("initial backoff above the maximum is refused")
    func backoffOrder() async {
        await #expect(throws: ConfigurationError.self) {
            try await load(nil, ["PLUNKD_RETRY_INITIAL_BACKOFF": "10", "PLUNKD_RETRY_MAX_BACKOFF": "5", "PLUNKD_CONFIG": ""])
        }
    }

    @Test("unknown keys are reported with a suggestion, not silently ignored")
    func unknownKeys() async throws {
        let (directory, file) = try writeConfig("plunk:\n  apikey: pk_x\nsockett:\n  path: /tmp/a\n")
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let loaded = try await load(file, ["PLUNKD_SOKET_PATH": "/x"])
        #expect(loaded.warnings.contains { $0.contains("'plunk.apikey'") && $0.contains("did you mean 'plunk.api_key'") })
        #expect(loaded.warnings.contains { $0.contains("'sockett'") })
        #expect(loaded.warnings.contains { $0.contains("PLUNKD_SOKET_PATH") })
        #expect(loaded.configuration.apiKey == nil)
    }

    @Test("a missing explicit file and invalid YAML are errors naming the file")
    func badFiles() async throws {
        await #expect(throws: ConfigurationError.self) { try await load("/nonexistent/plunkd.yaml") }
        let (directory, file) = try writeConfig("plunk: [unclosed\n")
        defer { try? FileManager.default.removeItem(atPath: directory) }
        do {
            _ = try await load(file)
            Issue.record("accepted invalid YAML")
        } catch {
            #expect(error.description.contains(file))
        }
    }

    @Test("the key comes from api_key_file, or else from the systemd credential")
    func keySources() async throws {
        let directory = try DaemonProcess.makeScratchDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        try "pk_in_file\n".write(toFile: "\(directory)/key", atomically: true, encoding: .utf8)
        try "sk_credential\n".write(toFile: "\(directory)/plunk-api-key", atomically: true, encoding: .utf8)
        let fromFile = try await load(nil, ["PLUNK_API_KEY_FILE": "\(directory)/key", "CREDENTIALS_DIRECTORY": directory, "PLUNKD_CONFIG": ""])
        #expect(fromFile.configuration.apiKey?.value == "pk_in_file")
        let fromCredential = try await load(nil, ["CREDENTIALS_DIRECTORY": directory, "PLUNKD_CONFIG": ""])
        #expect(fromCredential.configuration.apiKey?.value == "sk_credential")
        await #expect(throws: ConfigurationError.self) {
            try await load(nil, ["PLUNK_API_KEY_FILE": "\(directory)/missing", "PLUNKD_CONFIG": ""])
        }
        // The service's key file exists empty from installation on: no key yet, not an error.
        try "\n".write(toFile: "\(directory)/empty", atomically: true, encoding: .utf8)
        let empty = try await load(nil, ["PLUNK_API_KEY_FILE": "\(directory)/empty", "PLUNKD_CONFIG": ""])
        #expect(empty.configuration.apiKey == nil)
    }

    @Test("the key never shows in a description")
    func keyRedacted() async throws {
        let secret = "pk_0123456789abcdef_secret"
        let config = try await load(nil, ["PLUNK_API_KEY": secret, "PLUNKD_CONFIG": ""]).configuration
        #expect(!"\(config)".contains(secret))
        #expect(!String(reflecting: config).contains(secret))
        #expect("\(config.apiKey!)" == "pk_<redacted>")
    }

    @Test("the example config in config/ loads without warnings")
    func exampleConfig() async throws {
        let example = URL(fileURLWithPath: #filePath)
            .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("config/plunkd.yaml").path
        let loaded = try await load(example)
        #expect(loaded.warnings.isEmpty)
    }

    @Test("every key has its environment variable")
    func environmentNames() {
        #expect(ConfigKeys.environmentVariable(for: "plunk.api_key") == "PLUNK_API_KEY")
        #expect(ConfigKeys.environmentVariable(for: "socket.path") == "PLUNKD_SOCKET_PATH")
        #expect(ConfigKeys.environmentVariable(for: "shutdown_grace") == "PLUNKD_SHUTDOWN_GRACE")
    }

    @Test("socket access lists: YAML lists or comma-separated text, numbers or names; an unknown name is an error")
    func accessLists() async throws {
        let (directory, file) = try writeConfig(
            """
            socket:
              allowed_uids: [0, 1000]
              allowed_gids: root
              admin_uids: "root, 1001"
            metrics:
              listen: 9464
            status:
              warn_oldest_age: 5m
            """)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let loaded = try await load(file)
        #expect(loaded.warnings.isEmpty)
        let config = loaded.configuration
        #expect(config.allowedUIDs == [0, 1000])
        #expect(config.allowedGIDs == [0])
        #expect(config.adminUIDs == [0, 1001])
        #expect(config.metricsListen == HostAndPort(host: "127.0.0.1", port: 9464))
        #expect(config.warnOldestAge == 300)
        let fromEnvironment = try await load(nil, ["PLUNKD_SOCKET_ADMIN_UIDS": "7,8", "PLUNKD_METRICS_LISTEN": "[::1]:9100"]).configuration
        #expect(fromEnvironment.adminUIDs == [7, 8])
        #expect(fromEnvironment.metricsListen == HostAndPort(host: "::1", port: 9100))
        await #expect(throws: ConfigurationError.self) { try await load(nil, ["PLUNKD_SOCKET_ALLOWED_UIDS": "no-such-user-xyz"]) }
        await #expect(throws: ConfigurationError.self) { try await load(nil, ["PLUNKD_METRICS_LISTEN": "127.0.0.1:99999"]) }
        let open = try await load(nil, ["PLUNKD_METRICS_LISTEN": "0.0.0.0:9464"]).configuration
        #expect(ConfigAdvice.warnings(for: open).contains { $0.contains("not a loopback address") })
    }

    @Test("an empty systemd credential means no key yet, not an error")
    func emptyCredential() async throws {
        let directory = try DaemonProcess.makeScratchDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        try "\n".write(toFile: "\(directory)/plunk-api-key", atomically: true, encoding: .utf8)
        let config = try await load(nil, ["CREDENTIALS_DIRECTORY": directory]).configuration
        #expect(config.apiKey == nil)
    }
}

@Suite("check-config and the installed unit's credential", .timeLimit(.minutes(2)), .watchdog)
struct ServiceCredentialTests {
    @Test("the unit's key file is found (a drop-in's LoadCredential wins), and its key is told without its value")
    func findsTheUnitsKeyFile() throws {
        let root = try DaemonProcess.makeScratchDirectory()
        defer { try? FileManager.default.removeItem(atPath: root) }
        let fm = FileManager.default
        try fm.createDirectory(atPath: "\(root)/usr/lib/systemd/system", withIntermediateDirectories: true)
        try fm.createDirectory(atPath: "\(root)/etc/systemd/system/plunkd.service.d", withIntermediateDirectories: true)
        try fm.createDirectory(atPath: "\(root)/etc/plunkd", withIntermediateDirectories: true)
        try "[Service]\nEnvironment=PLUNK_API_KEY_FILE=/etc/plunkd/api-key\n"
            .write(toFile: "\(root)/usr/lib/systemd/system/plunkd.service", atomically: true, encoding: .utf8)
        let unit = try #require(ServiceCredential.installed(root: root))
        #expect(unit.path == "/etc/plunkd/api-key")
        #expect(unit.content(root: root) == .missing)
        try "".write(toFile: "\(root)/etc/plunkd/api-key", atomically: true, encoding: .utf8)
        #expect(unit.content(root: root) == .empty)
        try "pk_live_secret_value\n".write(toFile: "\(root)/etc/plunkd/api-key", atomically: true, encoding: .utf8)
        let summary = unit.summary(root: root)
        #expect(summary.contains("configured (pk_<redacted>), so the running service sends"))
        #expect(!summary.contains("secret_value"))
        try "[Service]\nLoadCredential=plunk-api-key:/etc/plunkd/other-key\n"
            .write(toFile: "\(root)/etc/systemd/system/plunkd.service.d/key.conf", atomically: true, encoding: .utf8)
        #expect(ServiceCredential.installed(root: root)?.path == "/etc/plunkd/other-key")
    }

    @Test("the unit's secret-key file is found apart from the API key's, and an empty one says an sk_ api key serves")
    func findsTheUnitsSecretKeyFile() throws {
        let root = try DaemonProcess.makeScratchDirectory()
        defer { try? FileManager.default.removeItem(atPath: root) }
        let fm = FileManager.default
        try fm.createDirectory(atPath: "\(root)/usr/lib/systemd/system", withIntermediateDirectories: true)
        try fm.createDirectory(atPath: "\(root)/etc/plunkd", withIntermediateDirectories: true)
        // The unit as shipped names both files.
        let shipped = try String(contentsOfFile: "\(ReferenceTests.root)/systemd/plunkd.service", encoding: .utf8)
        try shipped.write(toFile: "\(root)/usr/lib/systemd/system/plunkd.service", atomically: true, encoding: .utf8)
        #expect(ServiceCredential.installed(.api, root: root)?.path == "/etc/plunkd/api-key")
        let secret = try #require(ServiceCredential.installed(.secret, root: root))
        #expect(secret.path == "/etc/plunkd/secret-key")
        try "".write(toFile: "\(root)/etc/plunkd/secret-key", atomically: true, encoding: .utf8)
        #expect(secret.summary(root: root).contains("reads its secret key from /etc/plunkd/secret-key"))
        #expect(secret.summary(root: root).contains("an sk_ plunk.api_key serves"))
        try "sk_live_secret_value".write(toFile: "\(root)/etc/plunkd/secret-key", atomically: true, encoding: .utf8)
        #expect(secret.summary(root: root).contains("configured (sk_<redacted>)"))
        #expect(!secret.summary(root: root).contains("secret_value"))
    }
}

/// A key file others can read is reported, as OpenSSH reports a private key.
@Suite("The key file's permissions", .timeLimit(.minutes(2)), .watchdog)
struct KeyFilePermissionTests {
    @Test("check-config warns of a key file every user may read or others may change; 0640 and 0600 pass quietly")
    func keyFileModes() throws {
        let directory = try DaemonProcess.makeScratchDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let key = "\(directory)/api-key"
        try "pk_permission_test\n".write(toFile: key, atomically: true, encoding: .utf8)
        for (mode, expected) in [
            (0o644, "is readable by every user (mode 0644)"), (0o620, "may be changed by users other than its owner"), (0o640, nil), (0o600, nil),
        ] as [(mode_t, String?)] {
            chmod(key, mode)
            let run = try DaemonProcess.command(["check-config"], environment: ["PLUNK_API_KEY_FILE": key])
            #expect(run.status == 0, "\(run.stderr)")
            if let expected {
                #expect(run.stdout.contains("warning: plunk.api_key_file \(key) \(expected)"), "\(run.stdout)")
            } else {
                #expect(!run.stdout.contains("warning"), "\(run.stdout)")
            }
            #expect(!run.stdout.contains("pk_permission_test"))
        }
    }
}
