import Foundation
import Logging

/// Everything the sender decides, as a value: which claimed events go out and when, what
/// the store must record, when to look again, and what to log.
///
/// Events come in as method calls carrying the time they happen at (a turn, the store's
/// answer, Plunk's answer, the timer, a new key, a resume, a stop); what the sender must do
/// comes out as `DeliveryAction`s, taken with `takeActions()` and carried out in order by
/// `Sender`, the shell that owns the queue, the timer, HTTP and the store. Tests drive this
/// type directly with made-up times and answers: no queue, no clock, no sleep.
///
/// A turn records every outcome that arrived since the last one and claims events for the
/// free request slots and a ready reserve as large as the slots, in one store transaction.
/// The reserve means that when an answer frees a slot, the next request leaves at once
/// instead of after the next commit, so a slow Plunk's round trips are not lengthened by
/// the store's fsync.
struct DeliveryMachine {
    var settings: DeliverySettings
    /// Pause, hold, block and failure runs: the decisions about Plunk as a whole.
    var gate: DestinationGate
    /// The learned limit on requests in flight, when `plunk.concurrency` is `auto`.
    var adaptive: AdaptiveConcurrency?
    /// How often requests may start: `plunk.max_rate` and Plunk's `RateLimit-*` headers.
    var pacer = RequestPacer()
    /// Sent, not answered yet, with the time each left and its number (`RequestPacer`).
    var inFlight: [Int64: (event: ClaimedEvent, sentAt: Date, number: Int)] = [:]
    /// Claimed, not sent yet, in claim order: sent the moment a slot frees.
    private(set) var ready: [ClaimedEvent] = []
    /// Outcomes and counts not yet handed to the store.
    var moves: [EventMove] = []
    var counters: [OutboxCounter: Int] = [:]
    /// Set while a store transaction runs; a turn asked for meanwhile runs after it.
    private(set) var storeBusySince: Date?
    /// When the last store transaction ended: the next may wait a little for more
    /// answers (`storeMayWait`).
    private var lastStoreFinished: Date?
    /// How long after a transaction the next may wait to gather answers while the reserve
    /// keeps the slots full.
    static let storeBatchWindow: TimeInterval = 0.020
    private var turnDeferred = false
    private var turnScheduled = false
    private(set) var timerDeadline: Date?
    private(set) var stopping = false
    private(set) var storageFailing = false
    private(set) var loggedState: DeliveryState?
    // What `status` shows and what is logged once per cause.
    var lastSuccess: Date?
    var lastError: String?
    var lastErrorStatus: Int?
    var lastErrorAt: Date?
    var recentDeliveries = RecentDeliveries()
    /// A 409 without details is warned about once per run.
    var warnedUnconfirmedDuplicate = false
    /// The last transient failure logged, and its request's number (`RequestPacer`), so
    /// a run of the same failure is logged once.
    var lastLoggedFailure: (detail: String, number: Int)?
    /// Draws in [0, 1) for backoff jitter; injected so tests can fix it.
    let unitRandom: () -> Double
    private var actions: [DeliveryAction] = []

    init(settings: DeliverySettings, hold: StoredDeliveryHold = StoredDeliveryHold(), unitRandom: @escaping () -> Double) {
        self.settings = settings
        self.unitRandom = unitRandom
        gate = DestinationGate(failingAfter: settings.failingAfter, hold: hold)
        adaptive = settings.adaptsConcurrency ? AdaptiveConcurrency(maximum: settings.concurrency) : nil
        if let rate = settings.maxRate {
            pacer.configured = TokenBucket(rate: rate, burst: settings.maxRateBurst ?? max(1, rate))
        }
    }

    /// What the shell must do, in order, since the last call.
    mutating func takeActions() -> [DeliveryAction] {
        defer { actions.removeAll(keepingCapacity: true) }
        return actions
    }

    mutating func emit(_ action: DeliveryAction) { actions.append(action) }

    // MARK: Questions

    /// Requests allowed in flight: all slots, or one probe while the destination is failing.
    var requestSlots: Int { gate.requestSlots(concurrency: concurrencyLimit) }

