import Foundation
import PlunkdTestSupport
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// A part that cannot start, through the binary: plunkd exits 1 with the reason, after
/// stopping what had started (no trap from a client left open, no stale store lock), and
/// the next start on the same store works.
@Suite("Start-up failures", .serialized, .timeLimit(.minutes(2)), .watchdog)
struct StartupFailureTests {
    func startsAgain(in directory: String) throws {
        let again = try DaemonProcess(directory: directory)
        defer { again.cleanUp(removeDirectory: false) }
        try again.waitUntilServing()
    }

    @Test("metrics.listen on a port already taken: exit 1 naming it; the sender had started and is stopped")
    func metricsPortTaken() throws {
        let (listener, port) = try OperateProcessTests.boundLoopbackSocket(listening: true)
        defer { close(listener) }

        let daemon = try DaemonProcess(environment: ["PLUNKD_METRICS_LISTEN": "127.0.0.1:\(port)"])
        defer { daemon.cleanUp() }
        // 1: an exit, not a signal (a trap would be 128 + SIGILL or SIGTRAP).
        #expect(daemon.waitForExit(timeout: 60) == 1, "\(daemon.log)")
        #expect(daemon.log.contains("metrics.listen 127.0.0.1:\(port): cannot listen"), "\(daemon.log)")
        // Parts stop in reverse: the sender, started before the listener, was shut down.
        #expect(daemon.log.contains("waiting for requests in flight"), "\(daemon.log)")
        #expect(!daemon.log.contains("listening"), "\(daemon.log)")
        try startsAgain(in: daemon.directory)
    }

    @Test("a socket path that cannot be bound (its directory is a file): exit 1 naming it; the store is free again")
    func socketUnusable() throws {
        let directory = try DaemonProcess.makeScratchDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        try Data().write(to: URL(fileURLWithPath: "\(directory)/file"))
        let daemon = try DaemonProcess(
            directory: directory,
            environment: [
                "PLUNKD_SOCKET_PATH": "\(directory)/file/plunkd.sock", "PLUNKD_METRICS_LISTEN": "127.0.0.1:\(try OperateProcessTests.freePort())",
            ])
        defer { daemon.cleanUp(removeDirectory: false) }
        // 1: an exit, not a signal (a trap would be 128 + SIGILL or SIGTRAP).
        #expect(daemon.waitForExit(timeout: 60) == 1, "\(daemon.log)")
        #expect(daemon.log.contains("\(directory)/file"), "\(daemon.log)")
        #expect(daemon.log.contains("waiting for requests in flight"), "\(daemon.log)")
        try startsAgain(in: directory)
    }
}
