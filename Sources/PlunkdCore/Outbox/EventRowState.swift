import GRDB

/// Where an event row is in its life: the `event` table's `state` column, whose CHECK
/// lists these values.
///
/// In SQL the states are written as literals (`\(EventRowState.pending)` gives `'pending'`),
/// not bound as arguments: SQLite uses a partial index (`event_due`, `event_parked`) only
/// when the query's condition spells the index's own, literal for literal. The migrations
/// keep their text as it was when they shipped.
enum EventRowState: String, DatabaseValueConvertible, CustomStringConvertible {
    /// Stored, not yet placed in its contact's line.
    case new
    /// The head of its contact's line, due at `due_at`.
    case pending
    /// Behind an earlier event of the same contact.
    case waiting
    /// Claimed by the sender; back to `waiting` at start-up if plunkd stopped meanwhile.
    case inFlight = "in_flight"
    /// Set aside (`park_reason`) until an operator retries or drops it.
    case parked

    /// The SQL literal.
    var description: String { "'\(rawValue)'" }
}