    /// Requests allowed in flight while Plunk is healthy: the learned limit, or the fixed one.
    var concurrencyLimit: Int { adaptive?.limit ?? settings.concurrency }

    func sendingAllowed(now: Date) -> Bool {
        !stopping && gate.sendingAllowed(now: now, hasKey: settings.apiKey != nil)
    }

    /// How many more events to claim: the free slots plus a ready reserve as large as the
    /// slots, none while sending is not allowed, and no reserve while probing.
    func claimLimit(now: Date) -> Int {
        guard sendingAllowed(now: now) else { return 0 }
        let target = gate.isProbing ? 1 : concurrencyLimit * 2
        return max(0, target - inFlight.count - ready.count)
    }

    func state(now: Date) -> DeliveryState {
        gate.state(now: now, hasKey: settings.apiKey != nil, inFlight: inFlight.count)
    }

    /// The oldest thing still waiting on the outside world: a request or the store's
    /// transaction. For the watchdog, which takes an old one as lost.
    var oldestOutstanding: Date? {
        [inFlight.values.map(\.sentAt).min(), storeBusySince].compactMap { $0 }.min()
    }

    /// No turn is waiting to run and no store transaction is under way: every decision
    /// the last event called for is made.
    var isSettled: Bool { !turnScheduled && storeBusySince == nil }

    /// The configured key is not the one Plunk refused: the auth hold may end.
    var keyNoLongerRefused: Bool {
        guard let refused = gate.hold.refusedKeyFingerprint, let key = settings.apiKey else { return false }
        return key.fingerprint != refused
    }

    func snapshot(now: Date) -> SenderSnapshot {
        let remaining = pacer.plunk.lastRemaining(now: now)
        return SenderSnapshot(
            state: state(now: now), inFlight: inFlight.count, pausedUntil: gate.hold.pausedUntil,
            heldSince: gate.hold.refusedKeyFingerprint != nil ? gate.hold.heldSince : nil, blockedUntil: gate.blockedUntil,
            consecutiveFailures: gate.consecutiveFailures, lastSuccess: lastSuccess, lastError: lastError,
            lastErrorStatus: lastErrorStatus, lastErrorAt: lastErrorAt,
            deliveredLastHour: recentDeliveries.lastHour(now: now), storageFailing: storageFailing,
            concurrencyLimit: concurrencyLimit, maxRate: pacer.configured?.rate,
            rateLimitRemaining: remaining, rateLimitRefill: remaining != nil ? pacer.plunk.measuredRate : nil)
    }

    // MARK: Turns

    /// Something may have changed (a commit, an answer, a new key): one turn soon, however
    /// many ask before it runs.
    mutating func requestTurn() {
        guard !turnScheduled else { return }
        turnScheduled = true
        emit(.runTurn)
    }

    mutating func timerFired(now: Date) {
        timerDeadline = nil
        requestTurn()
    }

    mutating func turn(now: Date) {
        turnScheduled = false
        if gate.tick(now: now) == .pauseOver {
            emit(.log(.info, "quota pause over: a new month began; delivering again"))
        }
        dispatchReady(now: now)
        let limit = claimLimit(now: now)
        // Before the claim below starts reading: see `Sender.newEventsUseful`.
        emit(.newEventsUseful(limit > 0))
        guard storeBusySince == nil else {
            turnDeferred = true
            return
        }
        if let until = storeMayWait(claimLimit: limit, now: now) {
            armTimer(at: until, now: now)
            noteState(now: now)
            return
        }
        let work = takeStoreWork(claimLimit: limit, now: now)
        guard !work.isEmpty else {
            armTimer(now: now, nextDue: nil)
            noteState(now: now)
            return
        }
        storeBusySince = now
        emit(.store(work))
        noteState(now: now)
    }

