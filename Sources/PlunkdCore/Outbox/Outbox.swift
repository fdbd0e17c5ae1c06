import Foundation
import GRDB
import Synchronization

/// The durable queue between ingest and delivery: one SQLite file in WAL mode.
///
/// Every write here is durable when it returns: the writer connection runs with
/// `synchronous = FULL`, so a commit has reached the disk before anyone is told it happened.
public final class Outbox: Sendable {
    public let path: String
    let pool: DatabasePool
    /// Events in line (any state but parked), kept in memory so that the
    /// `max_pending` check at the door costs nothing.
    let storedEvents: Atomic<Int>
    /// The `seq` the next stored event gets. Assigned here rather than by SQLite, which
    /// reuses the numbers of deleted rows at the end of the table: a reused number at or
    /// below `delivery_scan.scanned_through` would hide a new event from delivery.
    /// (AUTOINCREMENT would also prevent that, at the price of a second page in every
    /// commit.)
    let nextSeq: Mutex<Int64>
    /// Claimed events by contact (`in_flight` rows), so that a claim never takes a second
    /// event of a contact whose earlier one is out. Kept in memory because claimed rows are
    /// in no index; only the claims and moves of this process change them, and at start-up
    /// `releaseInFlight` puts the rows of an earlier process back in line.
    let claimedContacts: Mutex<[String: Int]>
    /// Commits since the last checkpoint looked; `WALCheckpointer` takes it to zero.
    let writesSinceCheckpoint = Atomic(0)
    /// WAL pages after which a commit checkpoints by itself (SQLite's default is 1,000):
    /// only a backstop, for when `WALCheckpointer` is not running or falls behind.
    static let backstopCheckpointPages = 8000
    /// Space ingest leaves to delivery.
    let deliveryRoom: DeliveryRoom
    let idempotencyWindow: Double
    let pageSize: Int64

    /// Opens (creating if needed) the store at `path`, migrates it, and checks its integrity.
    ///
    /// - Parameter maxBytes: an upper bound on the file size (SQLite `max_page_count`);
    ///   reaching it behaves exactly like a full disk. Nil for no bound.
    /// - Parameter reserveBytes: disk space new events may not take (`DeliveryRoom`); 0 for none.
    /// - Parameter idempotencyWindow: how long a client's `Idempotency-Key` is remembered
    ///   after its event arrived (`ingest.idempotency_window`).
    public init(path: String, maxBytes: Int64? = nil, reserveBytes: Int64 = 0, idempotencyWindow: Double = 86_400) throws(OutboxError) {
        self.path = path
        self.idempotencyWindow = idempotencyWindow
        deliveryRoom = DeliveryRoom(bytes: reserveBytes, storePath: path)
        do {
            try FileManager.default.createDirectory(
                atPath: (path as NSString).deletingLastPathComponent,
                withIntermediateDirectories: true,
                attributes: [.posixPermissions: 0o750])
        } catch {
            throw OutboxError(.failed, path: path, detail: "cannot create its directory: \(error.localizedDescription)")
        }
        try WALInspection.checkStore(at: path)
        do {
            var configuration = GRDB.Configuration()
            configuration.busyMode = .timeout(5)
            configuration.label = "plunkd.outbox"
            pool = try DatabasePool(path: path, configuration: configuration)
        } catch {
            throw Self.classify(error, path: path, opening: true)
        }
        do {
            pageSize = try pool.writeWithoutTransaction { db in
                // DatabasePool resets `synchronous` to NORMAL in WAL mode after preparing the
                // connection, so FULL is set here, on the one writer, after the pool is open.
                try db.execute(sql: "PRAGMA synchronous = FULL")
                // Appends touch only the right edge of the table: a small cache is enough,
                // and the default 2 MB would be most of the daemon's private memory.
                try db.execute(sql: "PRAGMA cache_size = -512")
                try db.execute(sql: "PRAGMA wal_autocheckpoint = \(Self.backstopCheckpointPages)")
                let pageSize = try Int64.fetchOne(db, sql: "PRAGMA page_size") ?? 4096
                if let maxBytes {
                    try db.execute(sql: "PRAGMA max_page_count = \(max(1, maxBytes / pageSize))")
                }
                try Self.checkIntegrity(db, path: path)
                return pageSize
            }
            try OutboxSchema.migrator.migrate(pool)
            let (count, next) = try pool.read { db in
                (
                    try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM event WHERE state != \(EventRowState.parked)") ?? 0,
                    try Int64.fetchOne(
                        db,
                        sql: """
                            SELECT max(coalesce((SELECT max(seq) FROM event), 0),
                                       coalesce((SELECT scanned_through FROM delivery_scan), 0)) + 1
                            """) ?? 1
                )
            }
            storedEvents = Atomic(count)
            nextSeq = Mutex(next)
            claimedContacts = Mutex([:])
        } catch let error as OutboxError {
            throw error
        } catch {
            throw Self.classify(error, path: path, opening: true)
        }
    }

