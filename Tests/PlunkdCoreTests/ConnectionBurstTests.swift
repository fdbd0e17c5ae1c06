import Foundation
import PlunkdTestSupport
import Testing

@testable import PlunkdCore

#if canImport(Glibc)
    import Glibc
#endif

/// A burst of connections is queued by the kernel, not refused: the daemon is stopped
/// (SIGSTOP) so that nothing is accepted while 500 clients connect at once, as a web
/// server's workers do after a restart. With the old backlog of 256, the rest got EAGAIN.
/// The daemon is spawned with posix_spawn (DaemonProcess), not Foundation's Process,
/// whose child monitoring must not see a stopped child.
@Suite("A burst of connections", .serialized, .timeLimit(.minutes(2)), .watchdog)
struct ConnectionBurstTests {
    @Test("500 connections while the daemon accepts none are all queued, then all served")
    func burstIsQueued() async throws {
        let somaxconn =
            (try? String(contentsOfFile: "/proc/sys/net/core/somaxconn", encoding: .utf8))
            .flatMap { Int($0.trimmingCharacters(in: .whitespacesAndNewlines)) } ?? 4096
        try #require(somaxconn >= 500, "the kernel caps the backlog at \(somaxconn)")
        let daemon = try DaemonProcess()
        let socketPath = daemon.socketPath
        let pid = daemon.pid
        defer {
            kill(pid, SIGCONT)
            kill(pid, SIGTERM)
            daemon.waitForExit(timeout: 30)
            daemon.cleanUp()
        }
        try #require(Poll.blockingUntil(timeout: 60) { SocketPathGuard.isServed(socketPath) }, "plunkd did not serve \(socketPath)")
        kill(pid, SIGSTOP)
        var descriptors: [Int32] = []
        var refused = 0
        for _ in 0..<500 {
            let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
            var flags = fcntl(fd, F_GETFL)
            flags |= O_NONBLOCK
            _ = fcntl(fd, F_SETFL, flags)
            var address = sockaddr_un()
            address.sun_family = sa_family_t(AF_UNIX)
            withUnsafeMutableBytes(of: &address.sun_path) { $0.copyBytes(from: Array(socketPath.utf8)) }
            let result = withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
            }
            if result != 0 {
                refused += 1
                close(fd)
            } else {
                descriptors.append(fd)
            }
        }
        kill(pid, SIGCONT)
        #expect(refused == 0)
        // Every queued connection is served: an event on each of the first ten is acknowledged.
        for fd in descriptors.prefix(10) {
            var flags = fcntl(fd, F_GETFL)
            flags &= ~O_NONBLOCK
            _ = fcntl(fd, F_SETFL, flags)
            var timeout = timeval(tv_sec: 30, tv_usec: 0)
            setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
            let line = Array(#"{"event":"burst","email":"b@example.com"}"#.utf8) + [10]
            #expect(write(fd, line, line.count) == line.count)
            var reply = [UInt8](repeating: 0, count: 256)
            let count = read(fd, &reply, reply.count)
            let text = String(decoding: reply.prefix(max(0, count)), as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
            #expect(DaemonProcessTests.ackedID(text) != nil, "\(text)")
        }
        descriptors.forEach { close($0) }
    }
}
