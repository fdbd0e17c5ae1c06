import Foundation

/// One track event or transactional email accepted at the door, ready to be stored.
///
/// The body is kept exactly as the client sent it: it is what Plunk will receive, so
/// nothing the client meant (key order, number formatting, unknown fields) is lost
/// by a decode/encode round trip.
public struct AcceptedEvent: Sendable {
    /// Assigned at ingest; also the `Idempotency-Key` on every delivery attempt.
    public let id: UUID
    /// Lower-cased email (an email's first recipient): events for one contact are
    /// delivered in acknowledgement order.
    public let contact: String
    /// The JSON object as received, less its `idempotencyKey` member when it had one.
    public let body: Data
    /// The client's `Idempotency-Key` (the HTTP header, or the body's `idempotencyKey`):
    /// a repeat within `ingest.idempotency_window` is answered with the first event's id.
    public let clientKey: String?
    /// Seconds after it is stored past which an email is parked `expired` instead of sent
    /// late; nil for track events, which are never too late.
    public let maxAge: Double?

    public init(id: UUID = .randomEventID(), contact: String, body: Data, clientKey: String? = nil, maxAge: Double? = nil) {
        self.clientKey = clientKey
        self.maxAge = maxAge
        self.id = id
        self.contact = contact
        self.body = body
    }
}

/// Why an event was refused at the door. The message is written for the person who
/// sent the event, because it is shown to them verbatim (NDJSON `error`, HTTP `message`).
public struct EventRejection: Error, Sendable, Equatable, CustomStringConvertible {
    public let message: String

    public init(_ message: String) {
        self.message = message
    }

    public var description: String { message }
}