    /// Events in line for delivery: pending or in flight, not parked.
    public var storedCount: Int { storedEvents.load(ordering: .relaxed) }

    /// The writer's `synchronous` setting, read back (2 is FULL); the durability promise rests on it.
    public func synchronousMode() throws -> Int {
        try pool.writeWithoutTransaction { db in try Int.fetchOne(db, sql: "PRAGMA synchronous") ?? -1 }
    }

    /// Stores `events` in one transaction; when this returns they are on disk.
    ///
    /// Only the event rows are written, as `new`, in no index: a counter update or an
    /// index entry here would add pages to every commit's WAL write, and the
    /// one-event-at-a-time client pays for every page. Delivery gives each event its place
    /// in its contact's line when it first meets it (a contact index written at the door
    /// cost a large share of the pipelined rate in the ingest benchmark).
    /// Stores `events` in one transaction, except a repeat of a client's key still
    /// remembered (or given twice in `events`), which is answered with the first event's
    /// id and stores nothing: the receipt says which.
    ///
    /// With a `scope`, a client key another line holds is not taken here: the event is
    /// not stored and the receipt says where the key is (`claimedElsewhere`).
    @discardableResult
    public func enqueue(_ events: [AcceptedEvent], at now: Date = Date(), scope: ClientKeyScope? = nil) throws(OutboxError) -> EnqueueReceipt {
        guard !events.isEmpty else { return EnqueueReceipt() }
        if let shortage = roomShortage() { throw OutboxError(.full, path: path, detail: shortage) }
        do {
            if let scope, events.contains(where: { $0.clientKey != nil }) {
                return try scope.holdingKeyedCommits { try store(events, at: now, scope: scope) }
            }
            return try store(events, at: now, scope: nil)
        } catch {
            throw Self.classify(error, path: path, opening: false)
        }
    }

    private func store(_ events: [AcceptedEvent], at now: Date, scope: ClientKeyScope?) throws -> EnqueueReceipt {
        let stamp = now.timeIntervalSince1970
        var receipt = EnqueueReceipt()
        try pool.writeWithoutTransaction { db in
            try Self.inImmediateTransaction(db) {
                receipt = try self.rememberClientKeys(events, at: stamp, scope: scope, db: db)
                let insert = try db.cachedStatement(
                    sql: """
                        INSERT INTO event (seq, id, contact, body, received_at, due_at, client_key, deadline) VALUES (?, ?, ?, ?, ?, ?, ?, ?)
                        """)
                let stored = receipt.storedCount(of: events.count)
                // Taken inside the write, so numbers grow in commit order.
                var seq = nextSeq.withLock { next in
                    defer { next += Int64(stored) }
                    return next
                }
                for event in events where receipt.repeats[event.id] == nil && receipt.claimedElsewhere[event.id] == nil {
                    try insert.execute(
                        arguments: [
                            seq, event.id.lowercasedText, event.contact, event.body, stamp, stamp, event.clientKey,
                            event.maxAge.map { stamp + $0 },
                        ])
                    seq += 1
                }
            }
        }
        storedEvents.add(receipt.storedCount(of: events.count), ordering: .relaxed)
        writesSinceCheckpoint.add(1, ordering: .relaxed)
        return receipt
    }

