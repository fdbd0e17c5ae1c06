import Foundation
import NIOCore

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// Makes a Unix socket path ready to bind without stealing it from a live daemon.
///
/// NIO can unlink an existing path before binding, but unconditionally; a second daemon
/// started by mistake would then silently take the socket from the first. A connect
/// probe tells a stale file (nobody answers) from a live one.
public enum SocketPathGuard {
    public struct Refusal: Error, CustomStringConvertible {
        public let description: String
    }

    /// The directory a user without `XDG_RUNTIME_DIR` gets: in `/tmp`, where anyone may
    /// have made it first, so it is trusted only as tmux trusts `/tmp/tmux-<uid>`.
    public static func privateDirectory(uid: uid_t) -> String { "/tmp/plunkd-\(uid)" }

    /// Creates the parent directory when missing, checks that no other user can replace
    /// what is in it, removes a stale socket file, and throws when a live daemon answers on
    /// `path` or `path` is something other than a socket.
    public static func prepare(_ path: String, uid: uid_t = getuid()) throws {
        guard path.utf8.count < 108 else {
            throw Refusal(description: "socket path \(path) is longer than the 107 bytes a Unix socket path may have")
        }
        let directory = (path as NSString).deletingLastPathComponent
        let isPrivate = directory == privateDirectory(uid: uid)
        if !directory.isEmpty && !FileManager.default.fileExists(atPath: directory) {
            do {
                try FileManager.default.createDirectory(
                    atPath: directory, withIntermediateDirectories: true,
                    attributes: [.posixPermissions: isPrivate ? 0o700 : 0o755])
            } catch {
                throw Refusal(description: "cannot create socket directory \(directory): \(error.localizedDescription)")
            }
        }
        try checkDirectory(of: path, uid: uid)
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

    /// Throws when anyone could replace the socket at `path` (and so receive events and
    /// answer "ok" for events never stored): its directory must not be writable by others
    /// unless sticky, and the private fallback directory must belong to `uid` and be closed
    /// to everyone else (mode 0700), as tmux requires of `/tmp/tmux-<uid>`. A directory
    /// chosen in `socket.path` may belong to another user (an app's own run directory, the
    /// daemon's user seen from a client). Run by the daemon before it binds and by every
    /// client command before it connects.
    public static func checkDirectory(of path: String, uid: uid_t = getuid()) throws {
        let directory = (path as NSString).deletingLastPathComponent
        guard !directory.isEmpty else { return }
        let isPrivate = directory == privateDirectory(uid: uid)
        var info = stat()
        // The private directory itself must not be a link someone else planted.
        guard (isPrivate ? lstat(directory, &info) : stat(directory, &info)) == 0 else { return }
        guard (info.st_mode & S_IFMT) == S_IFDIR else {
            throw Refusal(
                description: "socket directory \(directory) is not a directory\(isPrivate ? " (a symlink?)" : ""); remove it, or set socket.path elsewhere")
        }
        let mode = info.st_mode & 0o7777
        let octal = String(mode, radix: 8)
        if isPrivate {
            guard info.st_uid == uid else {
                throw Refusal(
                    description:
                        "socket directory \(directory) belongs to uid \(info.st_uid), not to you (uid \(uid)): another user made it first and could take over plunkd's socket. Remove it (as root: rm -r \(directory)), set XDG_RUNTIME_DIR, or set socket.path"
                )
            }
            guard mode & 0o077 == 0 else {
                throw Refusal(
                    description:
                        "socket directory \(directory) has mode \(octal): other users could take over plunkd's socket. chmod 700 \(directory), or remove it and let plunkd make it"
                )
            }
            return
        }
        guard mode & 0o002 == 0 || mode & 0o1000 != 0 else {
            throw Refusal(
                description:
                    "socket directory \(directory) has mode \(octal): anyone could replace plunkd's socket. chmod o-w \(directory), or set socket.path elsewhere"
            )
        }
    }

    /// True when something accepts connections on the socket at `path`.
    public static func isServed(_ path: String) -> Bool {
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        guard let address = try? SocketAddress(unixDomainSocketPath: path) else { return false }
        let result = address.withSockAddr { pointer, length in connect(fd, pointer, socklen_t(length)) }
        return result == 0
    }
}
