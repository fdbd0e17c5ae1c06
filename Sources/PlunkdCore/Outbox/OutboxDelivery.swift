import Foundation
import GRDB

/// The delivery side of the outbox: claiming due events a page at a time, and recording
/// what became of them. Every call is one transaction.
extension Outbox {
    /// Puts events left `in_flight` by a crash back in line, unchanged: same id, so the
    /// same `Idempotency-Key` on the resend. Called once at start-up.
    @discardableResult
    public func releaseInFlight(now: Date = Date()) throws -> Int {
        try pool.write { db in
            try db.execute(sql: "UPDATE event SET state = 'pending' WHERE state = 'in_flight'")
            let released = db.changesCount
            // Self-repair: the first event in line of every contact must be claimable. A
            // line whose head was set aside (as an earlier plunkd could do) would otherwise
            // wait forever; this walks the contact index once, at start-up only.
            try db.execute(sql: """
                UPDATE event SET due_at = ?
                WHERE state = 'pending' AND due_at >= ? AND seq IN (
                    SELECT min(seq) FROM event WHERE state != 'parked' GROUP BY contact)
                """, arguments: [now.timeIntervalSince1970, OutboxSchema.waitingBehindHead])
            return released
        }
    }

    /// Records `moves`, bumps `counters`, then claims up to `claimLimit` due events, all in
    /// one transaction (one fsync for a whole turn of the sender).
    ///
    /// A claim takes due events in due order, never one whose contact has an earlier event
    /// still in line (pending, backing off or in flight). It reads a bounded number of index
    /// entries, so a turn costs the same with a backlog of ten events or ten million.
    public func recordAndClaim(
        moves: [EventMove], counters: [OutboxCounter: Int], claimLimit: Int, now: Date
    ) throws -> [ClaimedEvent] {
        var removedFromLine = 0
        let claimed = try pool.write { db -> [ClaimedEvent] in
            for move in moves {
                switch move {
                case .delivered(let seq):
                    let contact = try String.fetchOne(db.cachedStatement(sql: "SELECT contact FROM event WHERE seq = ?"), arguments: [seq])
                    try db.cachedStatement(sql: "DELETE FROM event WHERE seq = ?").execute(arguments: [seq])
                    removedFromLine += db.changesCount
                    if let contact { try promoteHead(of: contact, db: db, now: now) }
                case .retry(let seq, let due, let countsAsAttempt, let status, let error):
                    try db.cachedStatement(sql: """
                        UPDATE event SET state = 'pending', due_at = ?, attempts = attempts + ?,
                            last_status = coalesce(?, last_status), last_error = coalesce(?, last_error)
                        WHERE seq = ?
                        """).execute(arguments: [due.timeIntervalSince1970, countsAsAttempt ? 1 : 0, status, error, seq])
                case .park(let seq, let reason, let status, let error):
                    try db.cachedStatement(sql: """
                        UPDATE event SET state = 'parked', park_reason = ?, attempts = attempts + 1,
                            last_status = ?, last_error = ?
                        WHERE seq = ? AND state != 'parked'
                        """).execute(arguments: [reason.rawValue, status, error, seq])
                    removedFromLine += db.changesCount
                    if let contact = try String.fetchOne(db.cachedStatement(sql: "SELECT contact FROM event WHERE seq = ?"), arguments: [seq]) {
                        try promoteHead(of: contact, db: db, now: now)
                    }
                }
            }
            for (counter, amount) in counters where amount != 0 {
                try db.cachedStatement(sql: """
                    INSERT INTO counter (name, value) VALUES (?, ?)
                    ON CONFLICT (name) DO UPDATE SET value = value + excluded.value
                    """).execute(arguments: [counter.name, amount])
            }
            guard claimLimit > 0 else { return [] }
            // Due events in due order; an event with an earlier one of its contact still in
            // line is set aside (it comes back when that one leaves the line). Rows are read a
            // small page at a time and reading stops at `claimLimit` claims, or after
            // `examineAtMost` rows: a long run of set-asides continues next turn.
            let examineAtMost = max(256, claimLimit * 8)
            let page = claimLimit * 2 + 8
            let candidatesStatement = try db.cachedStatement(sql: """
                SELECT seq, contact FROM event INDEXED BY event_due
                WHERE state = 'pending' AND due_at < \(OutboxSchema.waitingBehindHead) AND due_at <= ?
                ORDER BY due_at, seq LIMIT ?
                """)
            let earlierInLine = try db.cachedStatement(sql: """
                SELECT EXISTS (SELECT 1 FROM event WHERE contact = ? AND seq < ? AND state != 'parked')
                """)
            let setAside = try db.cachedStatement(sql: "UPDATE event SET due_at = ? WHERE seq = ?")
            let claim = try db.cachedStatement(sql: """
                UPDATE event SET state = 'in_flight' WHERE seq = ?
                RETURNING id, contact, body, attempts, received_at
                """)
            // Contacts with an event claimed in this turn: their later events wait without
            // a lookup. (Only claims count: an event set aside because an earlier one is in
            // line says nothing about that earlier one, which may come later in the page
            // with a later due time and must still be claimed.)
            var contactsClaimed = Set<String>()
            var claimed: [ClaimedEvent] = []
            var examined = 0
            paging: while claimed.count < claimLimit && examined < examineAtMost {
                // Claimed and set-aside rows leave the partial index, so each page starts
                // where the last one ended.
                let candidates = try Row.fetchAll(candidatesStatement, arguments: [now.timeIntervalSince1970, page])
                for candidate in candidates {
                    examined += 1
                    let seq: Int64 = candidate["seq"]
                    let contact: String = candidate["contact"]
                    let blocked = try contactsClaimed.contains(contact)
                        || (Bool.fetchOne(earlierInLine, arguments: [contact, seq]) ?? false)
                    if blocked {
                        try setAside.execute(arguments: [OutboxSchema.waitingBehindHead, seq])
                    } else if let row = try Row.fetchOne(claim, arguments: [seq]) {
                        contactsClaimed.insert(contact)
                        claimed.append(ClaimedEvent(
                            seq: seq, id: UUID(uuidString: row["id"]) ?? UUID(), contact: row["contact"], body: row["body"],
                            attempts: row["attempts"], receivedAt: Date(timeIntervalSince1970: row["received_at"])))
                    }
                    if claimed.count == claimLimit { break paging }
                }
                if candidates.count < page { break }
            }
            return claimed
        }
        if removedFromLine > 0 { storedEvents.subtract(removedFromLine, ordering: .relaxed) }
        return claimed
    }

