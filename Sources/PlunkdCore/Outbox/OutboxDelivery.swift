import Foundation
import GRDB

/// The delivery side of the outbox: claiming events a page at a time, and recording what
/// became of them. Every call is one transaction.
///
/// Each contact has a line: its events not yet delivered or parked, in `seq` order. At most
/// one event of a line is out of the `waiting` state, its head: `pending` (due at
/// `due_at`) or `in_flight` (claimed). Events stored since delivery last looked are `new`
/// and join their line when a claim first meets them.
extension Outbox {
    /// Puts events left `in_flight` by a crash back in line, unchanged: same id, so the
    /// same `Idempotency-Key` on the resend. Called once at start-up, before any claim.
    @discardableResult
    public func releaseInFlight(now: Date = Date()) throws -> Int {
        try pool.write { db in
            // A scan of the table (claimed rows are in no index), at start-up only.
            let contacts = try String.fetchAll(
                db, sql: "UPDATE event SET state = \(EventRowState.waiting) WHERE state = \(EventRowState.inFlight) RETURNING contact")
            for contact in Set(contacts) {
                try settleLine(of: contact, busy: [:], db: db)
            }
            db.afterNextTransaction(onCommit: { _ in self.claimedContacts.withLock { $0.removeAll() } })
            return contacts.count
        }
    }

    /// Records `moves`, bumps `counters`, then claims up to `claimLimit` events, all in one
    /// transaction (one fsync for a whole turn of the sender).
    ///
    /// A claim takes due heads in due order, then new events in `seq` order, never one whose
    /// contact has an earlier event in line. It reads a bounded number of rows, so a turn
    /// costs the same with a backlog of ten events or ten million.
    public func recordAndClaim(
        moves: [EventMove], counters: [OutboxCounter: Int], claimLimit: Int, now: Date
    ) throws -> ClaimResult {
        // Near a full disk, each turn starts on an empty log: a claim's first pass over new
        // events rewrites their pages, and a run of turns between two checkpoints could
        // otherwise write more log than the room kept for it.
        if isShortOfRoom { try? truncateLog() }
        return try recordAndClaimOnce(moves: moves, counters: counters, claimLimit: claimLimit, now: now)
    }

    /// Copies the whole log into the database and cuts the log file to nothing, giving
    /// its space back to the filesystem. Waits for readers; used only near a full disk.
    func truncateLog() throws {
        _ = try pool.writeWithoutTransaction { try $0.checkpoint(.truncate) }
    }

    private func recordAndClaimOnce(
        moves: [EventMove], counters: [OutboxCounter: Int], claimLimit: Int, now: Date
    ) throws -> ClaimResult {
        let (result, removedFromLine) = try pool.write { db -> (ClaimResult, Int) in
            // The claimed contacts change with the transaction, and only if it commits.
            var busy = claimedContacts.withLock { $0 }
            var removed = 0
            for move in moves {
                removed += try record(move, now: now, busy: &busy, db: db)
            }
            for (counter, amount) in counters where amount != 0 {
                try OutboxQueries.add(amount, to: counter, db)
            }
            let result =
                claimLimit > 0
                ? try claim(limit: claimLimit, now: now, busy: &busy, db: db)
                : ClaimResult(claimed: [], mayHaveMore: false, nextDue: nil)
            let committed = busy
            db.afterNextTransaction(onCommit: { _ in self.claimedContacts.withLock { $0 = committed } })
            return (result, removed)
        }
        if removedFromLine > 0 { storedEvents.subtract(removedFromLine, ordering: .relaxed) }
        writesSinceCheckpoint.add(1, ordering: .relaxed)
        return result
    }

