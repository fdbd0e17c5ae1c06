import Foundation
import PlunkdTestSupport
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// The tests never read the host's configuration or environment: on a machine where
/// plunkd is installed and `PLUNK_API_KEY` is set, a test's daemon must not pick up the
/// real key, the real Plunk address or /etc/plunkd/plunkd.yaml.
@Suite("Tests isolated from the host", .serialized, .timeLimit(.minutes(2)), .watchdog)
struct TestIsolationTests {
    @Test("a test's daemon sees only the variables the test gave it, and an empty configuration file")
    func daemonEnvironment() throws {
        let daemon = try DaemonProcess(environment: ["PLUNKD_LOG_LEVEL": "warning"])
        defer { daemon.cleanUp() }
        try daemon.waitUntilServing()
        let environ = try Data(contentsOf: URL(fileURLWithPath: "/proc/\(daemon.pid)/environ"))
        let names = Set(environ.split(separator: 0).map { String(decoding: $0.prefix { $0 != UInt8(ascii: "=") }, as: UTF8.self) })
        #expect(names == ["PATH", "HOME", "PLUNKD_SOCKET_PATH", "PLUNKD_STORAGE_PATH", "PLUNKD_CONFIG", "PLUNKD_LOG_LEVEL"])
        let config = try DaemonProcess.isolatedConfigFile()
        #expect(try String(contentsOfFile: config, encoding: .utf8).hasSuffix("{}\n"))
    }

    @Test("a test's command reads the empty configuration, never /etc/plunkd, and reports no key")
    func commandConfiguration() throws {
        let check = try DaemonProcess.command(["check-config"])
        #expect(check.status == 0, "\(check.stderr)")
        #expect(check.stdout.contains("configuration is valid (\(try DaemonProcess.isolatedConfigFile()))"), "\(check.stdout)")
        #expect(!check.stdout.contains("/etc/plunkd"), "\(check.stdout)")
        #expect(check.stdout.contains("plunk.api_key    not configured"), "\(check.stdout)")
    }

    @Test("no spawn of the plunkd binary goes without the isolated configuration, whoever spawns it")
    func everySpawnSiteIsIsolated() throws {
        let bare = ["PATH": "/usr/bin:/bin", "HOME": "/tmp"]
        #expect(throws: DaemonProcess.Failure.self) { try SpawnedCommand.run(DaemonProcess.binaryPath, ["--version"], environment: bare) }
        #expect(throws: DaemonProcess.Failure.self) {
            try SpawnedCommand.run("/usr/bin/env", [DaemonProcess.binaryPath, "--version"], environment: bare)
        }
        #expect(throws: DaemonProcess.Failure.self) {
            let pid = try SpawnedCommand.start(DaemonProcess.binaryPath, ["run"], environment: bare)
            kill(pid, SIGKILL)
            SpawnedCommand.reap(pid, within: 10)
        }
        let isolated = try SpawnedCommand.run(
            DaemonProcess.binaryPath, ["--version"], environment: bare.merging(["PLUNKD_CONFIG": try DaemonProcess.isolatedConfigFile()]) { $1 })
        #expect(isolated.status == 0, "\(isolated.stderr)")
    }
}