    /// Until when this turn's transaction may wait, or nil to run it now.
    ///
    /// Each answer would otherwise cost a transaction of its own once answers come one by
    /// one (a Plunk answering in 20 ms, 16 in flight): a thread hop each way, SQLite's work
    /// and the log's write, for one row. While more than a quarter of a round of claimed
    /// events is ready to send, the slots stay full without a claim, so the outcomes wait
    /// (at most `storeBatchWindow` after the last transaction, or until a round of them
    /// piles up) and go in one transaction; the quarter left keeps the slots full while
    /// that transaction commits. Against a stand-in answering in 20 ms, a quarter and 20 ms
    /// instead of a half and 10 ms took a fifth off the CPU per event (docs/benchmarks.md).
    /// Answers not yet recorded stay within the claim, so what a crash can send twice keeps
    /// its bound (`DuplicateBoundTests`). A hold to store, a stop or a thin reserve runs it
    /// at once; a turn with nothing to store arms nothing.
    func storeMayWait(claimLimit: Int, now: Date) -> Date? {
        guard !stopping, !gate.holdChanged, let last = lastStoreFinished,
            !moves.isEmpty || !counters.isEmpty || claimLimit > 0,
            ready.count * 4 > concurrencyLimit, moves.count < concurrencyLimit
        else { return nil }
        let until = last.addingTimeInterval(Self.storeBatchWindow)
        return until > now ? until : nil
    }

    /// The store's transaction for `work` ended.
    mutating func storeFinished(_ work: StoreWork, _ result: Result<ClaimResult, any Error>, now: Date) {
        storeBusySince = nil
        lastStoreFinished = now
        switch result {
        case .success(let claim):
            if storageFailing {
                storageFailing = false
                emit(.log(.info, "storage accepts delivery updates again"))
            }
            ready.append(contentsOf: claim.claimed)
            dispatchReady(now: now)
            let filled = work.claimLimit > 0 && claim.claimed.count == work.claimLimit
            let room = claimLimit(now: now) > 0
            if turnDeferred || !moves.isEmpty || !counters.isEmpty || gate.holdChanged || (room && (filled || claim.mayHaveMore)) {
                turnDeferred = false
                requestTurn()
            } else {
                armTimer(now: now, nextDue: filled ? nil : claim.nextDue)
            }
        case .failure(let error):
            restore(work)
            if !storageFailing {
                emit(.log(.error, "cannot record delivery outcomes: \(error); retrying"))
                storageFailing = true
            }
            turnDeferred = false
            armTimer(at: now.addingTimeInterval(1), now: now)
        }
        noteState(now: now)
    }

    /// Hands over what the store must record, with a claim of `claimLimit` events.
    mutating func takeStoreWork(claimLimit: Int, now: Date) -> StoreWork {
        let work = StoreWork(moves: moves, counters: counters, hold: gate.holdChanged ? gate.hold : nil, claimLimit: claimLimit, now: now)
        moves.removeAll(keepingCapacity: true)
        counters.removeAll(keepingCapacity: true)
        gate.holdChanged = false
        return work
    }

    /// Puts back what a failed transaction did not record, ahead of anything newer.
    mutating func restore(_ work: StoreWork) {
        moves.insert(contentsOf: work.moves, at: 0)
        for (counter, amount) in work.counters { counters[counter, default: 0] += amount }
        if work.hold != nil { gate.holdChanged = true }
    }

    /// Sends ready events into free slots, as often as the pacer lets them start (else the
    /// timer wakes the machine when it will). While sending is not allowed, or while
    /// probing, ready events go back in line: their contacts must not wait behind a pause.
    mutating func dispatchReady(now: Date) {
        guard sendingAllowed(now: now), let key = settings.apiKey else {
            releaseReady()
            return
        }
        while inFlight.count < requestSlots, !ready.isEmpty {
            guard pacer.allows(inFlight: inFlight.count, now: now) else {
                armTimer(at: pacer.nextAllowed(inFlight: inFlight.count, now: now), now: now)
                break
            }
            let event = ready.removeFirst()
            if expireBeforeSending(event, now: now) { continue }
            inFlight[event.seq] = (event, now, pacer.sent(now: now))
            emit(.send(event, key))
            adaptive?.noteInFlight(inFlight.count)
        }
        if gate.isProbing { releaseReady() }
    }

