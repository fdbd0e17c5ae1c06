import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// Tells systemd how the service is doing (sd_notify(3)): `READY=1`, `STATUS=…`,
/// `STOPPING=1`, `WATCHDOG=1`.
///
/// Written by hand because no package in reach speaks it, and the protocol is one
/// datagram to the Unix socket named in `NOTIFY_SOCKET` (a leading `@` means Linux's
/// abstract namespace). Without `NOTIFY_SOCKET` every call does nothing.
public final class SystemdNotifier: Sendable {
    private let address: String?
    /// How often systemd expects `WATCHDOG=1` (`WATCHDOG_USEC`), when it watches this process.
    public let watchdogInterval: TimeInterval?

    public init(environment: [String: String], pid: Int32 = getpid()) {
        let socket = environment["NOTIFY_SOCKET"].flatMap { $0.isEmpty ? nil : $0 }
        address = socket
        if socket != nil, let usec = environment["WATCHDOG_USEC"].flatMap(UInt64.init), usec > 0,
            environment["WATCHDOG_PID"].flatMap(Int32.init).map({ $0 == pid }) ?? true
        {
            watchdogInterval = TimeInterval(usec) / 1_000_000
        } else {
            watchdogInterval = nil
        }
    }

    public var isActive: Bool { address != nil }

    /// Sends `fields` (such as `READY=1`) as one datagram; failures are ignored, as
    /// sd_notify's callers do: systemd not listening must never stop the daemon.
    @discardableResult
    public func notify(_ fields: String...) -> Bool {
        guard let address else { return false }
        let fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        // Built by hand, not with NIO's SocketAddress: systemd may name an abstract socket
        // (`@…`), whose address is a leading NUL and an exact length.
        var target = sockaddr_un()
        target.sun_family = sa_family_t(AF_UNIX)
        var pathBytes = Array(address.utf8)
        if pathBytes.first == UInt8(ascii: "@") { pathBytes[0] = 0 }
        guard pathBytes.count < MemoryLayout.size(ofValue: target.sun_path) else { return false }
        withUnsafeMutableBytes(of: &target.sun_path) { raw in
            raw.copyBytes(from: pathBytes)
        }
        let length = socklen_t(MemoryLayout<sa_family_t>.size + pathBytes.count + (pathBytes.first == 0 ? 0 : 1))
        let message = fields.joined(separator: "\n")
        let sent = message.withCString { text in
            withUnsafePointer(to: &target) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    sendto(fd, text, strlen(text), Int32(MSG_NOSIGNAL), $0, length)
                }
            }
        }
        return sent >= 0
    }
}
