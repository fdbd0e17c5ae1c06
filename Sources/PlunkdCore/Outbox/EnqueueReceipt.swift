import Foundation

/// What a commit of new events did with each: stored, or a repeat of a client's
/// `Idempotency-Key` answered with the id its first event was given.
public struct EnqueueReceipt: Sendable, Equatable {
    /// The fresh id of each repeat, mapped to the first event's id.
    public var repeats: [UUID: UUID] = [:]

    public init(repeats: [UUID: UUID] = [:]) {
        self.repeats = repeats
    }

    /// The id the client is told: its event's own, or the first event's for a repeat.
    public func acknowledgedID(of event: AcceptedEvent) -> UUID { acknowledgedID(ofEventWith: event.id) }

    public func acknowledgedID(ofEventWith id: UUID) -> UUID { repeats[id] ?? id }

    public func isRepeat(_ event: AcceptedEvent) -> Bool { repeats[event.id] != nil }
}
