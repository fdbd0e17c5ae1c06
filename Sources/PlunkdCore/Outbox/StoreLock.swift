import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// One daemon per store: an exclusive `flock(2)` on `<store>.lock`, held for as long as
/// the process lives. The kernel drops it on any death, `kill -9` included, so nothing
/// stale is left behind. Without it, two daemons on one store (started with different
/// sockets) would both deliver every event. Readers (`plunkd status` reading the store
/// while the daemon is down) take no lock.
public final class StoreLock: Sendable {
    private let descriptor: Int32
    public let path: String

    /// Takes the lock for the store at `storePath`, or throws at once naming the holder.
    public init(storePath: String) throws(OutboxError) {
        path = storePath + ".lock"
        do {
            try FileManager.default.createDirectory(
                atPath: (storePath as NSString).deletingLastPathComponent, withIntermediateDirectories: true,
                attributes: [.posixPermissions: 0o750])
        } catch {
            throw OutboxError(.failed, path: storePath, detail: "cannot create its directory: \(error.localizedDescription)")
        }
        let fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
        guard fd >= 0 else {
            throw OutboxError(.failed, path: storePath, detail: "cannot open its lock file \(path): \(String(cString: strerror(errno)))")
        }
        guard flock(fd, LOCK_EX | LOCK_NB) == 0 else {
            let reason = errno
            var buffer = [UInt8](repeating: 0, count: 32)
            let count = pread(fd, &buffer, buffer.count, 0)
            close(fd)
            let holder = count > 0 ? String(decoding: buffer.prefix(count), as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines) : ""
            if reason == EWOULDBLOCK {
                throw OutboxError(
                    .failed, path: storePath,
                    detail:
                        "another plunkd\(holder.isEmpty ? "" : " (pid \(holder))") holds this store; one store serves one daemon (stop it, or set storage.path elsewhere)"
                )
            }
            throw OutboxError(.failed, path: storePath, detail: "cannot lock \(path): \(String(cString: strerror(reason)))")
        }
        let pid = "\(getpid())\n"
        _ = ftruncate(fd, 0)
        _ = pid.withCString { pwrite(fd, $0, strlen($0), 0) }
        descriptor = fd
    }

    deinit {
        close(descriptor)
    }
}
