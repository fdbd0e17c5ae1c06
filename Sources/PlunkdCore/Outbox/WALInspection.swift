import Foundation

/// Checks the store's write-ahead log before SQLite opens it.
///
/// SQLite replays the WAL up to the first frame whose checksum fails and silently ignores
/// the rest. After a crash that is right: only the last, never-acknowledged transaction
/// can be torn. But damage in the middle of the log (a torn or lost write, bit rot) would
/// make SQLite drop every later transaction, acknowledged ones included, without a word.
/// A damaged header makes SQLite take the whole log for empty. This walks the frames
/// (format: sqlite.org/fileformat2.html#walformat) and refuses a log whose header is
/// damaged while frames follow it, or in which more than one commit of the current
/// generation lies at or after the first bad frame. One such commit passes: damage to
/// the last transaction cannot be told from the tear a crash leaves, and SQLite syncs the
/// header before any frame of a generation, so a crash never leaves a torn header. No
/// library exposes this check; it reads the file, never writes it.
enum WALInspection {
    struct Damage: Error, CustomStringConvertible {
        let description: String
    }

    /// What a walk of the log found.
    struct Report: Equatable {
        var validCommits = 0
        /// The first frame SQLite will not replay: torn, damaged, or an older generation's.
        var endOfLog: Int?
        /// Commit frames of the current generation from `endOfLog` on, that frame included:
        /// transactions SQLite will discard. After a crash at most one (the torn last one).
        var commitsAfterDamage = 0
        /// Why the header cannot be read, when frames follow it: SQLite then takes the whole
        /// log for empty.
        var headerDamage: String?

        /// Whether SQLite would discard a transaction that was acknowledged.
        var losesAcknowledgedCommits: Bool { headerDamage != nil || commitsAfterDamage > 1 }
    }

    /// The smallest frame: a 24-byte frame header and a 512-byte page.
    static let smallestFrame = 24 + 512

    /// Checks the WAL of the store at `path`; damage makes the store unusable.
    static func checkStore(at path: String) throws(OutboxError) {
        do {
            try check(walPath: path + "-wal")
        } catch {
            throw OutboxError(.unusable, path: path, detail: error.description)
        }
    }

    /// Throws when committed transactions would be discarded.
    static func check(walPath: String) throws(Damage) {
        guard let data = FileManager.default.contents(atPath: walPath), data.count >= 32 else { return }
        let report = inspect([UInt8](data))
        guard report.losesAcknowledgedCommits else { return }
        if let header = report.headerDamage {
            throw Damage(
                description:
                    "the write-ahead log \(walPath) has a damaged header (\(header)) with \(data.count - 32) bytes of frames after it, which SQLite would silently discard; keep a copy of the file before moving it aside"
            )
        }
        throw Damage(
            description:
                "the write-ahead log \(walPath) is damaged at frame \(report.endOfLog ?? 0): \(report.commitsAfterDamage) committed transactions lie at or after it, which SQLite would silently discard"
        )
    }

    static func inspect(_ bytes: [UInt8]) -> Report {
        var report = Report()
        guard bytes.count >= 32 else { return report }
        let holdsFrames = bytes.count >= 32 + smallestFrame
        let magic = bigEndian(bytes, 0)
        guard magic == 0x377f_0682 || magic == 0x377f_0683 else {
            if holdsFrames { report.headerDamage = "bad magic number" }
            return report
        }
        let bigEndianChecksums = magic == 0x377f_0683
        let pageSize = Int(bigEndian(bytes, 8))
        guard pageSize >= 512, pageSize <= 65536, pageSize & (pageSize - 1) == 0 else {
            if holdsFrames { report.headerDamage = "impossible page size \(pageSize)" }
            return report
        }
        let salt1 = bigEndian(bytes, 16)
        let salt2 = bigEndian(bytes, 20)
        var sum = checksum(bytes, 0..<24, bigEndian: bigEndianChecksums, seed: (0, 0))
        guard sum.0 == bigEndian(bytes, 24), sum.1 == bigEndian(bytes, 28) else {
            if holdsFrames { report.headerDamage = "bad header checksum" }
            return report
        }
        let frameSize = 24 + pageSize
        var offset = 32
        var frame = 0
        while offset + frameSize <= bytes.count {
            frame += 1
            // A new generation overwrites the log from its first frame, so the current
            // generation's frames are a prefix: one of them after a foreign frame means that
            // foreign frame (its salt) is damaged.
            let isCurrent = bigEndian(bytes, offset + 8) == salt1 && bigEndian(bytes, offset + 12) == salt2
            let isCommit = bigEndian(bytes, offset + 4) != 0
            if report.endOfLog == nil {
                let next = checksum(bytes, offset..<(offset + 8), bigEndian: bigEndianChecksums, seed: sum)
                let full = checksum(bytes, (offset + 24)..<(offset + frameSize), bigEndian: bigEndianChecksums, seed: next)
                if isCurrent && full.0 == bigEndian(bytes, offset + 16) && full.1 == bigEndian(bytes, offset + 20) {
                    sum = full
                    if isCommit { report.validCommits += 1 }
                } else {
                    report.endOfLog = frame
                    if isCurrent && isCommit { report.commitsAfterDamage += 1 }
                }
            } else if isCurrent && isCommit {
                report.commitsAfterDamage += 1
            }
            offset += frameSize
        }
        return report
    }

    private static func bigEndian(_ bytes: [UInt8], _ at: Int) -> UInt32 {
        UInt32(bytes[at]) << 24 | UInt32(bytes[at + 1]) << 16 | UInt32(bytes[at + 2]) << 8 | UInt32(bytes[at + 3])
    }

    static func checksum(
        _ bytes: [UInt8], _ range: Range<Int>, bigEndian big: Bool, seed: (UInt32, UInt32)
    ) -> (UInt32, UInt32) {
        var (s0, s1) = seed
        var i = range.lowerBound
        while i + 8 <= range.upperBound {
            let x0 = big ? bigEndian(bytes, i) : littleEndian(bytes, i)
            let x1 = big ? bigEndian(bytes, i + 4) : littleEndian(bytes, i + 4)
            s0 = s0 &+ x0 &+ s1
            s1 = s1 &+ x1 &+ s0
            i += 8
        }
        return (s0, s1)
    }

    private static func littleEndian(_ bytes: [UInt8], _ at: Int) -> UInt32 {
        UInt32(bytes[at]) | UInt32(bytes[at + 1]) << 8 | UInt32(bytes[at + 2]) << 16 | UInt32(bytes[at + 3]) << 24
    }
}
