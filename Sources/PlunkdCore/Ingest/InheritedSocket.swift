import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// A listening socket handed over by systemd socket activation (`LISTEN_FDS`).
///
/// Read by hand from the environment, as sd_listen_fds(3) does it: the protocol is three
/// environment variables and a fixed first descriptor, and linking libsystemd for that
/// would tie the binary to it.
public struct InheritedSocket: Sendable, Equatable {
    /// systemd passes sockets from descriptor 3 on (SD_LISTEN_FDS_START).
    public static let firstDescriptor: Int32 = 3

    public let descriptor: Int32
    /// The path the socket is bound to, as the kernel reports it.
    public let path: String

    public struct Refusal: Error, CustomStringConvertible {
        public let description: String
    }

    /// The activated socket, or nil when the daemon was not socket-activated. Throws when
    /// systemd passed something plunkd cannot serve (not a listening Unix stream socket).
    public static func fromEnvironment(_ environment: [String: String], pid: Int32 = getpid()) throws -> InheritedSocket? {
        guard let fds = environment["LISTEN_FDS"].flatMap(Int.init), fds > 0 else { return nil }
        if let listenPID = environment["LISTEN_PID"].flatMap(Int32.init), listenPID != pid { return nil }
        guard fds == 1 else {
            throw Refusal(description: "systemd passed \(fds) sockets (LISTEN_FDS); plunkd.socket must have exactly one ListenStream=")
        }
        let fd = firstDescriptor
        var type: Int32 = 0
        var length = socklen_t(MemoryLayout<Int32>.size)
        guard getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &length) == 0, type == Int32(SOCK_STREAM.rawValue) else {
            throw Refusal(description: "the socket systemd passed (fd 3) is not a stream socket")
        }
        var address = sockaddr_un()
        var addressLength = socklen_t(MemoryLayout<sockaddr_un>.size)
        let named = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &addressLength) }
        }
        guard named == 0, address.sun_family == sa_family_t(AF_UNIX) else {
            throw Refusal(description: "the socket systemd passed (fd 3) is not a Unix socket; use ListenStream=/run/plunkd/plunkd.sock")
        }
        let path = withUnsafeBytes(of: address.sun_path) { raw in
            String(decoding: raw.prefix(while: { $0 != 0 }), as: UTF8.self)
        }
        _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
        return InheritedSocket(descriptor: fd, path: path)
    }
}
