import Foundation
import Logging
import NIOCore
import NIOPosix
import PlunkdTestSupport
import Synchronization
import Testing

@testable import PlunkdCore

#if canImport(Glibc)
    import Glibc
#endif

@Suite("The socket file and connections", .timeLimit(.minutes(2)), .watchdog)
struct SocketTests {
    @Test("the socket is created with the configured mode")
    func mode() async throws {
        let fixture = try await IngestFixture()
        var info = stat()
        #expect(lstat(fixture.socketPath, &info) == 0)
        #expect(info.st_mode & 0o777 == 0o660)
        await fixture.stop()
    }

    @Test("a stale socket file left by a crash is replaced")
    func staleSocket() throws {
        let directory = try DaemonProcess.makeScratchDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let path = "\(directory)/s.sock"
        // Bind and close without unlinking: what a killed daemon leaves behind.
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { $0.copyBytes(from: Array(path.utf8)) }
        _ = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        close(fd)
        #expect(FileManager.default.fileExists(atPath: path))
        #expect(!SocketPathGuard.isServed(path))
        try SocketPathGuard.prepare(path)
        #expect(!FileManager.default.fileExists(atPath: path))
    }

    @Test("a socket a live daemon serves is not stolen")
    func liveSocket() async throws {
        let fixture = try await IngestFixture()
        #expect(throws: SocketPathGuard.Refusal.self) { try SocketPathGuard.prepare(fixture.socketPath) }
        let client = try fixture.connect()
        try client.write(line())
        #expect(try NDJSONReply(client.readLine()).ok)
        await fixture.stop()
    }

    @Test("a path that is not a socket is never removed")
    func notASocket() throws {
        let directory = try DaemonProcess.makeScratchDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let path = "\(directory)/important.txt"
        try "keep me".write(toFile: path, atomically: true, encoding: .utf8)
        #expect(throws: SocketPathGuard.Refusal.self) { try SocketPathGuard.prepare(path) }
        #expect(FileManager.default.fileExists(atPath: path))
    }

    @Test("past the connection limit new connections are closed; open ones keep working")
    func connectionLimit() async throws {
        let fixture = try await IngestFixture(maxConnections: 2)
        let first = try fixture.connect()
        let second = try fixture.connect()
        try first.write(line())
        #expect(try NDJSONReply(first.readLine()).ok)
        try second.write(line())
        #expect(try NDJSONReply(second.readLine()).ok)
        let third = try fixture.connect()
        #expect(third.peerClosed())
        try first.write(line())
        #expect(try NDJSONReply(first.readLine()).ok)
        await fixture.stop()
    }

    @Test("an idle connection is closed after the idle timeout")
    func idleTimeout() async throws {
        let fixture = try await IngestFixture(idleTimeout: .milliseconds(200))
        let silent = try fixture.connect()
        #expect(silent.peerClosed())
        let partial = try fixture.connect()
        try partial.write(line())
        #expect(try NDJSONReply(partial.readLine()).ok)
        #expect(partial.peerClosed())
        await fixture.stop()
    }

    @Test("shutdown answers what was received, then closes connections")
    func drainOnShutdown() async throws {
        let fixture = try await IngestFixture()
        let client = try fixture.connect()
        try client.write(line("a") + line("b"))
        let first = try NDJSONReply(client.readLine())
        let second = try NDJSONReply(client.readLine())
        await fixture.stop()
        #expect(first.ok && second.ok)
        #expect(client.peerClosed())
    }

    @Test("shutdown: the listener goes first, an idle client is closed at once, one that never reads its answers is closed after the grace")
    func shutdownGraceClosesNonReader() async throws {
        let fixture = try await IngestFixture()
        let idle = try fixture.connect()
        try idle.write(line("idle"))
        #expect(try NDJSONReply(idle.readLine()).ok)
        // Answers to this many pipelined events overflow both socket buffers: a client
        // that never reads leaves the server unable to finish, so only the grace ends it.
        let hog = try fixture.connect()
        let batch = String(repeating: line("h"), count: 40_000)
        DispatchQueue.global().async { try? hog.write(batch) }
        // The server has stopped reading once its count of stored events stops growing.
        let lastCount = Mutex(-1)
        let stalled = await Poll.until(timeout: 30, every: .milliseconds(250)) {
            let count = (try? fixture.outbox.stateCounts().pending) ?? 0
            return lastCount.withLock { last in
                defer { last = count }
                return count > 1 && count == last && count < 40_001
            }
        }
        #expect(stalled)

        let started = ContinuousClock.now
        await fixture.server.shutdown(grace: .milliseconds(500))
        let took = ContinuousClock.now - started
        #expect(took >= .milliseconds(450), "the busy connection was given its grace")
        #expect(took < .seconds(20))
        #expect(idle.peerClosed())
        #expect(throws: Never.self) { _ = try hog.readToEnd() }
        #expect(throws: (any Error).self) { _ = try fixture.connect() }
        await fixture.stop()
    }
}
