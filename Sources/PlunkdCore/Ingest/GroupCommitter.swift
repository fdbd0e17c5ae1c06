import Foundation
import Logging
import Synchronization

/// Turns many small submissions into few fsyncs.
///
/// Connections hand over the events of one read at a time; a single committer thread
/// takes everything that queued up while the previous transaction was committing and
/// stores it in one transaction. Under load many clients share each fsync; when idle, a
/// lone event is committed at once, with no timer adding latency.
///
/// The committer is a plain thread rather than async code because GRDB's synchronous
/// API must not run on the cooperative pool, and a store's fsyncs must never stall an
/// event loop (and every other connection and status request it serves): every commit
/// runs here, even a lone event to an idle store. Committing that one on the event loop
/// saved a lone client two thread wake-ups (55 % to 62 % of the fsync floor in one run),
/// but held the loop for a whole fsync, and a stalling disk held it for longer.
///
/// Unchecked `Sendable`: its mutable state is guarded by `condition`, an `NSCondition` because the
/// committer thread sleeps on it (a `Mutex` cannot be waited on).
public final class GroupCommitter: @unchecked Sendable {
    /// Success carries the receipt of the whole transaction (`acknowledgedID(of:)` gives
    /// each event's answer); every submission of a batch gets the same one.
    public typealias Completion = @Sendable (Result<EnqueueReceipt, IngestRefusal>) -> Void

    private struct Submission {
        let events: [AcceptedEvent]
        let completion: Completion
    }

    private let outbox: Outbox
    private let maxPending: Int
    private let maxBatchEvents: Int
    private let logger: Logger
    /// Called after every successful commit: how delivery learns of new events without
    /// ingest knowing delivery exists.
    private let didCommit: @Sendable () -> Void
    /// The lines whose client keys are one namespace (Plunk's are per project).
    private let keyScope: ClientKeyScope?
    let metrics: IngestMetrics

    /// What the last commit failed with, so a failure is logged once, not per commit.
    private let lastFailure = Mutex<OutboxError.Kind?>(nil)

    // Guarded by `condition`.
    private let condition = NSCondition()
    private var queue: [Submission] = []
    private var queuedEvents = 0
    private var stopping = false
    private var committing = false
    private var thread: Thread?

    public init(
        outbox: Outbox, maxPending: Int, maxBatchEvents: Int = 1024, logger: Logger,
        metrics: IngestMetrics = IngestMetrics(), keyScope: ClientKeyScope? = nil, didCommit: @escaping @Sendable () -> Void = {}
    ) {
        self.keyScope = keyScope
        self.metrics = metrics
        self.didCommit = didCommit
        self.outbox = outbox
        self.maxPending = maxPending
        self.maxBatchEvents = maxBatchEvents
        self.logger = logger
    }

    public func start() {
        condition.lock()
        defer { condition.unlock() }
        guard thread == nil else { return }
        let thread = Thread { [self] in run() }
        thread.name = "plunkd-commit"
        thread.start()
        self.thread = thread
    }

    /// Queues `events` for the next transaction. `completion` runs on the committer
    /// thread once they are durable, or on the calling thread when refused at once;
    /// callers hop to their own executor.
    public func submit(_ events: [AcceptedEvent], completion: @escaping Completion) {
        condition.lock()
        if stopping {
            condition.unlock()
            metrics.count(.shuttingDown, events: events.count)
            completion(.failure(.shuttingDown))
            return
        }
        if outbox.storedCount + queuedEvents + events.count > maxPending {
            condition.unlock()
            metrics.count(.queueFull(limit: maxPending), events: events.count)
            completion(.failure(.queueFull(limit: maxPending)))
            return
        }
        queue.append(Submission(events: events, completion: completion))
        queuedEvents += events.count
        let wakeCommitter = !committing && queue.count == 1
        condition.unlock()
        // Signalled after unlocking: a committer woken while this thread still held the
        // lock would only block on it again, one more sleep and wake-up per lone event.
        // Only an idle committer (queue empty, not committing) needs waking; a busy one
        // looks at the queue before it sleeps.
        if wakeCommitter { condition.signal() }
    }

    /// Nothing queued or being committed. A submission's completion runs before the
    /// committer's own bookkeeping, so a caller that just got its answer may still find
    /// the committer busy for a moment (tests wait for this before counting on an idle one).
    var isIdle: Bool {
        condition.lock()
        defer { condition.unlock() }
        return queue.isEmpty && !committing
    }

    /// Commits everything already submitted, refuses anything later, and returns once
    /// every submission has had its completion called.
    public func shutdown() {
        condition.lock()
        stopping = true
        condition.broadcast()
        while !queue.isEmpty || committing || thread != nil {
            condition.wait()
        }
        condition.unlock()
    }

    private func run() {
        while true {
            condition.lock()
            while queue.isEmpty && !stopping {
                condition.wait()
            }
            if queue.isEmpty {
                thread = nil
                condition.broadcast()
                condition.unlock()
                return
            }
            let batch = takeBatch()
            committing = true
            condition.unlock()

            let events = batch.flatMap(\.events)
            let result = commit(events)
            count(result, events: events.count)
            for submission in batch {
                submission.completion(result)
            }
            if case .success = result { didCommit() }

            condition.lock()
            committing = false
            condition.broadcast()
            condition.unlock()
        }
    }

    /// Counted before the completions run: a client holding its ack finds its event in
    /// the metrics. Delivery is woken after them, so the acks go out first.
    private func count(_ result: Result<EnqueueReceipt, IngestRefusal>, events: Int) {
        switch result {
        case .success(let receipt):
            metrics.received.increment(by: receipt.storedCount(of: events))
            if !receipt.repeats.isEmpty { metrics.repeated.increment(by: receipt.repeats.count) }
            if !receipt.claimedElsewhere.isEmpty { metrics.refusedKeyElsewhere.increment(by: receipt.claimedElsewhere.count) }
        case .failure(let refusal):
            metrics.count(refusal, events: events)
        }
    }

    /// Takes whole submissions up to `maxBatchEvents` (at least one), so one transaction
    /// stays short enough that a lone client behind a burst is not kept waiting long.
    private func takeBatch() -> [Submission] {
        var taken = 0
        var count = 0
        for submission in queue {
            if count > 0 && count + submission.events.count > maxBatchEvents { break }
            count += submission.events.count
            taken += 1
        }
        let batch = Array(queue.prefix(taken))
        queue.removeFirst(taken)
        queuedEvents -= count
        return batch
    }

    private func commit(_ events: [AcceptedEvent]) -> Result<EnqueueReceipt, IngestRefusal> {
        do {
            let receipt = try outbox.enqueue(events, scope: keyScope)
            if let previous = lastFailure.withLock({ last in
                defer { last = nil }
                return last
            }) {
                logger.info("storage accepts events again", metadata: ["after": "\(previous)"])
            }
            return .success(receipt)
        } catch {
            let kind = error.kind
            if lastFailure.withLock({ last in
                defer { last = kind }
                return last != kind
            }) {
                logger.error("storage refuses events: \(error)")
            }
            switch error.kind {
            case .full: return .failure(.storageFull)
            case .unusable, .failed, .missing: return .failure(.storageFailed(error.detail))
            }
        }
    }
}
