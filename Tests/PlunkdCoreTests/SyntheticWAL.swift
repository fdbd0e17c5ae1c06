@testable import PlunkdCore

/// A write-ahead log built frame by frame, with SQLite's checksums, so that each rule of
/// `WALInspection` can be tried at its exact boundary. `DamagedStoreTests` holds the same
/// rules to logs SQLite itself wrote.
struct SyntheticWAL {
    let pageSize: Int
    let bigEndianChecksums: Bool
    let salts: (UInt32, UInt32)
    private(set) var bytes: [UInt8] = []
    private var sum: (UInt32, UInt32) = (0, 0)

    init(pageSize: Int = 512, bigEndianChecksums: Bool = false, salts: (UInt32, UInt32) = (0x0102_0304, 0xA0B0_C0D0)) {
        self.pageSize = pageSize
        self.bigEndianChecksums = bigEndianChecksums
        self.salts = salts
        put(bigEndianChecksums ? 0x377f_0683 : 0x377f_0682)
        put(3_007_000)
        put(UInt32(pageSize))
        put(0)
        put(salts.0)
        put(salts.1)
        sum = WALInspection.checksum(bytes, 0..<24, bigEndian: bigEndianChecksums, seed: (0, 0))
        put(sum.0)
        put(sum.1)
    }

    var frameSize: Int { 24 + pageSize }

    /// Offset of frame `number` (from 1), as SQLite counts them.
    func offset(ofFrame number: Int) -> Int { 32 + (number - 1) * frameSize }

    /// One frame; `commit` makes it the last frame of a transaction.
    mutating func append(page: UInt32, commit: Bool, fill: UInt8 = 0x41) {
        let start = bytes.count
        put(page)
        put(commit ? page : 0)
        put(salts.0)
        put(salts.1)
        put(0)
        put(0)
        bytes += [UInt8](repeating: fill, count: pageSize)
        let head = WALInspection.checksum(bytes, start..<(start + 8), bigEndian: bigEndianChecksums, seed: sum)
        sum = WALInspection.checksum(bytes, (start + 24)..<bytes.count, bigEndian: bigEndianChecksums, seed: head)
        write(sum.0, at: start + 16)
        write(sum.1, at: start + 20)
    }

    /// `count` transactions of one frame each.
    mutating func appendCommits(_ count: Int) {
        for n in 0..<count { append(page: UInt32(n + 1), commit: true, fill: UInt8(truncatingIfNeeded: n)) }
    }

    mutating func damage(at offset: Int) { bytes[offset] ^= 0xFF }

    private mutating func put(_ value: UInt32) {
        bytes += [UInt8(value >> 24), UInt8(truncatingIfNeeded: value >> 16), UInt8(truncatingIfNeeded: value >> 8), UInt8(truncatingIfNeeded: value)]
    }

    private mutating func write(_ value: UInt32, at offset: Int) {
        bytes[offset] = UInt8(value >> 24)
        bytes[offset + 1] = UInt8(truncatingIfNeeded: value >> 16)
        bytes[offset + 2] = UInt8(truncatingIfNeeded: value >> 8)
        bytes[offset + 3] = UInt8(truncatingIfNeeded: value)
    }
}