    /// When the earliest head of a contact's line falls due; nil when none is waiting.
    public func nextDueDate() throws -> Date? {
        try pool.read { db in
            try Double.fetchOne(db, sql: """
                SELECT min(due_at) FROM event INDEXED BY event_due
                WHERE state = 'pending' AND due_at < \(OutboxSchema.waitingBehindHead)
                """)
                .map(Date.init(timeIntervalSince1970:))
        }
    }

    /// Brings back the first event still in line for `contact` if it was set aside, due now.
    /// Called when the event ahead of it left the line (delivered, parked, dropped).
    func promoteHead(of contact: String, db: Database, now: Date) throws {
        try db.cachedStatement(sql: """
            UPDATE event SET due_at = ?
            WHERE seq = (SELECT seq FROM event WHERE contact = ? AND state != 'parked' ORDER BY seq LIMIT 1)
              AND state = 'pending' AND due_at >= ?
            """).execute(arguments: [now.timeIntervalSince1970, contact, OutboxSchema.waitingBehindHead])
    }

    /// Recomputes the line of `contact` after events came back into it: the first is the
    /// head, due now unless it is in flight or already due; all others wait behind it.
    func rebuildLine(of contact: String, db: Database, now: Date) throws {
        guard let head = try Int64.fetchOne(db, sql: """
            SELECT seq FROM event WHERE contact = ? AND state != 'parked' ORDER BY seq LIMIT 1
            """, arguments: [contact]) else { return }
        try db.execute(sql: """
            UPDATE event SET due_at = ? WHERE contact = ? AND state = 'pending' AND seq > ?
            """, arguments: [OutboxSchema.waitingBehindHead, contact, head])
        try db.execute(sql: """
            UPDATE event SET due_at = ? WHERE seq = ? AND state = 'pending' AND due_at >= ?
            """, arguments: [now.timeIntervalSince1970, head, OutboxSchema.waitingBehindHead])
    }

    public func loadHold() throws -> StoredDeliveryHold {
        try pool.read(OutboxQueries.hold)
    }

    public func saveHold(_ hold: StoredDeliveryHold) throws {
        try pool.write { db in
            try db.execute(sql: "DELETE FROM delivery_hold")
            let values: [(String, (any DatabaseValueConvertible)?)] = [
                ("paused_until", hold.pausedUntil?.timeIntervalSince1970),
                ("pause_reason", hold.pauseReason),
                ("refused_key", hold.refusedKeyFingerprint),
                ("held_since", hold.heldSince?.timeIntervalSince1970),
            ]
            for (name, value) in values {
                if let value {
                    try db.execute(sql: "INSERT INTO delivery_hold (name, value) VALUES (?, ?)", arguments: [name, value])
                }
            }
        }
    }
}
