import Testing

@testable import PlunkdCore

/// Each rule of the WAL check at its boundary, on logs built frame by frame. A log is
/// refused when SQLite would discard acknowledged commits: a damaged header with frames
/// after it, or two or more commits at or after the first bad frame.
@Suite("WAL inspection", .timeLimit(.minutes(2)), .watchdog)
struct WALInspectionTests {
    func refuses(_ wal: SyntheticWAL) -> Bool {
        WALInspection.inspect(wal.bytes).losesAcknowledgedCommits
    }

    @Test("an intact log: every commit counted, nothing refused")
    func intact() {
        var wal = SyntheticWAL()
        wal.appendCommits(5)
        #expect(WALInspection.inspect(wal.bytes) == .init(validCommits: 5))
    }

    @Test("big-endian checksums (magic 0x377f0683) are read as such")
    func bigEndianLog() {
        var wal = SyntheticWAL(bigEndianChecksums: true)
        wal.appendCommits(4)
        #expect(WALInspection.inspect(wal.bytes) == .init(validCommits: 4))
        wal.damage(at: wal.offset(ofFrame: 2) + 24 + 7)
        #expect(WALInspection.inspect(wal.bytes) == .init(validCommits: 1, endOfLog: 2, commitsAfterDamage: 3))
    }

    @Test("a damaged page in the middle: the commits after it are counted and the log refused")
    func damagedMiddle() {
        var wal = SyntheticWAL()
        wal.appendCommits(5)
        wal.damage(at: wal.offset(ofFrame: 2) + 24 + 100)
        #expect(WALInspection.inspect(wal.bytes) == .init(validCommits: 1, endOfLog: 2, commitsAfterDamage: 4))
        #expect(refuses(wal))
    }

    @Test("two commits at or after the bad frame are refused; one (a torn last transaction) passes")
    func commitBoundary() {
        var lastButOne = SyntheticWAL()
        lastButOne.appendCommits(5)
        lastButOne.damage(at: lastButOne.offset(ofFrame: 4) + 24)
        #expect(WALInspection.inspect(lastButOne.bytes).commitsAfterDamage == 2)
        #expect(refuses(lastButOne))

        var last = SyntheticWAL()
        last.appendCommits(5)
        last.damage(at: last.offset(ofFrame: 5) + 24)
        #expect(WALInspection.inspect(last.bytes) == .init(validCommits: 4, endOfLog: 5, commitsAfterDamage: 1))
        #expect(!refuses(last))
    }

    @Test("a torn multi-frame last transaction passes: its commit frame is the only one after the tear")
    func tornLastTransaction() {
        var wal = SyntheticWAL()
        wal.appendCommits(3)
        wal.append(page: 7, commit: false)
        wal.append(page: 8, commit: false)
        wal.append(page: 9, commit: true)
        wal.damage(at: wal.offset(ofFrame: 4) + 24 + 3)
        #expect(WALInspection.inspect(wal.bytes) == .init(validCommits: 3, endOfLog: 4, commitsAfterDamage: 1))
        #expect(!refuses(wal))
    }

    @Test("a damaged salt in the middle is damage, not the end of the log: the commits after it are counted")
    func damagedSalt() {
        var wal = SyntheticWAL()
        wal.appendCommits(6)
        wal.damage(at: wal.offset(ofFrame: 3) + 8)
        #expect(WALInspection.inspect(wal.bytes) == .init(validCommits: 2, endOfLog: 3, commitsAfterDamage: 3))
        #expect(refuses(wal))
    }

    @Test("an older generation's frames after the current ones (what a checkpoint and a rewind leave) pass")
    func olderGeneration() {
        var old = SyntheticWAL(salts: (7, 99))
        old.appendCommits(6)
        var current = SyntheticWAL(salts: (8, 12345))
        current.appendCommits(2)
        let bytes = current.bytes + old.bytes[old.offset(ofFrame: 3)...]
        #expect(WALInspection.inspect(Array(bytes)) == .init(validCommits: 2, endOfLog: 3, commitsAfterDamage: 0))
    }

    @Test("a damaged header with frames after it is refused, whichever field is hit")
    func damagedHeader() {
        for (offset, why) in [(0, "bad magic number"), (10, "impossible page size"), (17, "bad header checksum"), (26, "bad header checksum")] {
            var wal = SyntheticWAL()
            wal.appendCommits(2)
            wal.damage(at: offset)
            let report = WALInspection.inspect(wal.bytes)
            #expect(report.headerDamage?.hasPrefix(why) == true, "offset \(offset): \(report)")
        }
    }

    @Test("a damaged header with no whole frame after it is no loss: SQLite starts a new log")
    func damagedHeaderAlone() {
        var wal = SyntheticWAL()
        wal.damage(at: 26)
        #expect(WALInspection.inspect(wal.bytes + [UInt8](repeating: 0, count: WALInspection.smallestFrame - 1)) == .init())
    }
}
