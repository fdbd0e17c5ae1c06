import Foundation
import Synchronization

/// The stores whose clients' `Idempotency-Key`s are one namespace: the lines of one
/// daemon, which send to one Plunk project, where keys are per project across
/// endpoints. Without it a key used for a track event and again for an email would be
/// taken by each line, and Plunk would answer the second 409 `IDEMPOTENCY_KEY_REUSED`
/// with the first's 2xx: the email counted delivered and never sent, after the client
/// was told it was queued.
public final class ClientKeyScope: Sendable {
    /// A key another line of the scope holds: where, and for which event.
    public struct Claim: Sendable, Equatable {
        /// The line that holds it.
        public var line: EventKind
        public var key: String
        public var firstID: UUID

        /// What the client is told: not retryable, since the same key fails the same way.
        public var refusal: String {
            "Idempotency-Key \"\(key.prefix(80))\" is already used by an \(line.noun) sent to /v1\(line.plunkPath) (id \(firstID.uuidString.lowercased())) within ingest.idempotency_window: Plunk's keys are per project across /v1/track and /v1/send, so Plunk would take this one for a repeat and never act on it; give it a key of its own"
        }
    }

    private struct Member: Sendable {
        let line: EventKind
        let outbox: Outbox
    }

    private let members = Mutex<[Member]>([])
    /// Held around every commit that carries a client key, in whichever line: a key
    /// looked up in the other stores stays unclaimed there until this commit has claimed
    /// it in its own.
    private let keyedCommits = NSLock()

    public init() {}

    /// Adds a line's store to the scope (at start-up, before ingest opens).
    public func register(line: EventKind, outbox: Outbox) {
        members.withLock { $0.append(Member(line: line, outbox: outbox)) }
    }

    func holdingKeyedCommits<T>(_ body: () throws -> T) rethrows -> T {
        keyedCommits.lock()
        defer { keyedCommits.unlock() }
        return try body()
    }

    /// Which other line holds `key` unexpired at `stamp`, if any.
    func claim(of key: String, besides outbox: Outbox, at stamp: Double) throws -> Claim? {
        for member in members.withLock({ $0 }) where member.outbox !== outbox {
            if let first = try member.outbox.pool.read({ db in try OutboxQueries.clientKeyOwner(db, key: key, at: stamp) }) {
                return Claim(line: member.line, key: key, firstID: first)
            }
        }
        return nil
    }
}
