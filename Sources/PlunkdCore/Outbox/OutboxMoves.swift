import Foundation

/// Why an event left the delivery line. Parked events stay in the store, visible and
/// replayable, until delivered after a retry or dropped by an operator.
public enum ParkReason: String, Sendable, CaseIterable, Codable {
    /// The destination refused the event itself (its shape or content).
    case rejected
    /// The destination refused the key or the project; these go back in line on their
    /// own when the key changes or the operator resumes.
    case unauthorized
    /// Transient failures went on for longer than `retry.max_age`.
    case expired
    /// An email whose send failed part-way at Plunk (a 409 whose first attempt ended in a
    /// 5xx): some recipients may have it already. Sent again only by the operator, under
    /// a new key (`plunkd parked retry --new-key`), which may reach those twice.
    case uncertain
}

/// An event handed to the sender: it is `in_flight` in the store until its move is recorded.
public struct ClaimedEvent: Sendable, Equatable {
    public let seq: Int64
    /// The event id as stored (lower-case UUID text): its `Idempotency-Key`, sent as is.
    public let key: String
    public let contact: String
    public let body: Data
    public let attempts: Int
    public let receivedAt: Date
    /// How many times the event's key was found burned at Plunk (see `rekey`).
    public let keyGeneration: Int
    /// The client's own `Idempotency-Key`, sent in place of the id when there is one, so
    /// that the client's promise holds at Plunk too.
    public let clientKey: String?
    /// When an email stops being worth sending (see `AcceptedEvent.maxAge`); nil for track events.
    public let deadline: Date?

    public init(
        seq: Int64, key: String, contact: String, body: Data, attempts: Int, receivedAt: Date, keyGeneration: Int = 0,
        clientKey: String? = nil, deadline: Date? = nil
    ) {
        self.clientKey = clientKey
        self.deadline = deadline
        self.seq = seq
        self.key = key
        self.contact = contact
        self.body = body
        self.attempts = attempts
        self.receivedAt = receivedAt
        self.keyGeneration = keyGeneration
    }

    public var id: UUID { UUID(uuidString: key) ?? UUID() }

    /// The `Idempotency-Key` sent: the client's key or else the id, or after a burned key
    /// that with its generation (`<key>.r1`, `<key>.r2`, …): derived, so a resend after a
    /// crash carries the same key, and within Plunk's 1–255 printable ASCII (a client's
    /// key is at most `EventValidator.maxClientKeyLength`).
    public var idempotencyKey: String {
        let base = clientKey ?? key
        return keyGeneration == 0 ? base : "\(base).r\(keyGeneration)"
    }
}

/// One state change of one claimed event, as the sender decided it. Moves are recorded
/// in batches, each batch one transaction, so that a busy sender pays one fsync for
/// many outcomes.
public enum EventMove: Sendable, Equatable {
    /// Delivered: the row is removed.
    case delivered(seq: Int64)
    /// Back in line, due at `due`. `countsAsAttempt` is false for pauses (402, 429),
    /// which say nothing about the event itself.
    case retry(seq: Int64, due: Date, countsAsAttempt: Bool, status: Int?, error: String?)
    /// Out of line, kept for the operator with the last status and answer.
    case park(seq: Int64, reason: ParkReason, status: Int?, error: String?)
    /// Claimed but never sent (delivery paused or stopped first): back in line as it was.
    case release(seq: Int64)
    /// Plunk keeps the event's key burned without having stored it (a 409 whose first
    /// attempt failed): back in line, due at `due`, under the next key generation.
    case rekey(seq: Int64, due: Date, status: Int?, error: String?)

    var seq: Int64 {
        switch self {
        case .delivered(let seq), .retry(let seq, _, _, _, _), .park(let seq, _, _, _), .release(let seq),
            .rekey(let seq, _, _, _):
            seq
        }
    }
}

/// What one sender turn got from the store.
public struct ClaimResult: Sendable, Equatable {
    /// Claimed events, now `in_flight`, in the order they should be sent.
    public var claimed: [ClaimedEvent]
    /// The claim stopped at its reading bound with events possibly left to claim: look
    /// again at once rather than waiting for `nextDue`.
    public var mayHaveMore: Bool
    /// When the earliest waiting head falls due, if no claim is possible before then.
    public var nextDue: Date?
}

/// Lifetime counters, kept in the store so they survive restarts.
public enum OutboxCounter: Sendable, Hashable {
    case delivered
    case duplicatesSuppressed
    case rekeyed
    /// Parked events an operator dropped for good.
    case dropped
    /// Parked events `storage.parked_max_age` deleted.
    case deletedByRetention
    case parked(ParkReason)
    case attempts(outcome: String)

    /// Its name in the store, in `plunkd status --json` and (after the line's prefix) in
    /// `/metrics`: spelled here only.
    public var name: String {
        switch self {
        case .delivered: "delivered_total"
        case .dropped: "dropped_total"
        case .deletedByRetention: "retention_deleted_total"
        case .duplicatesSuppressed: "duplicates_suppressed_total"
        case .rekeyed: "rekeyed_total"
        case .parked(let reason): "parked_\(reason.rawValue)_total"
        case .attempts(let outcome): "attempts_\(outcome)_total"
        }
    }
}

/// The destination-wide state that must survive a restart: a quota pause and an auth hold.
public struct StoredDeliveryHold: Sendable, Equatable {
    /// Nothing is sent before this instant (wall clock).
    public var pausedUntil: Date?
    public var pauseReason: String?
    /// Fingerprint of the key that was refused; delivery stays held while the same key is configured.
    public var refusedKeyFingerprint: String?
    public var heldSince: Date?

    public init(pausedUntil: Date? = nil, pauseReason: String? = nil, refusedKeyFingerprint: String? = nil, heldSince: Date? = nil) {
        self.pausedUntil = pausedUntil
        self.pauseReason = pauseReason
        self.refusedKeyFingerprint = refusedKeyFingerprint
        self.heldSince = heldSince
    }
}
