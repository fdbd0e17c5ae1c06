import Dispatch
import Foundation
import Logging
import Synchronization

/// Delivers stored events to Plunk.
///
/// All state lives on one serial `DispatchQueue`. The sender works in turns: a turn
/// records every outcome that arrived since the last one and claims events for the free
/// request slots and a ready reserve, in one SQLite transaction that runs on a queue of
/// its own, so answers keep being handled and ready events sent while it commits. Turns
/// are triggered by ingest commits, by answers, and by one `DispatchSourceTimer` set for
/// the next due retry or the end of a pause (wall-clock deadlines, so a suspend or clock
/// step cannot stretch a pause).
public final class Sender: @unchecked Sendable {
    public struct Settings: Sendable {
        public var apiKey: APIKey?
        public var concurrency: Int
        public var retry: RetryPolicy
        /// Consecutive transient failures after which the destination counts as failing:
        /// one probe at a time, spaced by backoff, until a success.
        public var failingAfter: Int = 3

        public init(apiKey: APIKey?, concurrency: Int, retry: RetryPolicy) {
            self.apiKey = apiKey
            self.concurrency = concurrency
            self.retry = retry
        }
    }

    let queue = DispatchQueue(label: "plunkd.sender")
    /// Where the store's transactions run, one at a time, off the sender's queue.
    let storeQueue = DispatchQueue(label: "plunkd.sender.store")
    let wakePending = Atomic(false)
    /// Whether a commit of new events could give the sender something to do: false
    /// while sending is not allowed (no key, a hold, a pause, a block) and while every
    /// slot and the reserve are full. Then the turn that ends that state claims whatever
    /// arrived meanwhile, so waking the sender's thread after every commit would only
    /// cost ingest a thread wake-up per event, on the round trip of every client. Set by
    /// a turn before its claim reads the store, and read by `wake` after the commit: a
    /// commit that saw `false` is visible to the claim of that turn.
    let newEventsUseful = Atomic(true)
    /// Wake-ups that reached the sender's queue; for tests.
    let wakeUps = Atomic(0)
    let outbox: Outbox
    let transport: any PlunkTransport
    let logger: Logger
    let clock: @Sendable () -> Date
    let unitRandom: @Sendable () -> Double
    let metrics: DeliveryMetrics

    // Confined to `queue`.
    var settings: Settings
    var inFlight: [Int64: ClaimedEvent] = [:]
    /// Claimed, not sent yet, in claim order: sent the moment a slot frees.
    var ready: [ClaimedEvent] = []
    /// Set while a store transaction runs; a turn asked for meanwhile runs after it.
    var storeBusySince: Date?
    var turnDeferred = false
    var sentAt: [Int64: Date] = [:]
    var moves: [EventMove] = []
    var counters: [OutboxCounter: Int] = [:]
    var turnScheduled = false
    /// Pause, hold, block, failure runs: the decisions about Plunk as a whole.
    var gate: DestinationGate
    var timer: DispatchSourceTimer?
    var timerDeadline: Date?
    var stopping = false
    var drainWaiters: [CheckedContinuation<Void, Never>] = []
    var lastSuccess: Date?
    var lastError: String?
    var lastErrorStatus: Int?
    var lastErrorAt: Date?
    var loggedState: DeliveryState?
    /// A 409 without details is warned about once per run.
    var warnedUnconfirmedDuplicate = false
    /// The last transient failure logged, so a run of the same failure is logged once.
    var lastLoggedFailure: String?
    var storageFailing = false
    var recentDeliveries = RecentDeliveries()
    var stateObserver: (@Sendable (DeliveryState) -> Void)?

    public init(
        outbox: Outbox, transport: any PlunkTransport, settings: Settings, logger: Logger,
        clock: @escaping @Sendable () -> Date = { Date() },
        unitRandom: @escaping @Sendable () -> Double = { Double.random(in: 0..<1) },
        metrics: DeliveryMetrics = DeliveryMetrics()
    ) {
        self.metrics = metrics
        self.outbox = outbox
        self.transport = transport
        self.settings = settings
        self.logger = logger
        self.clock = clock
        self.unitRandom = unitRandom
        gate = DestinationGate(failingAfter: settings.failingAfter)
    }

    /// Puts events left in flight by a crash back in line, restores a stored pause or
    /// hold, and starts delivering.
    public func start() throws {
        let released = try outbox.releaseInFlight()
        if released > 0 {
            logger.notice("\(released) events were in flight when plunkd stopped; they will be sent again with the same Idempotency-Key")
        }
        let stored = try outbox.loadHold()
        try queue.sync {
            gate = DestinationGate(failingAfter: settings.failingAfter, hold: stored)
            try reconcileHoldWithKey()
            logStateIfChanged()
            scheduleTurn()
        }
    }

    /// New events were stored. Called after every ingest commit, so it costs one atomic
    /// load when new events are of no use now, and one exchange when a wake-up is
    /// already on its way.
    public func wake() {
        guard newEventsUseful.load(ordering: .sequentiallyConsistent) else { return }
        guard !wakePending.exchange(true, ordering: .acquiringAndReleasing) else { return }
        queue.async {
            self.wakeUps.add(1, ordering: .relaxed)
            self.wakePending.store(false, ordering: .releasing)
            self.scheduleTurn()
        }
    }

