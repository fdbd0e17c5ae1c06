import Foundation
import GRDB

/// What the store says about itself, for `plunkd status` and `/metrics`.
public struct StoredStatus: Sendable, Equatable {
    /// Events in line for delivery: pending, backing off or in flight; not parked.
    public var inLine: Int
    public var parked: [ParkReason: Int]
    /// When the oldest event still in line was acknowledged.
    public var oldestInLineReceivedAt: Date?
    /// Lifetime counters by stored name (`delivered_total`, …).
    public var counters: [String: Int]
    public var hold: StoredDeliveryHold
    /// The database file and its WAL, in bytes.
    public var fileBytes: Int64
    /// What `storage.parked_max_age` is due to delete, when one is set.
    public var retention: ParkedRetentionOutlook? = nil
}

/// One parked event as the operator sees it.
public struct ParkedEvent: Sendable, Equatable, Codable {
    public var id: String
    public var reason: String
    public var receivedAt: Date
    public var attempts: Int
    public var lastStatus: Int?
    public var lastError: String?
    /// The start of the body as received, enough to recognise the event.
    public var bodyExcerpt: String
}

/// Which parked events an operator command acts on.
public enum ParkedSelection: Sendable, Equatable {
    case all
    case reason(ParkReason)
    case ids([String])

    /// The SQL condition (after `state = 'parked'`) and its arguments.
    var condition: (sql: String, arguments: StatementArguments) {
        switch self {
        case .all:
            ("", [])
        case .reason(let reason):
            (" AND park_reason = ?", [reason.rawValue])
        case .ids(let ids):
            (" AND id IN (\(ids.map { _ in "?" }.joined(separator: ",")))", StatementArguments(ids.map { $0.lowercased() }))
        }
    }
}

/// Read-only queries, shared by the running daemon's store and the read-only view that
/// `plunkd status` opens when the daemon is not running. Each reads an index or a small
/// table, never the whole backlog, except where the comment says so.
enum OutboxQueries {
    static func hold(_ db: Database) throws -> StoredDeliveryHold {
        var hold = StoredDeliveryHold()
        for row in try Row.fetchAll(db, sql: "SELECT name, value FROM delivery_hold") {
            let name: String = row["name"]
            switch name {
            case "paused_until": hold.pausedUntil = (row["value"] as Double?).map(Date.init(timeIntervalSince1970:))
            case "pause_reason": hold.pauseReason = row["value"]
            case "refused_key": hold.refusedKeyFingerprint = row["value"]
            case "held_since": hold.heldSince = (row["value"] as Double?).map(Date.init(timeIntervalSince1970:))
            default: break
            }
        }
        return hold
    }

    /// Adds `amount` to a lifetime counter, in the caller's transaction: every change
    /// that a counter counts writes it in the same commit.
    static func add(_ amount: Int, to counter: OutboxCounter, _ db: Database) throws {
        try db.cachedStatement(
            sql: """
                INSERT INTO counter (name, value) VALUES (?, ?)
                ON CONFLICT (name) DO UPDATE SET value = value + excluded.value
                """
        ).execute(arguments: [counter.name, amount])
    }

    /// The id of the event that holds a client's `key` unexpired at `stamp`, if any: what
    /// a repeat on the same line and a claim from another line both look up.
    static func clientKeyOwner(_ db: Database, key: String, at stamp: Double) throws -> UUID? {
        let statement = try db.cachedStatement(sql: "SELECT id FROM client_key WHERE key = ? AND expires_at > ?")
        return try String.fetchOne(statement, arguments: [key, stamp]).flatMap(UUID.init(uuidString:))
    }

    static func counters(_ db: Database) throws -> [String: Int] {
        Dictionary(
            uniqueKeysWithValues: try Row.fetchAll(db, sql: "SELECT name, value FROM counter").map {
                ($0["name"] as String, $0["value"] as Int)
            })
    }

    /// Parked events by reason, through the partial index of parked rows.
    static func parkedCounts(_ db: Database) throws -> [ParkReason: Int] {
        var parked: [ParkReason: Int] = [:]
        for row in try Row.fetchAll(
            db,
            sql: """
                SELECT park_reason, count(*) AS n FROM event INDEXED BY event_parked
                WHERE state = \(EventRowState.parked) GROUP BY park_reason
                """)
        {
            parked[ParkReason(rawValue: row["park_reason"] ?? "") ?? .rejected, default: 0] += row["n"] as Int
        }
        return parked
    }

