import Dispatch
import Foundation
import Logging
import Synchronization

/// Delivers stored events to Plunk.
///
/// All state lives on one serial `DispatchQueue`. The sender works in turns: a turn
/// records every outcome that arrived since the last one and claims due events for the
/// free request slots, in one SQLite transaction. Turns are triggered by ingest commits,
/// by answers, and by one `DispatchSourceTimer` set for the next due retry or the end of
/// a pause (wall-clock deadlines, so a suspend or clock step cannot stretch a pause).
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

    private let queue = DispatchQueue(label: "plunkd.sender")
    private let wakePending = Atomic(false)
    private let outbox: Outbox
    private let transport: any PlunkTransport
    private let logger: Logger
    private let clock: @Sendable () -> Date
    private let unitRandom: @Sendable () -> Double

    // Confined to `queue`.
    private var settings: Settings
    private var inFlight: [Int64: ClaimedEvent] = [:]
    private var moves: [EventMove] = []
    private var counters: [OutboxCounter: Int] = [:]
    private var turnScheduled = false
    private var hold = StoredDeliveryHold()
    private var holdDirty = false
    private var blockedUntil: Date?
    private var blockedByRateLimit = false
    private var consecutiveFailures = 0
    private var consecutiveRateLimits = 0
    private var timer: DispatchSourceTimer?
    private var timerDeadline: Date?
    private var stopping = false
    private var drainWaiters: [CheckedContinuation<Void, Never>] = []
    private var lastSuccess: Date?
    private var lastError: String?
    private var lastErrorAt: Date?
    private var loggedState: DeliveryState?
    private var storageFailing = false

    public init(
        outbox: Outbox, transport: any PlunkTransport, settings: Settings, logger: Logger,
        clock: @escaping @Sendable () -> Date = { Date() },
        unitRandom: @escaping @Sendable () -> Double = { Double.random(in: 0..<1) }
    ) {
        self.outbox = outbox
        self.transport = transport
        self.settings = settings
        self.logger = logger
        self.clock = clock
        self.unitRandom = unitRandom
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
            hold = stored
            try reconcileHoldWithKey()
            logStateIfChanged()
            scheduleTurn()
        }
    }

    /// New events were stored. Called after every ingest commit, so it costs one atomic
    /// exchange when a wake-up is already on its way.
    public func wake() {
        guard !wakePending.exchange(true, ordering: .acquiringAndReleasing) else { return }
        queue.async {
            self.wakePending.store(false, ordering: .releasing)
            self.scheduleTurn()
        }
    }

    /// The operator lifts a quota pause or an auth hold now (`plunkd resume`).
    public func resume() throws -> String {
        try queue.sync {
            var lifted: [String] = []
            if hold.pausedUntil != nil { lifted.append("quota pause") }
            if hold.refusedKeyFingerprint != nil {
                lifted.append("auth hold")
                let requeued = try outbox.requeueParked(reason: .unauthorized, now: clock())
                if requeued > 0 { lifted.append("\(requeued) unauthorized events back in line") }
            }
            hold = StoredDeliveryHold()
            try outbox.saveHold(hold)
            blockedUntil = nil
            blockedByRateLimit = false
            consecutiveFailures = 0
            logger.info("resumed by operator", metadata: ["lifted": "\(lifted.isEmpty ? "nothing was paused" : lifted.joined(separator: ", "))"])
            scheduleTurn()
            return lifted.isEmpty ? "nothing was paused or held" : "lifted: " + lifted.joined(separator: ", ")
        }
    }

    /// A new key (config reload): an auth hold for another key ends and its events go back in line.
    public func updateAPIKey(_ key: APIKey?) throws {
        try queue.sync {
            settings.apiKey = key
            try reconcileHoldWithKey()
            logStateIfChanged()
            scheduleTurn()
        }
    }

    public func snapshot() -> SenderSnapshot {
        queue.sync {
            SenderSnapshot(
                state: currentState(now: clock()), inFlight: inFlight.count, pausedUntil: hold.pausedUntil,
                heldSince: hold.refusedKeyFingerprint != nil ? hold.heldSince : nil, blockedUntil: blockedUntil,
                consecutiveFailures: consecutiveFailures, lastSuccess: lastSuccess, lastError: lastError,
                lastErrorAt: lastErrorAt)
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
        queue.sync {
            turn()
            if !inFlight.isEmpty {
                logger.warning("\(inFlight.count) requests still in flight after the shutdown grace; they will be sent again at the next start")
            }
            let waiters = drainWaiters
            drainWaiters = []
            waiters.forEach { $0.resume() }
        }
        await transport.shutdown()
    }

    // MARK: Turns

    private func scheduleTurn() {
        guard !turnScheduled else { return }
        turnScheduled = true
        queue.async { self.turn() }
    }

    private func turn() {
        turnScheduled = false
        let now = clock()
        expirePause(now: now)
        let limit = claimLimit(now: now)
        if moves.isEmpty && counters.isEmpty && !holdDirty && limit == 0 {
            armTimer(now: now, nothingDue: false)
            logStateIfChanged()
            return
        }
        do {
            if holdDirty {
                try outbox.saveHold(hold)
                holdDirty = false
            }
            let claimed = try outbox.recordAndClaim(
                moves: moves, counters: counters, claimLimit: limit, now: now)
            moves.removeAll(keepingCapacity: true)
            counters.removeAll(keepingCapacity: true)
            if storageFailing {
                storageFailing = false
                logger.info("storage accepts delivery updates again")
            }
            for event in claimed {
                inFlight[event.seq] = event
                send(event)
            }
            if claimed.count < limit || limit == 0 {
                armTimer(now: now, nothingDue: claimed.count < limit)
            }
        } catch {
            if !storageFailing {
                logger.error("cannot record delivery outcomes: \(error); retrying")
                storageFailing = true
            }
            armTimer(at: now.addingTimeInterval(1))
        }
        logStateIfChanged()
    }

    /// Free request slots, or 0 while delivery must not send.
    private func claimLimit(now: Date) -> Int {
        guard !stopping, settings.apiKey != nil, hold.refusedKeyFingerprint == nil, hold.pausedUntil == nil else { return 0 }
        if let blockedUntil, blockedUntil > now { return 0 }
        let slots = consecutiveFailures >= settings.failingAfter ? 1 : settings.concurrency
        return max(0, slots - inFlight.count)
    }

    private func send(_ event: ClaimedEvent) {
        guard let key = settings.apiKey else { return }
        transport.post(body: event.body, idempotencyKey: event.id.uuidString.lowercased(), apiKey: key) { answer in
            self.queue.async { self.handle(answer, for: event) }
        }
    }

    // MARK: Outcomes

    private func handle(_ answer: PlunkAnswer, for event: ClaimedEvent) {
        inFlight[event.seq] = nil
        let now = clock()
        let outcome = OutcomeClassifier.classify(answer, now: now)
        counters[.attempts(outcome: outcome.label), default: 0] += 1
        switch outcome {
        case .delivered, .duplicate:
            moves.append(.delivered(seq: event.seq))
            counters[.delivered, default: 0] += 1
            if outcome == .duplicate { counters[.duplicatesSuppressed, default: 0] += 1 }
            recordSuccess(now: now)
        case .rejected(let status, let detail):
            moves.append(.park(seq: event.seq, reason: .rejected, status: status, error: Self.excerpt(answer)))
            counters[.parked(.rejected), default: 0] += 1
            recordError(detail, now: now)
            logger.warning("event parked", metadata: ["id": "\(event.id.uuidString.lowercased())", "reason": "rejected", "status": "\(status)", "answer": "\(detail)"])
            recordSuccess(now: now, delivered: false)
        case .unauthorized(let status, let detail):
            moves.append(.park(seq: event.seq, reason: .unauthorized, status: status, error: Self.excerpt(answer)))
            counters[.parked(.unauthorized), default: 0] += 1
            recordError(detail, now: now)
            logger.warning("event parked", metadata: ["id": "\(event.id.uuidString.lowercased())", "reason": "unauthorized", "status": "\(status)"])
            if hold.refusedKeyFingerprint == nil, let key = settings.apiKey {
                hold.refusedKeyFingerprint = key.fingerprint
                hold.heldSince = now
                holdDirty = true
                logger.error("Plunk refused the API key (\(detail)); delivery is held until the key changes or `plunkd resume`")
            }
        case .quotaExceeded(let detail):
            moves.append(.retry(seq: event.seq, due: now, countsAsAttempt: false, status: 402, error: detail))
            recordError(detail, now: now)
            if hold.pausedUntil == nil {
                hold.pausedUntil = MonthBoundary.startOfNextMonth(after: now)
                hold.pauseReason = "quota"
                holdDirty = true
                logger.error("Plunk's monthly quota is spent (\(detail)); delivery paused until \(Self.iso(hold.pausedUntil!)). After a plan upgrade: plunkd resume")
            }
        case .rateLimited(let retryAfter, let detail):
            consecutiveRateLimits += 1
            let wait = min(settings.retry.maxBackoff,
                           retryAfter ?? settings.retry.delay(afterFailures: consecutiveRateLimits, unit: unitRandom))
            moves.append(.retry(seq: event.seq, due: now.addingTimeInterval(wait), countsAsAttempt: false, status: 429, error: detail))
            recordError(detail, now: now)
            block(until: now.addingTimeInterval(wait), rateLimit: true)
        case .transient(let status, let detail):
            recordError(detail, now: now)
            if now.timeIntervalSince(event.receivedAt) >= settings.retry.maxAge {
                moves.append(.park(seq: event.seq, reason: .expired, status: status, error: Self.excerpt(answer)))
                counters[.parked(.expired), default: 0] += 1
                logger.warning("event parked", metadata: ["id": "\(event.id.uuidString.lowercased())", "reason": "expired", "last_error": "\(detail)"])
            } else {
                let delay = settings.retry.delay(afterFailures: event.attempts + 1, unit: unitRandom)
                moves.append(.retry(seq: event.seq, due: now.addingTimeInterval(delay), countsAsAttempt: true, status: status, error: detail))
            }
            consecutiveFailures += 1
            if consecutiveFailures >= settings.failingAfter {
                let gap = settings.retry.delay(afterFailures: consecutiveFailures - settings.failingAfter + 1, unit: unitRandom)
                block(until: now.addingTimeInterval(gap), rateLimit: false)
            }
        }
        scheduleTurn()
        if stopping && inFlight.isEmpty {
            turn()
            let waiters = drainWaiters
            drainWaiters = []
            waiters.forEach { $0.resume() }
        }
    }

    /// A sane answer from the server (any 2xx, or an event-level refusal) ends a failure run.
    private func recordSuccess(now: Date, delivered: Bool = true) {
        if delivered { lastSuccess = now }
        consecutiveFailures = 0
        consecutiveRateLimits = 0
        if !blockedByRateLimit { blockedUntil = nil }
    }

    private func recordError(_ detail: String, now: Date) {
        lastError = detail
        lastErrorAt = now
    }

    private func block(until date: Date, rateLimit: Bool) {
        if let current = blockedUntil, current >= date { return }
        blockedUntil = date
        blockedByRateLimit = rateLimit
    }

    // MARK: Pause, hold, timer

    private func expirePause(now: Date) {
        if let until = hold.pausedUntil, until <= now {
            logger.info("quota pause over: a new month began; delivering again")
            hold.pausedUntil = nil
            hold.pauseReason = nil
            holdDirty = true
        }
        if let until = blockedUntil, until <= now {
            blockedUntil = nil
            blockedByRateLimit = false
        }
    }

    private func reconcileHoldWithKey() throws {
        guard let refused = hold.refusedKeyFingerprint, let key = settings.apiKey, key.fingerprint != refused else { return }
        let requeued = try outbox.requeueParked(reason: .unauthorized, now: clock())
        hold.refusedKeyFingerprint = nil
        hold.heldSince = nil
        try outbox.saveHold(hold)
        logger.info("the API key changed: auth hold lifted, \(requeued) unauthorized events back in line")
    }

    private func armTimer(now: Date, nothingDue: Bool) {
        var wake: Date?
        if let until = hold.pausedUntil { wake = until }
        if let until = blockedUntil { wake = min(wake ?? until, until) }
        if nothingDue, wake == nil, let due = try? outbox.nextDueDate() { wake = max(due, now) }
        if let wake { armTimer(at: wake) }
    }

    /// One timer: the earliest reason to look again. Capped at a minute, so a clock step
    /// or a missed wake-up is noticed within a minute whatever happens.
    private func armTimer(at date: Date) {
        guard !stopping else { return }
        let capped = min(date, clock().addingTimeInterval(60))
        if let current = timerDeadline, current <= capped, current > clock() { return }
        timer?.cancel()
        let source = DispatchSource.makeTimerSource(queue: queue)
        let seconds = max(0, capped.timeIntervalSince(clock()))
        source.schedule(wallDeadline: .now() + seconds, leeway: .milliseconds(5))
        source.setEventHandler { [weak self] in
            guard let self else { return }
            self.timerDeadline = nil
            self.scheduleTurn()
        }
        source.resume()
        timer = source
        timerDeadline = capped
    }

    // MARK: State

    private func currentState(now: Date) -> DeliveryState {
        if settings.apiKey == nil { return .noAPIKey }
        if hold.refusedKeyFingerprint != nil { return .authHeld }
        if hold.pausedUntil != nil { return .quotaPaused }
        if let blockedUntil, blockedUntil > now { return blockedByRateLimit ? .rateLimited : .backingOff }
        if consecutiveFailures > 0 { return .backingOff }
        return inFlight.isEmpty ? .idle : .delivering
    }

    private func logStateIfChanged() {
        let state = currentState(now: clock())
        guard state != loggedState else { return }
        // delivering/idle flip with every burst; only the first and the problem states are worth a line.
        let quiet: Set<DeliveryState> = [.delivering, .idle]
        if loggedState == nil || !(quiet.contains(state) && quiet.contains(loggedState!)) {
            logger.info("delivery state: \(state.rawValue)")
        }
        loggedState = state
    }

    private static func excerpt(_ answer: PlunkAnswer) -> String {
        switch answer {
        case .response(_, _, let body): String(decoding: body, as: UTF8.self)
        case .transportFailure(let reason): reason
        }
    }

    static func iso(_ date: Date) -> String {
        ISO8601DateFormatter().string(from: date)
    }
}