    /// The operator lifts a quota pause or an auth hold now (`plunkd resume`).
    public func resume() throws -> String {
        try queue.sync {
            try recordNow()
            var lifted: [String] = []
            if gate.hold.pausedUntil != nil { lifted.append("quota pause") }
            if gate.hold.refusedKeyFingerprint != nil {
                lifted.append("auth hold")
                let requeued = try outbox.requeueParked(reason: .unauthorized, now: clock())
                if requeued > 0 { lifted.append("\(requeued) unauthorized events back in line") }
            }
            gate.resume()
            try outbox.saveHold(gate.hold)
            gate.holdChanged = false
            logger.info("resumed by operator", metadata: ["lifted": "\(lifted.isEmpty ? "nothing was paused" : lifted.joined(separator: ", "))"])
            scheduleTurn()
            return lifted.isEmpty ? "nothing was paused or held" : "lifted: " + lifted.joined(separator: ", ")
        }
    }

    /// A new key (config reload): an auth hold for another key ends and its events go back in line.
    public func updateAPIKey(_ key: APIKey?) throws {
        try update(apiKey: key, retry: nil)
    }

    /// Applies a reloaded key and retry policy; the next turn uses them.
    public func update(apiKey key: APIKey?, retry: RetryPolicy?) throws {
        try queue.sync {
            if let retry { settings.retry = retry }
            settings.apiKey = key
            try reconcileHoldWithKey()
            logStateIfChanged()
            scheduleTurn()
        }
    }

    public func snapshot() -> SenderSnapshot {
        queue.sync {
            let now = clock()
            return SenderSnapshot(
                state: currentState(now: now), inFlight: inFlight.count, pausedUntil: gate.hold.pausedUntil,
                heldSince: gate.hold.refusedKeyFingerprint != nil ? gate.hold.heldSince : nil, blockedUntil: gate.blockedUntil,
                consecutiveFailures: gate.consecutiveFailures, lastSuccess: lastSuccess, lastError: lastError,
                lastErrorStatus: lastErrorStatus, lastErrorAt: lastErrorAt,
                deliveredLastHour: recentDeliveries.lastHour(now: now), storageFailing: storageFailing)
        }
    }

    /// Called on the sender's queue with every change of state (systemd's `STATUS=`).
    /// Set before `start`.
    public func observeState(_ observer: @escaping @Sendable (DeliveryState) -> Void) {
        queue.sync { stateObserver = observer }
    }

    /// Answers on the sender's own queue whether delivery is making progress: a wedged
    /// queue never answers, and a request unanswered for longer than `maxRequestAge`
    /// (its timeout plus slack) means the HTTP side lost it. For the systemd watchdog.
    public func checkProgress(maxRequestAge: TimeInterval, reply: @escaping @Sendable (Bool) -> Void) {
        queue.async {
            let now = self.clock()
            let oldest = [self.sentAt.values.min(), self.storeBusySince].compactMap { $0 }.min()
            reply(oldest.map { now.timeIntervalSince($0) <= maxRequestAge } ?? true)
        }
    }

    /// Stops claiming, waits up to `grace` for requests in flight, records their outcomes.
    /// Events still in flight after that are sent again at the next start.
    public func shutdown(grace: Duration) async {
        await withTaskGroup(of: Void.self) { group in
            group.addTask {
                await withCheckedContinuation { continuation in
                    self.queue.async {
                        self.stopping = true
                        self.timer?.cancel()
                        if self.inFlight.isEmpty {
                            continuation.resume()
                        } else {
                            self.drainWaiters.append(continuation)
                        }
                    }
                }
            }
            group.addTask { try? await Task.sleep(for: grace) }
            await group.next()
            group.cancelAll()
        }
        // A store transaction still running ends first; its claims come back before the
        // second block and are given back with everything else.
        queue.sync {
            stopping = true
            if storeBusySince != nil { storeQueue.sync {} }
        }
        queue.sync {
            releaseReady()
            do {
                try recordNow()
            } catch {
                logger.error("cannot record the last delivery outcomes: \(error); those events will be sent again at the next start")
            }
            if !inFlight.isEmpty {
                logger.warning("\(inFlight.count) requests still in flight after the shutdown grace; they will be sent again at the next start")
            }
            releaseDrainWaiters()
        }
        await transport.shutdown()
    }

    /// Lets `shutdown` go on: every request in flight has been answered (or the grace ran out).
    func releaseDrainWaiters() {
        let waiters = drainWaiters
        drainWaiters = []
        waiters.forEach { $0.resume() }
    }

    func send(_ event: ClaimedEvent) {
        guard let key = settings.apiKey else { return }
        sentAt[event.seq] = clock()
        let started = DispatchTime.now()
        let duration = metrics.requestDuration
        transport.post(body: event.body, idempotencyKey: event.idempotencyKey, apiKey: key) { answer in
            duration.recordNanoseconds(Int64(DispatchTime.now().uptimeNanoseconds - started.uptimeNanoseconds))
            self.queue.async { self.handle(answer, for: event) }
        }
    }
}