    /// Applies one move to a claimed event; returns how many events left the line.
    private func record(_ move: EventMove, now: Date, busy: inout [String: Int], db: Database) throws -> Int {
        guard
            let row = try LinePlace.fetchOne(
                db.cachedStatement(sql: "SELECT contact, state FROM event WHERE seq = ?"), arguments: [move.seq])
        else { return 0 }
        let (contact, state) = (row.contact, row.state)
        let wasClaimed = state == .inFlight
        var removed = 0
        switch move {
        case .delivered(let seq):
            // Whatever its state: a delivered event must not be sent again.
            try db.cachedStatement(sql: "DELETE FROM event WHERE seq = ?").execute(arguments: [seq])
            removed = state == .parked ? 0 : db.changesCount
        case .retry(let seq, let due, let countsAsAttempt, let status, let error):
            try db.cachedStatement(
                sql: """
                    UPDATE event SET state = \(EventRowState.waiting), due_at = ?, attempts = attempts + ?,
                        last_status = coalesce(?, last_status), last_error = coalesce(?, last_error)
                    WHERE seq = ? AND state = \(EventRowState.inFlight)
                    """
            ).execute(arguments: [due.timeIntervalSince1970, countsAsAttempt ? 1 : 0, status, error, seq])
        case .park(let seq, let reason, let status, let error):
            try db.cachedStatement(
                sql: """
                    UPDATE event SET state = \(EventRowState.parked), park_reason = ?, attempts = attempts + 1,
                        last_status = ?, last_error = ?, parked_at = ?
                    WHERE seq = ? AND state = \(EventRowState.inFlight)
                    """
            ).execute(arguments: [reason.rawValue, status, error, now.timeIntervalSince1970, seq])
            removed = db.changesCount
        case .release(let seq):
            try db.cachedStatement(sql: "UPDATE event SET state = \(EventRowState.waiting) WHERE seq = ? AND state = \(EventRowState.inFlight)")
                .execute(arguments: [seq])
        case .rekey(let seq, let due, let status, let error):
            try db.cachedStatement(
                sql: """
                    UPDATE event SET state = \(EventRowState.waiting), due_at = ?, attempts = attempts + 1, key_generation = key_generation + 1,
                        last_status = coalesce(?, last_status), last_error = coalesce(?, last_error)
                    WHERE seq = ? AND state = \(EventRowState.inFlight)
                    """
            ).execute(arguments: [due.timeIntervalSince1970, status, error, seq])
        }
        if wasClaimed, let count = busy[contact] {
            busy[contact] = count > 1 ? count - 1 : nil
        }
        try promoteHead(of: contact, busy: busy, db: db)
        return removed
    }

