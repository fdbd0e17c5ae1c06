import Foundation
import GRDB
import Logging
import PlunkdTestSupport
import Testing

@testable import PlunkdCore

@Suite("Outbox", .timeLimit(.minutes(2)), .watchdog)
struct OutboxTests {
    func event(_ n: Int) -> AcceptedEvent {
        AcceptedEvent(contact: "u\(n)@example.com", body: Data("{\"event\":\"e\",\"email\":\"u\(n)@example.com\"}".utf8))
    }

    @Test("the writer runs with synchronous = FULL, read back from SQLite")
    func synchronousFull() throws {
        let store = try ScratchStore()
        defer { store.remove() }
        let outbox = try store.open()
        #expect(try outbox.synchronousMode() == 2)
    }

    @Test("the state check is spelled without a list, still refuses an unknown state, and the store stays sound")
    func stateCheck() throws {
        let store = try ScratchStore()
        defer { store.remove() }
        let path = store.path
        let outbox = try Outbox(path: path)
        try outbox.enqueue([event(1)])
        let other = try DatabaseQueue(path: path)
        let sql = try other.read { try String.fetchOne($0, sql: "SELECT sql FROM sqlite_master WHERE name = 'event'") } ?? ""
        #expect(!sql.contains("state IN"))
        #expect(sql.contains("state = 'new' OR state = 'pending' OR state = 'waiting' OR state = 'in_flight' OR state = 'parked'"))
        #expect(throws: DatabaseError.self) {
            try other.write { try $0.execute(sql: "UPDATE event SET state = 'lost'") }
        }
        try other.write { try $0.execute(sql: "UPDATE event SET state = 'pending'") }
        #expect(try other.read { try String.fetchAll($0, sql: "PRAGMA integrity_check") } == ["ok"])
        // A second open finds every migration applied.
        try other.close()
        _ = try Outbox(path: path)
    }

    @Test("a state check that reads otherwise is left as it is, and the store opens")
    func stateCheckLeftAlone() throws {
        let store = try ScratchStore()
        defer { store.remove() }
        let path = store.path
        let queue = try DatabaseQueue(path: path)
        try OutboxSchema.migrator.migrate(queue, upTo: "v4: new events enter no index")
        let unusual = "CHECK (state IN ('new','pending','waiting','in_flight','parked'))"
        try queue.writeWithoutTransaction { db in
            let version = try Int.fetchOne(db, sql: "PRAGMA schema_version") ?? 0
            try db.execute(sql: "PRAGMA writable_schema = ON")
            try db.execute(
                sql: "UPDATE sqlite_master SET sql = replace(sql, ?, ?) WHERE name = 'event'",
                arguments: ["CHECK (state IN ('new', 'pending', 'waiting', 'in_flight', 'parked'))", unusual])
            try db.execute(sql: "PRAGMA schema_version = \(version + 1)")
            try db.execute(sql: "PRAGMA writable_schema = OFF")
        }
        try queue.close()
        let outbox = try Outbox(path: path)
        try outbox.enqueue([event(1)])
        #expect(outbox.storedCount == 1)
        let other = try DatabaseQueue(path: path)
        let sql = try other.read { try String.fetchOne($0, sql: "SELECT sql FROM sqlite_master WHERE name = 'event'") } ?? ""
        #expect(sql.contains(unusual))
        #expect(try other.read { try String.fetchAll($0, sql: "PRAGMA integrity_check") } == ["ok"])
    }

    @Test("stored events are visible to a separate connection opened afterwards")
    func durableAcrossConnections() throws {
        let store = try ScratchStore()
        defer { store.remove() }
        let path = store.path
        let outbox = try Outbox(path: path)
        let events = (0..<10).map(event)
        try outbox.enqueue(events)
        #expect(outbox.storedCount == 10)
        let other = try DatabaseQueue(path: path)
        let ids = try other.read { try String.fetchAll($0, sql: "SELECT id FROM event ORDER BY seq") }
        #expect(ids == events.map { $0.id.uuidString.lowercased() })
        let states = try other.read { try String.fetchAll($0, sql: "SELECT DISTINCT state FROM event") }
        #expect(states == ["new"])
        // A stored event enters no index: ingest writes the table's own B-tree and nothing else.
        for index in ["event_due", "event_line", "event_parked"] {
            let entries = try other.read { db in
                try Int.fetchOne(
                    db,
                    sql: "SELECT count(*) FROM event INDEXED BY \(index) WHERE " + [
                        "event_due": "state = 'pending'", "event_line": OutboxSchema.lineCondition, "event_parked": "state = 'parked'",
                    ][index]!)
            }
            #expect(entries == 0, "\(index)")
        }
    }

    @Test("reopening migrates nothing twice and counts what is stored")
    func reopen() throws {
        let store = try ScratchStore()
        defer { store.remove() }
        let path = store.path
        try Outbox(path: path).enqueue((0..<3).map(event))
        let reopened = try Outbox(path: path)
        #expect(reopened.storedCount == 3)
    }

    @Test("a file that is not a database stops start-up with a message naming it")
    func garbageFile() throws {
        let store = try ScratchStore()
        defer { store.remove() }
        let path = store.path
        try Data(repeating: 0x41, count: 8192).write(to: URL(fileURLWithPath: path))
        do {
            _ = try Outbox(path: path)
            Issue.record("opened a garbage file")
        } catch {
            #expect(error.kind == .unusable)
            #expect(error.description.contains(path))
        }
    }

    @Test("a store with damaged pages fails its integrity check at start-up")
    func damagedPages() throws {
        let store = try ScratchStore()
        defer { store.remove() }
        let path = store.path
        do {
            let outbox = try Outbox(path: path)
            try outbox.enqueue((0..<2000).map(event))
        }
        // Fold the WAL into the main file, then scribble over pages past the header.
        let queue = try DatabaseQueue(path: path)
        try queue.writeWithoutTransaction { try $0.execute(sql: "PRAGMA wal_checkpoint(TRUNCATE)") }
        try queue.close()
        let handle = try FileHandle(forUpdating: URL(fileURLWithPath: path))
        try handle.seek(toOffset: 4096 * 3)
        handle.write(Data(repeating: 0xA5, count: 4096 * 4))
        try handle.close()
        let error = try #require(throws: OutboxError.self) { try Outbox(path: path) }
        // Unusable (the store is damaged), not a passing failure to retry, and the file is named.
        #expect(error.kind == .unusable, "\(error)")
        #expect("\(error)".contains(path), "\(error)")
    }

    @Test("a full store refuses with `full`, keeps what it had, and accepts again when room returns")
    func fullStore() throws {
        let store = try ScratchStore()
        defer { store.remove() }
        let path = store.path
        let outbox = try Outbox(path: path, maxBytes: 64 * 1024)
        var stored = 0
        var refusal: OutboxError?
        for n in 0..<100 {
            do {
                try outbox.enqueue((0..<50).map { event(n * 50 + $0) })
                stored += 50
            } catch {
                refusal = error
                break
            }
        }
        #expect(refusal?.kind == .full)
        #expect(stored > 0)
        #expect(outbox.storedCount == stored)
        // Room returns (as delivery would make it): the same open store accepts again.
        let other = try DatabaseQueue(path: path)
        let removed = try other.write { db in
            try db.execute(sql: "DELETE FROM event WHERE seq <= 100")
            return db.changesCount
        }
        try outbox.enqueue((0..<20).map(event))
        let remaining = try other.read { try Int.fetchOne($0, sql: "SELECT COUNT(*) FROM event") }
        #expect(remaining == stored - removed + 20)
    }
}

