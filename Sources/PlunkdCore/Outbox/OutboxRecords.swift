import Foundation
import GRDB

// The rows the outbox reads, as GRDB records. The claim path reads one or more of these
// per event, so the records there decode by column name in `init(row:)` rather than
// through `Decodable`, which costs a keyed container per row.

extension ClaimedEvent: FetchableRecord {
    /// A row of `event`, as `UPDATE … RETURNING` gives it when the sender claims it.
    public init(row: Row) {
        self.init(
            seq: row["seq"], key: row["id"], contact: row["contact"], body: row["body"],
            attempts: row["attempts"], receivedAt: Date(timeIntervalSince1970: row["received_at"]),
            keyGeneration: row["key_generation"], clientKey: row["client_key"],
            deadline: (row["deadline"] as Double?).map(Date.init(timeIntervalSince1970:)))
    }
}

/// The head of a contact's line that is due.
struct LineHead: FetchableRecord {
    let seq: Int64
    let contact: String

    init(row: Row) {
        seq = row["seq"]
        contact = row["contact"]
    }
}

/// An event met by the claim's scan of new rows.
struct ScannedEvent: FetchableRecord {
    let seq: Int64
    let contact: String
    let state: EventRowState
    let attempts: Int
    /// Seconds since 1970.
    let dueAt: Double

    init(row: Row) {
        seq = row["seq"]
        contact = row["contact"]
        state = row["state"]
        attempts = row["attempts"]
        dueAt = row["due_at"]
    }
}

/// Where an event whose outcome is being recorded stands: its contact's line and its state.
struct LinePlace: FetchableRecord {
    let contact: String
    let state: EventRowState

    init(row: Row) {
        contact = row["contact"]
        state = row["state"]
    }
}

extension ParkedEvent: FetchableRecord {
    /// A parked row as `OutboxQueries.parkedEvents` selects it, its error cut to 300
    /// characters for a listing.
    public init(row: Row) {
        self.init(
            id: row["id"], reason: row["park_reason"] ?? "", receivedAt: Date(timeIntervalSince1970: row["received_at"]),
            attempts: row["attempts"], lastStatus: row["last_status"],
            lastError: (row["last_error"] as String?).map { String($0.prefix(300)) },
            bodyExcerpt: row["excerpt"] ?? "")
    }
}
