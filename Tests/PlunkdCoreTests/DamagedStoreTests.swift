import Foundation
import GRDB
import PlunkdTestSupport
import Testing

@testable import PlunkdCore

#if canImport(Glibc)
    import Glibc
#endif

/// A damaged store through the real binary: start-up fails loudly, naming the file, and
/// `plunkd status` says storage_error (exit 2), never a healthy-looking idle daemon. A WAL
/// torn only at its tail (what a crash leaves) is not damage.
@Suite("Damaged store", .serialized, .timeLimit(.minutes(2)), .watchdog)
struct DamagedStoreTests {
    /// A store left by `kill -9` after `count` events, one transaction each: its WAL is intact.
    func crashedStore(events count: Int) throws -> (directory: String, storage: String, ids: [String]) {
        let daemon = try DaemonProcess()
        try daemon.waitUntilServing()
        var ids: [String] = []
        for n in 0..<count {
            let client = try BlockingUnixSocket(path: daemon.socketPath)
            try client.write("{\"event\":\"e\(n)\",\"email\":\"d\(n)@example.com\"}\n")
            ids.append(try #require(DaemonProcessTests.ackedID(try client.readLine())))
        }
        daemon.signal(SIGKILL)
        daemon.waitForExit()
        return (daemon.directory, daemon.storagePath, ids)
    }

    /// Starts the daemon on a damaged store, sees it refuse, and returns its log.
    @discardableResult
    func startFails(_ directory: String, naming path: String) throws -> String {
        let daemon = try DaemonProcess(directory: directory)
        defer { daemon.cleanUp(removeDirectory: false) }
        let status = daemon.waitForExit(timeout: 60)
        #expect(status != nil && status != 0, "\(daemon.log)")
        #expect(daemon.log.contains(path))
        let report = try DaemonProcess.command(
            ["status", "--json", "--socket", daemon.socketPath],
            environment: ["PLUNKD_STORAGE_PATH": daemon.storagePath])
        #expect(report.status == 2)
        #expect(report.stdout.contains("\"state\" : \"storage_error\""), "\(report.stdout)")
        return daemon.log
    }

    func overwrite(_ path: String, at offset: UInt64, with bytes: Data) throws {
        let handle = try FileHandle(forUpdating: URL(fileURLWithPath: path))
        try handle.seek(toOffset: offset)
        handle.write(bytes)
        try handle.close()
    }

    /// The crashed store's WAL, checked intact, and its frame size.
    func intactWAL(_ storage: String, commits: Int) throws -> (path: String, frameSize: Int) {
        let wal = storage + "-wal"
        let bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: wal)))
        try #require(bytes.count > 32)
        let pageSize = Int(bytes[8]) << 24 | Int(bytes[9]) << 16 | Int(bytes[10]) << 8 | Int(bytes[11])
        let report = WALInspection.inspect(bytes)
        try #require(report.headerDamage == nil && report.commitsAfterDamage == 0 && report.validCommits >= commits, "\(report)")
        try #require(bytes.count >= 32 + commits * (24 + pageSize), "the crash left a WAL of \(bytes.count) bytes")
        return (wal, 24 + pageSize)
    }

    func flipByte(_ path: String, at offset: Int) throws {
        let handle = try FileHandle(forUpdating: URL(fileURLWithPath: path))
        try handle.seek(toOffset: UInt64(offset))
        let byte = try #require(try handle.read(upToCount: 1)?.first)
        try handle.seek(toOffset: UInt64(offset))
        handle.write(Data([byte ^ 0xFF]))
        try handle.close()
    }

    @Test("damage in the middle of the WAL, with acknowledged commits after it: start-up refuses, naming the log")
    func damagedWAL() throws {
        let (directory, storage, _) = try crashedStore(events: 12)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let (wal, frameSize) = try intactWAL(storage, commits: 12)
        // Scribble over the page of the 3rd frame.
        try overwrite(wal, at: UInt64(32 + 2 * frameSize + 24 + 200), with: Data(repeating: 0x5A, count: 64))
        let report = WALInspection.inspect([UInt8](try Data(contentsOf: URL(fileURLWithPath: wal))))
        #expect(report.endOfLog == 3)
        #expect(report.commitsAfterDamage > 1)
        try startFails(directory, naming: wal)
        // The files are kept for recovery.
        #expect(FileManager.default.fileExists(atPath: wal))
    }

    @Test("a damaged salt in the middle of the WAL is damage, not the log's end: start-up refuses")
    func damagedSalt() throws {
        let (directory, storage, _) = try crashedStore(events: 10)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let (wal, frameSize) = try intactWAL(storage, commits: 10)
        try flipByte(wal, at: 32 + 3 * frameSize + 9)
        try startFails(directory, naming: wal)
    }

    @Test("a damaged WAL header with frames after it (SQLite would take the log for empty): start-up refuses")
    func damagedHeader() throws {
        let (directory, storage, _) = try crashedStore(events: 6)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let (wal, _) = try intactWAL(storage, commits: 6)
        try flipByte(wal, at: 27)
        #expect(try startFails(directory, naming: wal).contains("damaged header"))
    }

    @Test("a WAL torn at its tail (what a crash leaves) is replayed up to the tear; the daemon starts")
    func tornTail() throws {
        let (directory, storage, ids) = try crashedStore(events: 8)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let wal = storage + "-wal"
        let size = (try FileManager.default.attributesOfItem(atPath: wal)[.size] as? NSNumber)?.intValue ?? 0
        truncate(wal, off_t(size - 2000))
        try startsWithout(last: ids, directory: directory, storage: storage)
    }

    @Test("a whole last frame with a bad checksum (a torn write) is the end of the log; the daemon starts")
    func tornLastFrame() throws {
        let (directory, storage, ids) = try crashedStore(events: 8)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let (wal, frameSize) = try intactWAL(storage, commits: 8)
        let size = (try FileManager.default.attributesOfItem(atPath: wal)[.size] as? NSNumber)?.intValue ?? 0
        try #require((size - 32) % frameSize == 0)
        try flipByte(wal, at: size - frameSize + 24 + 10)
        try startsWithout(last: ids, directory: directory, storage: storage)
    }

    @Test("the log as the checkpointer leaves it (rewound, an older generation's frames after it) is no damage")
    func checkpointedLog() throws {
        let store = try ScratchStore()
        defer { store.remove() }
        let storage = store.path
        let outbox = try Outbox(path: storage)
        for n in 0..<40 { try outbox.enqueue([AcceptedEvent(contact: "a\(n)@x.io", body: Data("{}".utf8))]) }
        try outbox.finishCheckpoint()
        for n in 0..<5 { try outbox.enqueue([AcceptedEvent(contact: "b\(n)@x.io", body: Data("{}".utf8))]) }
        // A copy of the files as a crash would leave them, the store still open.
        let copy = "\(store.directory)/copy.sqlite"
        try FileManager.default.copyItem(atPath: storage, toPath: copy)
        try FileManager.default.copyItem(atPath: storage + "-wal", toPath: copy + "-wal")
        let report = WALInspection.inspect([UInt8](try Data(contentsOf: URL(fileURLWithPath: copy + "-wal"))))
        #expect(report.validCommits == 5, "\(report)")
        #expect(report.endOfLog != nil && report.commitsAfterDamage == 0, "the older frames were not left after the rewind: \(report)")
        #expect(try Outbox(path: copy).storedCount == 45)
    }

    /// The daemon starts on the store and holds every event but the torn last one.
    func startsWithout(last ids: [String], directory: String, storage: String) throws {
        let daemon = try DaemonProcess(directory: directory)
        defer { daemon.cleanUp(removeDirectory: false) }
        try daemon.waitUntilServing()
        let stored = try DatabaseQueue(path: storage).read { try String.fetchAll($0, sql: "SELECT id FROM event ORDER BY seq") }
        #expect(stored == Array(ids.dropLast()))
    }

    @Test("a truncated database file: start-up refuses, naming it; status says storage_error")
    func truncatedDatabase() throws {
        let store = try ScratchStore()
        defer { store.remove() }
        let storage = store.path
        do {
            let outbox = try Outbox(path: storage)
            try outbox.enqueue((0..<3000).map { AcceptedEvent(contact: "c\($0)@x.io", body: Data(repeating: 0x61, count: 200)) })
        }
        let size = (try FileManager.default.attributesOfItem(atPath: storage)[.size] as? NSNumber)?.intValue ?? 0
        #expect(!FileManager.default.fileExists(atPath: storage + "-wal") || size > 100_000)
        truncate(storage, off_t(size / 2))
        try startFails(store.directory, naming: storage)
    }

    @Test("garbage over the database header: start-up refuses, naming it; status says storage_error")
    func garbageHeader() throws {
        let store = try ScratchStore()
        defer { store.remove() }
        let storage = store.path
        do {
            let outbox = try Outbox(path: storage)
            try outbox.enqueue((0..<100).map { AcceptedEvent(contact: "c\($0)@x.io", body: Data("{}".utf8)) })
        }
        try overwrite(storage, at: 0, with: Data(repeating: 0xFF, count: 100))
        try startFails(store.directory, naming: storage)
    }

    @Test("a full store: new events refused retryably, everything acknowledged delivered, ingest resumes without a restart")
    func fullStoreDrains() async throws {
        let fake = try await FakePlunk { _ in FakePlunk.htmlPage(503) }
        var environment = DaemonDeliveryTests().environment(fake)
        environment["PLUNKD_STORAGE_MAX_BYTES"] = "96k"
        let daemon = try DaemonProcess(environment: environment)
        defer { daemon.cleanUp() }
        try daemon.waitUntilServing()
        let client = try BlockingUnixSocket(path: daemon.socketPath)
        let padding = String(repeating: "p", count: 900)
        var acked: [String] = []
        var refusal: String?
        for n in 0..<2000 {
            try client.write("{\"event\":\"f\(n)\",\"email\":\"f\(n % 5)@example.com\",\"data\":{\"p\":\"\(padding)\"}}\n")
            let line = try #require(try client.readLine())
            if let id = DaemonProcessTests.ackedID(line) {
                acked.append(id)
            } else {
                refusal = line
                break
            }
        }
        #expect(refusal?.contains("storage full") == true, "\(refusal ?? "no refusal")")
        #expect(refusal?.contains("\"retryable\":true") == true)
        #expect(!acked.isEmpty)
        // Plunk recovers: every acknowledged event is delivered, which frees the room.
        fake.respond { _ in FakePlunk.legacySuccess() }
        #expect(
            await fake.waitFor(timeout: 60) { requests in
                Set(requests.compactMap(\.idempotencyKey)).isSuperset(of: acked)
            })
        #expect(try await DaemonDeliveryTests().waitForStoredCount(daemon.storagePath, 0))
        // The same daemon and the same connection accept again.
        try client.write("{\"event\":\"after\",\"email\":\"a@example.com\",\"data\":{\"p\":\"\(padding)\"}}\n")
        #expect(DaemonProcessTests.ackedID(try client.readLine()) != nil)
        await fake.stop()
    }
}
