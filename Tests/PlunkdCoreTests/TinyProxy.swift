import Foundation
import PlunkdTestSupport

/// Debian's tinyproxy on 127.0.0.1, with a user and password, logging every CONNECT:
/// a real HTTP proxy for plunkd to tunnel TLS through. `.ci/run` installs it.
final class TinyProxy: @unchecked Sendable {
    let directory: String
    let port: Int
    let pid: pid_t
    static let user = "plunkd"
    static let password = "pr0xy-s3cret"

    var url: String { "http://\(Self.user):\(Self.password)@127.0.0.1:\(port)" }
    var log: String { (try? String(contentsOfFile: "\(directory)/tinyproxy.log", encoding: .utf8)) ?? "" }

    init() throws {
        directory = try DaemonProcess.makeScratchDirectory()
        port = try OperateProcessTests.freePort()
        try """
        Port \(port)
        Listen 127.0.0.1
        Timeout 30
        LogFile "\(directory)/tinyproxy.log"
        LogLevel Connect
        MaxClients 20
        Allow 127.0.0.1
        BasicAuth \(Self.user) \(Self.password)
        """.write(toFile: "\(directory)/tinyproxy.conf", atomically: true, encoding: .utf8)
        do {
            pid = try SpawnedCommand.start("/usr/bin/tinyproxy", ["-d", "-c", "\(directory)/tinyproxy.conf"])
        } catch {
            // Not installed: no scratch directory is left behind for it.
            try? FileManager.default.removeItem(atPath: directory)
            throw error
        }
        if Poll.blockingUntil(timeout: 10, every: .milliseconds(20), { Self.accepts(port) }) { return }
        stop()
        throw DaemonProcess.Failure(description: "tinyproxy did not listen on \(port)")
    }

    func stop() {
        // tinyproxy finishes its connections on SIGTERM first; a test is done with them.
        kill(pid, SIGKILL)
        SpawnedCommand.reap(pid, within: 10)
        try? FileManager.default.removeItem(atPath: directory)
    }

    static func accepts(_ port: Int) -> Bool {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = UInt16(port).bigEndian
        return withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0 }
        }
    }
}
