import Dispatch
import Foundation
import PlunkdTestSupport
import Testing

@testable import PlunkdCore

#if canImport(Glibc)
    import Glibc
#endif

/// The rig cannot hang: a test blocked for ever still ends the run and is named, and
/// every spawned command and every suite has a deadline.
@Suite("The rig's deadlines", .serialized, .timeLimit(.minutes(2)), .watchdog)
struct TestWatchdogTests {
    @Test("a test blocked for ever ends the run within its watchdog, which names it and kills its daemon")
    func blockedTestEndsTheRun() throws {
        try #require(ProcessInfo.processInfo.environment["PLUNKD_TEST_BLOCK"] == nil, "not inside the blocked run itself")
        let pidFile = try DaemonProcess.makeScratchDirectory() + "/daemon.pid"
        defer { try? FileManager.default.removeItem(atPath: (pidFile as NSString).deletingLastPathComponent) }
        let testBinary = try FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")
        let run = try SpawnedCommand.run(
            testBinary, ["--testing-library", "swift-testing", "--filter", "BlockedForEver"],
            environment: [
                "PATH": "/usr/bin:/bin", "HOME": "/tmp", "PLUNKD_TEST_WATCHDOG": "3", "PLUNKD_TEST_BLOCK": "1",
                "PLUNKD_TEST_BLOCK_PID": pidFile,
            ], deadline: 90)
        let output = run.stdout + run.stderr
        #expect(run.status == 70, "\(output.suffix(3000))")
        #expect(output.contains("plunkd test watchdog: a test that blocks for ever (PlunkdCoreTests/TestWatchdogTests.swift:"), "\(output.suffix(3000))")
        let daemon = try #require(pid_t(try String(contentsOfFile: pidFile, encoding: .utf8)), "the blocked test started no daemon")
        #expect(Poll.blockingUntil(timeout: 10) { kill(daemon, 0) != 0 }, "the blocked test's daemon \(daemon) outlived the run")
    }

    @Test("every suite carries the watchdog")
    func everySuiteIsWatched() throws {
        let folder = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        var unwatched: [String] = []
        for file in try FileManager.default.contentsOfDirectory(atPath: folder.path) where file.hasSuffix(".swift") {
            let text = try String(contentsOf: folder.appendingPathComponent(file), encoding: .utf8)
            for declaration in text.components(separatedBy: "\n@Suite").dropFirst() {
                let traits = declaration.prefix { $0 != "{" }
                if !traits.contains(".watchdog") { unwatched.append("\(file): @Suite\(traits.prefix(60))") }
            }
        }
        #expect(unwatched.isEmpty, "\(unwatched)")
    }

    @Test("a command that never ends is killed at its deadline, and the error says what it printed")
    func commandDeadline() throws {
        let directory = try DaemonProcess.makeScratchDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let socket = "\(directory)/plunkd.sock"
        let started = ContinuousClock.now
        let error = try #require(throws: DaemonProcess.Failure.self) {
            try DaemonProcess.command(
                ["run"], environment: ["PLUNKD_SOCKET_PATH": socket, "PLUNKD_STORAGE_PATH": "\(directory)/outbox.sqlite"], deadline: 3)
        }
        #expect(error.description.contains("run did not finish within 3.0 s and was killed"), "\(error)")
        #expect(error.description.contains("listening"), "the error keeps what the command printed: \(error)")
        #expect(ContinuousClock.now - started < .seconds(30))
        #expect(!SocketPathGuard.isServed(socket), "the daemon still serves after its deadline")
    }
}

/// Runs only inside `blockedTestEndsTheRun`'s run of this binary: it starts a daemon and
/// then waits on a semaphore nobody signals, as a test stuck on a lost callback would.
@Suite(
    "BlockedForEver", .watchdog,
    .enabled(if: ProcessInfo.processInfo.environment["PLUNKD_TEST_BLOCK"] == "1", "only in the watchdog's own test"))
struct BlockedForEver {
    @Test("a test that blocks for ever")
    func blocks() throws {
        let daemon = try DaemonProcess()
        try "\(daemon.pid)".write(toFile: ProcessInfo.processInfo.environment["PLUNKD_TEST_BLOCK_PID"] ?? "/dev/null", atomically: true, encoding: .utf8)
        DispatchSemaphore(value: 0).wait()
        daemon.cleanUp()
    }
}