    private func claim(limit: Int, now: Date, busy: inout [String: Int], db: Database) throws -> ClaimResult {
        let examineAtMost = max(256, limit * 8)
        let page = limit * 2 + 8
        var claimed: [ClaimedEvent] = []
        var examined = 0
        let toWaiting = try db.cachedStatement(sql: "UPDATE event SET state = \(EventRowState.waiting) WHERE seq = ?")
        let toInFlight = try db.cachedStatement(
            sql: """
                UPDATE event SET state = \(EventRowState.inFlight) WHERE seq = ?
                RETURNING seq, id, contact, body, attempts, received_at, key_generation, client_key, deadline
                """)
        func take(_ seq: Int64, _ contact: String) throws {
            guard let event = try ClaimedEvent.fetchOne(toInFlight, arguments: [seq]) else { return }
            busy[contact, default: 0] += 1
            claimed.append(event)
        }

        // Heads that are due. Each row examined leaves the partial index (claimed, or set
        // aside behind a claimed event of its contact), so every page starts at the front.
        let dueHeads = try db.cachedStatement(
            sql: """
                SELECT seq, contact FROM event INDEXED BY event_due
                WHERE state = \(EventRowState.pending) AND due_at <= ? ORDER BY due_at, seq LIMIT ?
                """)
        var headsExhausted = false
        while claimed.count < limit && examined < examineAtMost {
            let heads = try LineHead.fetchAll(dueHeads, arguments: [now.timeIntervalSince1970, page])
            for head in heads where claimed.count < limit {
                examined += 1
                if busy[head.contact] != nil {
                    try toWaiting.execute(arguments: [head.seq])
                } else {
                    try take(head.seq, head.contact)
                }
            }
            if heads.count < page {
                headsExhausted = true
                break
            }
        }

        // New events, in the order they were stored, from where the last claim stopped.
        let scannedThrough = try Int64.fetchOne(db.cachedStatement(sql: "SELECT scanned_through FROM delivery_scan")) ?? 0
        var position = scannedThrough
        var newExhausted = false
        let newEvents = try db.cachedStatement(
            sql: """
                SELECT seq, contact, state, due_at, attempts FROM event WHERE seq > ? ORDER BY seq LIMIT ?
                """)
        let lineExists = try db.cachedStatement(
            sql: """
                SELECT EXISTS (SELECT 1 FROM event INDEXED BY event_line WHERE contact = ? AND \(OutboxSchema.lineCondition))
                """)
        let toPending = try db.cachedStatement(sql: "UPDATE event SET state = \(EventRowState.pending) WHERE seq = ?")
        scanning: while claimed.count < limit && examined < examineAtMost {
            let events = try ScannedEvent.fetchAll(newEvents, arguments: [position, page])
            for event in events {
                if claimed.count == limit || examined == examineAtMost { break scanning }
                examined += 1
                position = event.seq
                // Rows met before (parked, or back in line) keep their place.
                guard event.state == .new else { continue }
                if try busy[event.contact] != nil || (Bool.fetchOne(lineExists, arguments: [event.contact]) ?? false) {
                    try toWaiting.execute(arguments: [event.seq])
                } else if event.attempts > 0 && event.dueAt > now.timeIntervalSince1970 {
                    // Backing off when an older plunkd stopped: the head of its line, due later.
                    try toPending.execute(arguments: [event.seq])
                } else {
                    try take(event.seq, event.contact)
                }
            }
            if events.count < page {
                newExhausted = true
                break
            }
        }
        if position != scannedThrough {
            try db.cachedStatement(sql: "UPDATE delivery_scan SET scanned_through = ? WHERE id = 1").execute(arguments: [position])
        }

        let everythingSeen = headsExhausted && newExhausted
        var nextDue: Date?
        if claimed.count < limit && everythingSeen {
            nextDue = try Double.fetchOne(
                db.cachedStatement(
                    sql: """
                        SELECT min(due_at) FROM event INDEXED BY event_due WHERE state = \(EventRowState.pending)
                        """)
            ).map(Date.init(timeIntervalSince1970:))
        }
        return ClaimResult(claimed: claimed, mayHaveMore: !everythingSeen, nextDue: nextDue)
    }

    /// Makes the first event in `contact`'s line its head, due at its own `due_at`, unless
    /// an event of the contact is claimed. Called whenever an event left the head.
    func promoteHead(of contact: String, busy: [String: Int], db: Database) throws {
        guard busy[contact] == nil else { return }
        try db.cachedStatement(
            sql: """
                UPDATE event SET state = \(EventRowState.pending)
                WHERE seq = (SELECT seq FROM event INDEXED BY event_line
                             WHERE contact = ? AND \(OutboxSchema.lineCondition) ORDER BY seq LIMIT 1)
                  AND state = \(EventRowState.waiting)
                """
        ).execute(arguments: [contact])
    }

    /// Recomputes `contact`'s line after events came back into it (requeued, released):
    /// every event waits, then the first becomes the head.
    func settleLine(of contact: String, busy: [String: Int], db: Database) throws {
        try db.cachedStatement(
            sql: """
                UPDATE event SET state = \(EventRowState.waiting)
                WHERE contact = ? AND \(OutboxSchema.lineCondition) AND state = \(EventRowState.pending)
                """
        ).execute(arguments: [contact])
        try promoteHead(of: contact, busy: busy, db: db)
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