    /// Looks up each client key of `events` and remembers the new ones, in the caller's
    /// transaction. Keys expired by now are let go first, as many as twice this batch's
    /// keys (at least 64), through the index: the table stays at about one window's keys
    /// while keyed events flow, and a commit without keys does no work here.
    private func rememberClientKeys(
        _ events: [AcceptedEvent], at stamp: Double, scope: ClientKeyScope?, db: Database
    ) throws -> EnqueueReceipt {
        let window = idempotencyWindow
        var receipt = EnqueueReceipt()
        let keyed = events.reduce(0) { $0 + ($1.clientKey == nil ? 0 : 1) }
        guard keyed > 0 else { return receipt }
        try db.cachedStatement(
            sql: """
                DELETE FROM client_key WHERE key IN
                    (SELECT key FROM client_key WHERE expires_at <= ? ORDER BY expires_at LIMIT ?)
                """
        ).execute(arguments: [stamp, max(64, 2 * keyed)])
        let remember = try db.cachedStatement(
            sql:
                "INSERT INTO client_key (key, id, expires_at) VALUES (?, ?, ?) ON CONFLICT (key) DO UPDATE SET id = excluded.id, expires_at = excluded.expires_at"
        )
        var firstOfKey: [String: UUID] = [:]
        for event in events {
            guard let key = event.clientKey else { continue }
            if let first = firstOfKey[key] {
                receipt.repeats[event.id] = first
            } else if let first = try OutboxQueries.clientKeyOwner(db, key: key, at: stamp) {
                receipt.repeats[event.id] = first
                firstOfKey[key] = first
            } else if let claim = try scope?.claim(of: key, besides: self, at: stamp) {
                receipt.claimedElsewhere[event.id] = claim
            } else {
                try remember.execute(arguments: [key, event.id.lowercasedText, stamp + window])
                firstOfKey[key] = event.id
            }
        }
        return receipt
    }

    /// Less room on the store's filesystem than `DeliveryRoom` keeps for delivery.
    var isShortOfRoom: Bool { deliveryRoom.shortage(freePages: freePageBytes) != nil }

    /// Why a commit of new events would take room delivery needs, or nil.
    private func roomShortage() -> String? {
        guard let shortage = deliveryRoom.shortage(freePages: freePageBytes) else { return nil }
        // After a full disk the log keeps the size it grew to, though delivery has since
        // freed pages in the database: giving the log's space back may be room enough.
        guard deliveryRoom.mayTruncateLog() else { return shortage }
        try? truncateLog()
        return deliveryRoom.shortage(freePages: freePageBytes)
    }

    /// The store's free pages, in bytes: room new rows take without growing the file.
    func freePageBytes() -> Int64 {
        ((try? pool.read { try Int64.fetchOne($0, sql: "PRAGMA freelist_count") }) ?? 0) * pageSize
    }

    /// Copies what the last background checkpoint left of the log, on the writer's
    /// connection so that no commit runs meanwhile: afterwards every frame is copied and
    /// the next commit rewinds the log instead of appending (see `WALCheckpointer`). Holds
    /// the writer for a small copy and one fsync of the database file.
    func finishCheckpoint() throws {
        _ = try pool.writeWithoutTransaction { try $0.checkpoint(.passive) }
    }

    /// GRDB's `write`, with its BEGIN and COMMIT prepared once: GRDB builds and compiles
    /// both statements' text for every transaction, and the client sending one event at
    /// a time waits for that on each event.
    static func inImmediateTransaction(_ db: Database, _ body: () throws -> Void) throws {
        try db.cachedStatement(sql: "BEGIN IMMEDIATE TRANSACTION").execute()
        do {
            try body()
            try db.cachedStatement(sql: "COMMIT TRANSACTION").execute()
        } catch {
            if db.isInsideTransaction { try? db.execute(sql: "ROLLBACK TRANSACTION") }
            throw error
        }
    }

    /// The stored event with this id, if any: its body as received.
    public func storedBody(id: UUID) throws -> Data? {
        try pool.read { db in
            try Data.fetchOne(db, sql: "SELECT body FROM event WHERE id = ?", arguments: [id.lowercasedText])
        }
    }

    /// SQLite's quick check; anything but "ok" makes the store unusable.
    static func checkIntegrity(_ db: Database, path: String) throws {
        let check = try String.fetchAll(db, sql: "PRAGMA quick_check")
        guard check == ["ok"] else {
            throw OutboxError(.unusable, path: path, detail: "integrity check: \(check.prefix(3).joined(separator: "; "))")
        }
    }

    static func classify(_ error: any Error, path: String, opening: Bool) -> OutboxError {
        guard let databaseError = error as? DatabaseError else {
            return OutboxError(opening ? .unusable : .failed, path: path, detail: "\(error)")
        }
        let detail = databaseError.message ?? "\(databaseError.resultCode)"
        switch databaseError.resultCode {
        case .SQLITE_FULL:
            return OutboxError(.full, path: path, detail: detail)
        case .SQLITE_CORRUPT, .SQLITE_NOTADB:
            return OutboxError(.unusable, path: path, detail: detail)
        default:
            return OutboxError(.failed, path: path, detail: detail)
        }
    }
}
