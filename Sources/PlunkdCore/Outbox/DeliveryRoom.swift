import Foundation
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// Disk space kept back from ingest so that delivery can always commit.
///
/// Delivery is what makes room in a full store, and it needs a little room to do it: its
/// transaction's log frames, and the checkpoint that copies earlier commits into the
/// database file (which grows by the pages ingest appended). Were ingest to take the
/// filesystem's last byte, both would fail with ENOSPC and nothing could ever be delivered
/// or freed: a full disk would hold the backlog until an operator stepped in. So new
/// events are refused, retryably, once the filesystem has less than `bytes` free, counting
/// the store's own free pages (which new events reuse without growing the file).
///
/// `statvfs` is cheap on a local disk but not on every filesystem (FUSE asks a process),
/// so with plenty of space it is asked at most every 100 ms; near the line, every time.
final class DeliveryRoom: Sendable {
    let bytes: Int64
    private let directory: String
    private let logPath: String
    /// The last look (nil: look again), with the free bytes and the bytes needed it found.
    private let lastLook = Mutex<(at: ContinuousClock.Instant?, free: Int64, needed: Int64)>((at: nil, free: 0, needed: 0))
    private let lastTruncation = Mutex<ContinuousClock.Instant?>(nil)

    init(bytes: Int64, storePath: String) {
        self.bytes = bytes
        directory = (storePath as NSString).deletingLastPathComponent
        logPath = storePath + "-wal"
    }

    /// Nil when there is room for another commit; otherwise why not, for the operator.
    ///
    /// What must stay free is `bytes` plus the log's size: the checkpoint still to come
    /// grows the database file by up to the pages the log holds, which at a high rate is
    /// more than a small reserve (the log's size over-counts once it has been rewound,
    /// which errs on the safe side).
    /// - Parameter freePages: the store's free pages in bytes, asked only when the
    ///   filesystem alone is short.
    func shortage(freePages: () -> Int64) -> String? {
        guard bytes > 0 else { return nil }
        let now = ContinuousClock.now
        var look = lastLook.withLock { $0 }
        if look.at.map({ now - $0 > .milliseconds(100) }) ?? true || look.free < 4 * look.needed {
            var info = statvfs()
            guard statvfs(directory, &info) == 0 else { return nil }
            var log = stat()
            let logBytes = stat(logPath, &log) == 0 ? Int64(log.st_size) : 0
            look = (now, Int64(info.f_bavail) * Int64(info.f_frsize), bytes + logBytes)
            lastLook.withLock { $0 = look }
        }
        guard look.free < look.needed else { return nil }
        let reusable = freePages()
        guard look.free + reusable < look.needed else { return nil }
        return
            "its filesystem has \(look.free) bytes free and the store \(reusable) in free pages, under the \(look.needed) kept so that delivery can always record its progress and make room (storage.reserve_bytes, \(bytes), and the log's size)"
    }

    /// Whether to try emptying the log now: at most once a second, while short of room.
    func mayTruncateLog() -> Bool {
        let now = ContinuousClock.now
        return lastTruncation.withLock { last in
            if let last, now - last < .seconds(1) { return false }
            last = now
            // The next look must see what the truncation gave back.
            lastLook.withLock { $0.at = nil }
            return true
        }
    }
}
