import CoreMetrics
import Dispatch
import Foundation
import Logging
import Synchronization

/// Deletes parked events once they have been parked for longer than
/// `storage.parked_max_age`: events carry email addresses and personal data, and an
/// operator may owe their users a limit on how long those are kept.
///
/// Off unless configured. A pass runs at start and then every `interval`, on the queue
/// it is given (the line's store queue, so store work stays off the event loops and
/// one line's store is written from one place besides ingest's committer). Each deleted
/// event is logged by id and counted, in the store (`retention_deleted_total`, shown by
/// `plunkd status`) and in `/metrics`.
public final class ParkedRetention: Sendable {
    /// Deleted per transaction, so a first pass over a large backlog of parked events
    /// never holds the writer for long; the pass goes on until nothing is due.
    static let batch = 500

    private let outbox: Outbox
    private let maxAge: TimeInterval
    private let interval: TimeInterval
    private let queue: DispatchQueue
    private let logger: Logger
    private let deleted: Counter
    private let clock: @Sendable () -> Date
    /// Set by `stop`: a chain of batches still queued ends without touching the store.
    private let stopped = Atomic(false)
    /// Dispatch's timer is not Sendable; it is only made, armed and cancelled under this lock.
    private let timer = Mutex<(any DispatchSourceTimer)?>(nil)

    /// - Parameters:
    ///   - maxAge: `storage.parked_max_age` in seconds.
    ///   - interval: between passes; by default a twentieth of the age, between one
    ///     second and ten minutes, so an event outlives its age by at most that.
    public init(
        outbox: Outbox, maxAge: TimeInterval, interval: TimeInterval? = nil, queue: DispatchQueue, logger: Logger,
        deleted: Counter, clock: @escaping @Sendable () -> Date = { Date() }
    ) {
        self.outbox = outbox
        self.maxAge = maxAge
        self.interval = interval ?? min(600, max(1, maxAge / 20))
        self.queue = queue
        self.logger = logger
        self.deleted = deleted
        self.clock = clock
    }

    public func start() {
        timer.withLock { timer in
            guard timer == nil else { return }
            let source = DispatchSource.makeTimerSource(queue: queue)
            source.schedule(deadline: .now(), repeating: .milliseconds(Int(interval * 1000)), leeway: .milliseconds(100))
            source.setEventHandler { [self] in step(cutoff: clock().addingTimeInterval(-maxAge)) }
            source.activate()
            timer = source
        }
    }

    /// Stops the timer; returns once a pass under way has ended (without blocking a
    /// thread of the caller's while it runs).
    public func stop() async {
        stopped.store(true, ordering: .sequentiallyConsistent)
        timer.withLock { $0?.cancel() }
        await withCheckedContinuation { (done: CheckedContinuation<Void, Never>) in queue.async { done.resume() } }
    }

    /// Deletes one batch due at `cutoff` and, when there may be more, queues the next
    /// behind whatever else the queue holds: the line's sender commits on this queue too,
    /// and a first pass over a large backlog of parked events must not hold delivery.
    func step(cutoff: Date) {
        guard !stopped.load(ordering: .sequentiallyConsistent), deleteBatch(cutoff: cutoff) == Self.batch else { return }
        queue.async { [self] in step(cutoff: cutoff) }
    }

    /// Deletes up to `batch` events parked before `cutoff`, logging and counting each.
    private func deleteBatch(cutoff: Date) -> Int {
        let gone: [RetentionDeletion]
        do {
            gone = try outbox.deleteParked(parkedBefore: cutoff, limit: Self.batch)
        } catch {
            logger.error("retention: cannot delete parked events past storage.parked_max_age: \(error)")
            return 0
        }
        for event in gone {
            logger.notice(
                "parked event deleted by retention",
                metadata: [
                    "id": "\(event.id)", "reason": "\(event.reason)",
                    "parked_at": "\(event.parkedAt.formatted(.iso8601))", "parked_max_age_seconds": "\(Int(maxAge))",
                ])
        }
        deleted.increment(by: gone.count)
        return gone.count
    }
}
