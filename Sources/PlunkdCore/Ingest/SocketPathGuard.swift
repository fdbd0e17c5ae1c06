#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Foundation

/// Makes a Unix socket path ready to bind without stealing it from a live daemon.
///
/// NIO can unlink an existing path before binding, but unconditionally; a second daemon
/// started by mistake would then silently take the socket from the first. A connect
/// probe tells a stale file (nobody answers) from a live one.
public enum SocketPathGuard {
    public struct Refusal: Error, CustomStringConvertible {
        public let description: String
    }

    /// Creates the parent directory when missing, removes a stale socket file, and throws
    /// when a live daemon answers on `path` or `path` is something other than a socket.
    public static func prepare(_ path: String) throws {
        guard path.utf8.count < 108 else {
            throw Refusal(description: "socket path \(path) is longer than the 107 bytes a Unix socket path may have")
        }
        let directory = (path as NSString).deletingLastPathComponent
        if !directory.isEmpty && !FileManager.default.fileExists(atPath: directory) {
            do {
                try FileManager.default.createDirectory(
                    atPath: directory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o755])
            } catch {
                throw Refusal(description: "cannot create socket directory \(directory): \(error.localizedDescription)")
            }
        }
        var info = stat()
        guard lstat(path, &info) == 0 else { return }
        guard (info.st_mode & S_IFMT) == S_IFSOCK else {
            throw Refusal(description: "\(path) exists and is not a socket; refusing to replace it")
        }
        if isServed(path) {
            throw Refusal(description: "another plunkd is already serving \(path); stop it first or choose another socket.path")
        }
        guard unlink(path) == 0 || errno == ENOENT else {
            throw Refusal(description: "cannot remove stale socket \(path): \(String(cString: strerror(errno)))")
        }
    }

    /// True when something accepts connections on the socket at `path`.
    public static func isServed(_ path: String) -> Bool {
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        guard bytes.count < MemoryLayout.size(ofValue: address.sun_path) else { return false }
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            raw.copyBytes(from: bytes)
        }
        let result = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
            }
        }
        return result == 0
    }
}
