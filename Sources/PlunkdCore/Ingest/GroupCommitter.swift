import Foundation
import Logging

/// Turns many small submissions into few fsyncs.
///
/// Connections hand over the events of one read at a time; a single committer thread
/// takes everything that queued up while the previous transaction was committing and
/// stores it in one transaction. Under load many clients share each fsync; when idle, a
/// lone event is committed at once, with no timer adding latency.
///
/// The committer is a plain thread rather than async code because GRDB's synchronous
/// API must not run on the cooperative pool, and an fsync must not stall an event loop.
/// (Committing inline on the event loop when the store is idle was tried: it saved no
/// measurable latency for a lone client and cost keep-alive HTTP clients about 25%.)
public final class GroupCommitter: @unchecked Sendable {
    public typealias Completion = @Sendable (Result<Void, IngestRefusal>) -> Void

    private struct Submission {
        let events: [TrackEvent]
        let completion: Completion
    }

    private let outbox: Outbox
    private let maxPending: Int
    private let maxBatchEvents: Int
    private let logger: Logger
    /// Called after every successful commit: how delivery learns of new events without
    /// ingest knowing delivery exists.
    private let didCommit: @Sendable () -> Void
    let metrics: IngestMetrics

    // Guarded by `condition`.
    private let condition = NSCondition()
    private var queue: [Submission] = []
    private var queuedEvents = 0
    private var stopping = false
    private var committing = false
    private var lastFailure: OutboxError.Kind?
    private var thread: Thread?

    public init(
        outbox: Outbox, maxPending: Int, maxBatchEvents: Int = 1024, logger: Logger,
        metrics: IngestMetrics = IngestMetrics(), didCommit: @escaping @Sendable () -> Void = {}
    ) {
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
    /// thread once they are durable, or refused (on the calling thread when refused at
    /// once); callers hop to their own executor.
    public func submit(_ events: [TrackEvent], completion: @escaping Completion) {
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
        condition.broadcast()
        condition.unlock()
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
            for submission in batch {
                submission.completion(result)
            }
            switch result {
            case .success:
                metrics.received.increment(by: events.count)
                didCommit()
            case .failure(let refusal):
                metrics.count(refusal, events: events.count)
            }

            condition.lock()
            committing = false
            condition.broadcast()
            condition.unlock()
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

    private func commit(_ events: [TrackEvent]) -> Result<Void, IngestRefusal> {
        do {
            try outbox.enqueue(events)
            if let previous = lastFailure {
                logger.info("storage accepts events again", metadata: ["after": "\(previous)"])
                lastFailure = nil
            }
            return .success(())
        } catch {
            if lastFailure != error.kind {
                logger.error("storage refuses events: \(error)")
                lastFailure = error.kind
            }
            switch error.kind {
            case .full: return .failure(.storageFull)
            case .unusable, .failed, .missing: return .failure(.storageFailed(error.detail))
            }
        }
    }
}
