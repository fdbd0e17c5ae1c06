import Foundation
import PlunkdTestSupport
import Testing

@testable import PlunkdCore

#if canImport(Glibc)
    import Glibc
#endif

/// The daemon as it runs in production: as its own unprivileged user, not as root like
/// the rest of the tests. A socket option that only root may set (TCP_NODELAY passed at
/// the socket level is SO_DEBUG, which needs CAP_NET_ADMIN) once failed every connection
/// to Plunk and every TCP client for `User=plunkd`, and no test running as root saw it.
@Suite("The daemon as an unprivileged user", .serialized, .timeLimit(.minutes(2)), .watchdog)
struct UnprivilegedDaemonTests {
    @Test(
        "uid 65534: events reach Plunk over TCP, and a client of the TCP listener is served",
        .enabled(
            if: getuid() == 0 && FileManager.default.isExecutableFile(atPath: "/usr/bin/setpriv"),
            "needs root and setpriv to act as another user"))
    func deliversAsNobody() async throws {
        let fake = try await FakePlunk()
        defer { Task { await fake.stop() } }
        let directory = try DaemonProcess.makeScratchDirectory()
        #expect(chown(directory, 65534, 65534) == 0)
        chmod(directory, 0o755)
        let port = try OperateProcessTests.freePort()
        var environment = DaemonDeliveryTests().environment(fake)
        environment["PLUNKD_INGEST_LISTEN"] = "127.0.0.1:\(port)"
        environment["PLUNKD_INGEST_TOKENS"] = TCPListenerTests.token
        let daemon = try DaemonProcess(
            directory: directory, environment: environment,
            launcher: ["/usr/bin/setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"])
        defer { daemon.cleanUp() }
        try daemon.waitUntilServing()
        let status = try String(contentsOfFile: "/proc/\(daemon.pid)/status", encoding: .utf8)
        #expect(status.split(separator: "\n").contains { $0.hasPrefix("Uid:") && $0.contains("65534") }, "\(status)")

        _ = try DaemonDeliveryTests().submit(daemon.socketPath, event: "over-the-socket")
        let answer = try TCPListenerTests.request(
            port: port, "POST", "/v1/track", headers: ["Authorization: Bearer \(TCPListenerTests.token)"],
            body: #"{"event":"over-tcp","email":"a@example.com"}"#)
        #expect(answer.hasPrefix("HTTP/1.1 200"), "\(answer)")
        #expect(await fake.waitFor(timeout: 30) { $0.count >= 2 }, "\(daemon.log)")
        #expect(Set(fake.requests.compactMap(\.eventName)) == ["over-the-socket", "over-tcp"])
        #expect(!daemon.log.contains("Permission denied"), "\(daemon.log)")
    }
}
