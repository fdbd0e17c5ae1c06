import Foundation

/// What a commit of new events did with each: stored, or a repeat of a client's
/// `Idempotency-Key` answered with the id its first event was given.
public struct EnqueueReceipt: Sendable, Equatable {
    /// The fresh id of each repeat, mapped to the first event's id.
    public var repeats: [UUID: UUID] = [:]
    /// Events not stored because another line of the `ClientKeyScope` holds their key.
    public var claimedElsewhere: [UUID: ClientKeyScope.Claim] = [:]

    /// How many of the events were stored.
    func storedCount(of events: Int) -> Int { events - repeats.count - claimedElsewhere.count }

    public init(repeats: [UUID: UUID] = [:]) {
        self.repeats = repeats
    }

    /// The id the client is told: its event's own, or the first event's for a repeat.
    public func acknowledgedID(of event: AcceptedEvent) -> UUID { acknowledgedID(ofEventWith: event.id) }

    public func acknowledgedID(ofEventWith id: UUID) -> UUID { repeats[id] ?? id }

    public func isRepeat(_ event: AcceptedEvent) -> Bool { repeats[event.id] != nil }
}
