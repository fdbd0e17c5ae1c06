import Foundation
import GRDB

/// What an operator does with parked events: put them back in line, or drop them.
/// Dropping is the only way an event leaves the store without being delivered.
extension Outbox {
    /// The answer to a drop that was not confirmed and would remove more than one event.
    public struct DropNeedsConfirmation: Error, Sendable, Equatable {
        public let count: Int
    }

    /// The answer to a retry under new keys that was not confirmed and would send more
    /// than one event again.
    public struct NewKeyNeedsConfirmation: Error, Sendable, Equatable {
        public let count: Int
    }

    /// Puts the selected parked events back in line, in their original order, with their
    /// attempt count reset (their age still counts toward `retry.max_age`).
    /// - Parameter newKey: each is sent under the next derived key (`<key>.r<n>`), so Plunk
    ///   takes it as new even where it kept the old key; more than one needs `confirmed`,
    ///   checked in the same transaction.
    @discardableResult
    public func requeueParked(_ selection: ParkedSelection, newKey: Bool = false, confirmed: Bool = false, now: Date = Date()) throws -> Int {
        let (condition, arguments) = selection.condition
        let count = try pool.write { db -> Int in
            if newKey {
                let count = try OutboxQueries.countParked(db, selection)
                if count > 1 && !confirmed { throw NewKeyNeedsConfirmation(count: count) }
            }
            let contacts = try String.fetchAll(
                db,
                sql: """
                    SELECT DISTINCT contact FROM event INDEXED BY event_parked WHERE state = \(EventRowState.parked)\(condition)
                    """, arguments: arguments)
            var all: StatementArguments = [now.timeIntervalSince1970]
            all += arguments
            try db.execute(
                sql: """
                    UPDATE event SET state = \(EventRowState.waiting), park_reason = NULL, attempts = 0, due_at = ?\(newKey ? ", key_generation = key_generation + 1" : "")
                    WHERE state = \(EventRowState.parked)\(condition)
                    """, arguments: all)
            let changed = db.changesCount
            let busy = claimedContacts.withLock { $0 }
            for contact in contacts {
                try settleLine(of: contact, busy: busy, db: db)
            }
            return changed
        }
        storedEvents.add(count, ordering: .relaxed)
        return count
    }

    @discardableResult
    public func requeueParked(reason: ParkReason, now: Date = Date()) throws -> Int {
        try requeueParked(.reason(reason), now: now)
    }

    /// Deletes the selected parked events for good, counting them in `dropped_total`.
    /// More than one needs `confirmed`, checked in the same transaction as the delete.
    public func dropParked(_ selection: ParkedSelection, confirmed: Bool) throws -> Int {
        let (condition, arguments) = selection.condition
        return try pool.write { db -> Int in
            let count = try OutboxQueries.countParked(db, selection)
            if count > 1 && !confirmed { throw DropNeedsConfirmation(count: count) }
            try db.execute(sql: "DELETE FROM event WHERE state = \(EventRowState.parked)\(condition)", arguments: arguments)
            let dropped = db.changesCount
            try OutboxQueries.add(dropped, to: .dropped, db)
            return dropped
        }
    }
}