    /// The oldest event in line: rows are in acknowledgement order, so this stops at the
    /// first row that is not parked.
    static func oldestInLineReceivedAt(_ db: Database) throws -> Date? {
        try Double.fetchOne(db, sql: "SELECT received_at FROM event WHERE state != \(EventRowState.parked) ORDER BY seq LIMIT 1")
            .map(Date.init(timeIntervalSince1970:))
    }

    /// Events in line, counted row by row: for the read-only view only (the running
    /// daemon keeps this number in memory).
    static func countInLine(_ db: Database) throws -> Int {
        try Int.fetchOne(db, sql: "SELECT count(*) FROM event WHERE state != \(EventRowState.parked)") ?? 0
    }

    static func parkedEvents(_ db: Database, _ selection: ParkedSelection, limit: Int) throws -> [ParkedEvent] {
        let (condition, arguments) = selection.condition
        var all = arguments
        all += [limit]
        return try ParkedEvent.fetchAll(
            db,
            sql: """
                SELECT id, park_reason, received_at, attempts, last_status, last_error,
                       CAST(substr(body, 1, 160) AS TEXT) AS excerpt
                FROM event INDEXED BY event_parked
                WHERE state = \(EventRowState.parked)\(condition) ORDER BY seq LIMIT ?
                """, arguments: all
        )
    }

    static func countParked(_ db: Database, _ selection: ParkedSelection) throws -> Int {
        let (condition, arguments) = selection.condition
        return try Int.fetchOne(
            db,
            sql: """
                SELECT count(*) FROM event INDEXED BY event_parked WHERE state = \(EventRowState.parked)\(condition)
                """, arguments: arguments) ?? 0
    }

    static func fileBytes(path: String) -> Int64 {
        [path, path + "-wal"].reduce(0) { total, file in
            let size = (try? FileManager.default.attributesOfItem(atPath: file)[.size] as? NSNumber)?.int64Value ?? 0
            return total + size
        }
    }
}

extension Outbox {
    /// The store's view of itself, cheap enough to take on every status or metrics request.
    /// - Parameter retentionHorizon: with `storage.parked_max_age` set, its cutoff a day
    ///   from now: what is parked before it is due for deletion within the day.
    public func storedStatus(retentionHorizon: Date? = nil) throws -> StoredStatus {
        let inLine = storedCount
        return try pool.read { db in
            StoredStatus(
                inLine: inLine, parked: try OutboxQueries.parkedCounts(db),
                oldestInLineReceivedAt: try OutboxQueries.oldestInLineReceivedAt(db),
                counters: try OutboxQueries.counters(db), hold: try OutboxQueries.hold(db),
                fileBytes: OutboxQueries.fileBytes(path: path),
                retention: try retentionHorizon.map { try OutboxQueries.retentionOutlook(db, horizon: $0) })
        }
    }

    /// Every lifetime counter, by its stored name.
    public func counterValues() throws -> [String: Int] {
        try pool.read(OutboxQueries.counters)
    }

    /// Rows by state, and parked rows by reason, counted from the store itself (a scan:
    /// for tests and tools, not for the hot path).
    public func stateCounts() throws -> (pending: Int, inFlight: Int, parked: [ParkReason: Int]) {
        try pool.read { db in
            let pending =
                try Int.fetchOne(
                    db, sql: "SELECT count(*) FROM event WHERE state IN (\(EventRowState.new), \(EventRowState.pending), \(EventRowState.waiting))") ?? 0
            let inFlight = try Int.fetchOne(db, sql: "SELECT count(*) FROM event WHERE state = \(EventRowState.inFlight)") ?? 0
            return (pending, inFlight, try OutboxQueries.parkedCounts(db))
        }
    }

    public func parkedEvents(_ selection: ParkedSelection, limit: Int) throws -> [ParkedEvent] {
        try pool.read { db in try OutboxQueries.parkedEvents(db, selection, limit: limit) }
    }
}