    mutating func releaseReady() {
        guard !ready.isEmpty else { return }
        moves.append(contentsOf: ready.map { .release(seq: $0.seq) })
        ready.removeAll()
    }

    // MARK: Timer

    /// Looks again at the end of a pause or block, else at `nextDue` (the earliest waiting
    /// head, when the last claim found nothing more to take).
    mutating func armTimer(now: Date, nextDue: Date?) {
        var wake = gate.opensAt
        if wake == nil, let due = nextDue { wake = max(due, now) }
        if let wake { armTimer(at: wake, now: now) }
    }

    /// One timer: the earliest reason to look again. Capped at a minute, so a clock step
    /// or a missed wake-up is noticed within a minute whatever happens.
    mutating func armTimer(at date: Date, now: Date) {
        guard !stopping else { return }
        let capped = min(date, now.addingTimeInterval(60))
        if let current = timerDeadline, current <= capped, current > now { return }
        timerDeadline = capped
        emit(.armTimer(at: capped))
    }

    // MARK: Operator and configuration

    /// A reloaded key and retry policy; the next turn uses them.
    mutating func update(apiKey: APIKey?, retry: RetryPolicy?) {
        if let retry { settings.retry = retry }
        settings.apiKey = apiKey
    }

    /// The store took back the events parked for the refused key: the hold ends (the
    /// shell stores the hold itself, at once).
    mutating func liftAuthHold() { gate.liftAuthHold() }

    /// `plunkd resume`: every pause, hold, block and failure run ends.
    mutating func resume() { gate.resume() }

    /// The shell stored the hold itself (an operator's command).
    mutating func holdSaved() { gate.holdChanged = false }

    /// A command's lift (a resume, a new key) was not stored: the hold stands as stored,
    /// so the line is as it was before the command (`ReloadOnHangup` puts a key back), and
    /// the same command tried again lifts it and requeues its events.
    mutating func liftNotStored(_ stored: StoredDeliveryHold) { gate.restoreLifted(stored) }

    /// Shutdown: nothing more is claimed or sent; `drained` follows the last answer.
    mutating func stop() {
        if !stopping {
            stopping = true
            timerDeadline = nil
            emit(.cancelTimer)
        }
        if inFlight.isEmpty { emit(.drained) }
    }

    /// Logs a change of state (delivering and idle flip with every burst, so only the
    /// first of those is worth a line) and tells the observer (systemd's `STATUS=`).
    mutating func noteState(now: Date) {
        let state = state(now: now)
        guard state != loggedState else { return }
        let quiet: Set<DeliveryState> = [.delivering, .idle]
        if loggedState == nil || !(quiet.contains(state) && quiet.contains(loggedState!)) {
            emit(.log(.info, "delivery state: \(state.rawValue)"))
        }
        loggedState = state
        emit(.stateChanged(state))
    }
}

/// What the sender's shell must do for the machine.
enum DeliveryAction {
    /// Post the event with the key; its answer comes back as `answered`.
    case send(ClaimedEvent, APIKey)
    /// Run the transaction on the store's queue; its result comes back as `storeFinished`.
    case store(StoreWork)
    /// Call `turn` soon, on the sender's queue.
    case runTurn
    /// Call `timerFired` at this wall-clock time (replacing any earlier timer).
    case armTimer(at: Date)
    case cancelTimer
    /// Whether a commit of new events is worth waking the sender for.
    case newEventsUseful(Bool)
    /// One more of this counter, for the metrics (the store gets it through `StoreWork`).
    case counted(OutboxCounter)
    case log(Logger.Level, Logger.Message, Logger.Metadata = [:])
    case stateChanged(DeliveryState)
    /// Shutdown may go on: nothing is in flight.
    case drained
}

/// One store transaction's worth of a turn: what to record and how much to claim.
struct StoreWork: Sendable {
    var moves: [EventMove]
    var counters: [OutboxCounter: Int]
    var hold: StoredDeliveryHold?
    var claimLimit: Int
    var now: Date

    var isEmpty: Bool { moves.isEmpty && counters.isEmpty && hold == nil && claimLimit == 0 }
}