@Suite("WAL checkpoints", .timeLimit(.minutes(2)), .watchdog)
struct WALCheckpointTests {
    func fileSize(_ path: String) -> Int {
        ((try? FileManager.default.attributesOfItem(atPath: path)[.size]) as? NSNumber)?.intValue ?? 0
    }

    @Test("commits never checkpoint below the backstop; the checkpoint thread copies the log back")
    func checkpointsOffTheCommitPath() async throws {
        let store = try ScratchStore()
        defer { store.remove() }
        let path = store.path
        let outbox = try Outbox(path: path)
        let before = fileSize(path)
        // 1,500 one-event commits: at least 1,500 WAL frames, past SQLite's default of 1,000.
        for n in 0..<1500 {
            try outbox.enqueue([AcceptedEvent(contact: "u\(n)@x.io", body: Data(repeating: UInt8(ascii: "x"), count: 200))])
        }
        #expect(fileSize(path + "-wal") > 1000 * 4096)
        #expect(fileSize(path) == before, "a commit checkpointed by itself")
        let checkpointer = WALCheckpointer(outbox: outbox, interval: .milliseconds(10), logger: Logger(label: "test"))
        checkpointer.start()
        defer { checkpointer.stop() }
        _ = await Poll.until(timeout: 20) { fileSize(path) != before }
        #expect(fileSize(path) > before + 100 * 4096, "the checkpoint thread did not copy the log back")
        #expect(outbox.writesSinceCheckpoint.load(ordering: .relaxed) == 0)
    }

    @Test("with the checkpoint thread running, the log starts over instead of growing with every commit")
    func logStartsOver() throws {
        let store = try ScratchStore()
        defer { store.remove() }
        let path = store.path
        let outbox = try Outbox(path: path)
        let checkpointer = WALCheckpointer(outbox: outbox, interval: .milliseconds(10), logger: Logger(label: "test"))
        checkpointer.start()
        defer { checkpointer.stop() }
        // 3,000 one-event commits write at least 3,000 frames; a log that never starts over
        // holds them all (12 MB).
        for n in 0..<3000 {
            try outbox.enqueue([AcceptedEvent(contact: "u\(n)@x.io", body: Data(repeating: UInt8(ascii: "x"), count: 200))])
        }
        #expect(fileSize(path + "-wal") < 1500 * 4096, "the log grew with every commit: \(fileSize(path + "-wal")) bytes")
        #expect(outbox.storedCount == 3000)
    }
}
