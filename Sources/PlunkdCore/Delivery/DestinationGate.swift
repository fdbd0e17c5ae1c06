import Foundation

/// The sender's decisions about Plunk as a whole, as a value: whether anything may be sent
/// now, how many requests may be in flight, until when to wait, and what `status` calls it.
///
/// Events come in as method calls with the time they happen at (an answer's meaning, the
/// timer, the operator's resume); what the sender must do comes back as values (a wait,
/// a `Notice` to log, `holdChanged` to store). No queue, clock or store is in here, so
/// tests drive it directly with made-up times; the learned concurrency limit is a value of
/// the same kind beside it (`AdaptiveConcurrency`), and pacing will be more state of this
/// type.
struct DestinationGate: Equatable {
    /// The quota pause and the auth hold, which outlive a restart.
    private(set) var hold = StoredDeliveryHold()
    /// The hold changed since the store last saw it.
    var holdChanged = false
    /// Nothing is sent before this: a rate limit's wait, or the gap between probes.
    private(set) var blockedUntil: Date?
    private(set) var blockedByRateLimit = false
    /// Transient failures answered since the last sane answer: what `status` shows.
    private(set) var consecutiveFailures = 0
    /// The requests, by their number in send order, that failed transiently and were sent
    /// after the newest request answered sanely: where a run in send order is looked for.
    private var failedSinceSane = SendOrderRuns()
    private(set) var consecutiveRateLimits = 0
    /// Consecutive transient failures after which only one probe at a time goes out.
    let failingAfter: Int
    /// The last answers, sane or failed: the failure-rate half of the rule.
    private(set) var recentAnswers = AnswerWindow()
    /// One probe at a time, spaced by backoff, until a sane answer.
    private(set) var isProbing = false
    /// While probing for a run in send order: its first request's number. A request sent
    /// before it answering sanely is old news (work Plunk did before it went down), and
    /// does not end probing.
    private var probingAfterRunFrom: Int?
    /// Probes failed since probing began: what the next gap grows with.
    private var failedProbes = 0

    init(failingAfter: Int, hold: StoredDeliveryHold = StoredDeliveryHold()) {
        self.failingAfter = failingAfter
        self.hold = hold
    }

    /// What the sender logs when the gate closes or opens for a reason an operator acts on.
    enum Notice: Equatable {
        case quotaPaused(until: Date)
        case keyRefused
        case pauseOver
    }

    // MARK: Questions

    /// Requests allowed in flight with `concurrency` slots.
    func requestSlots(concurrency: Int) -> Int { isProbing ? 1 : concurrency }

    /// Whether anything may be sent at `now` (a key given, no hold, no pause, no block).
    func sendingAllowed(now: Date, hasKey: Bool) -> Bool {
        guard hasKey, hold.refusedKeyFingerprint == nil, hold.pausedUntil == nil else { return false }
        if let blockedUntil, blockedUntil > now { return false }
        return true
    }

    func state(now: Date, hasKey: Bool, inFlight: Int) -> DeliveryState {
        if !hasKey { return .noAPIKey }
        if hold.refusedKeyFingerprint != nil { return .authHeld }
        if hold.pausedUntil != nil { return .quotaPaused }
        if let blockedUntil, blockedUntil > now { return blockedByRateLimit ? .rateLimited : .backingOff }
        if consecutiveFailures > 0 { return .backingOff }
        return inFlight == 0 ? .idle : .delivering
    }

    /// When the gate opens by itself: the end of a pause or a block.
    var opensAt: Date? {
        switch (hold.pausedUntil, blockedUntil) {
        case (let pause?, let block?): min(pause, block)
        case (let pause?, nil): pause
        case (nil, let block?): block
        case (nil, nil): nil
        }
    }

    // MARK: Events

    /// A sane answer (any 2xx, or an event-level refusal) to request `number` (in send
    /// order) breaks every run it was sent inside, and ends probing unless it was sent
    /// before the run that began it.
    mutating func answeredSanely(number: Int) {
        if isProbing, let runStart = probingAfterRunFrom, number < runStart { return }
        consecutiveFailures = 0
        consecutiveRateLimits = 0
        failedSinceSane.answeredSanely(number)
        if !blockedByRateLimit { blockedUntil = nil }
        if isProbing {
            // Plunk is back: full speed at once, and the window starts over rather than
            // holding the outage against it.
            isProbing = false
            probingAfterRunFrom = nil
            failedProbes = 0
            recentAnswers = AnswerWindow()
        } else {
            recentAnswers.record(sane: true)
        }
    }

    /// A transient failure (5xx, timeout, connection refused) of request `number`. Plunk
    /// counts as failing, and only one probe at a time goes out, each after
    /// `gap(probes failed)`, once `failingAfter` requests sent one after another have all
    /// failed (an outage, noticed within a few requests) or fewer than half of the last
    /// `AnswerWindow.size` answers were sane (a partial outage). Random failures below
    /// that rate, however they bunch, keep every slot sending: "3 in a row" alone
    /// collapsed delivery to a probe at a time under 30 % of 500s.
    ///
    /// The run is taken in send order, not answer order, because answers overtake each
    /// other. A Plunk that fails some requests at once and answers the others after their
    /// work sends the failures of one wave ahead of its successes: 8 in a row by answer
    /// came with every wave of 64, and delivery fell to a probe at a time, 0.12 of the
    /// healthy rate. A Plunk that goes down while slow requests are out answers them
    /// sanely after its first failures: each reset a run by answer, and ended probing,
    /// and the soak's stand-in took 113 requests in 5 s of outage (`OutageShapeTests`).
    mutating func failedTransiently(number: Int, now: Date, gap: (Int) -> TimeInterval) {
        consecutiveFailures += 1
        recentAnswers.record(sane: false)
        let run = failedSinceSane.failed(number, reaching: failingAfter)
        if !isProbing, let run {
            isProbing = true
            probingAfterRunFrom = run
        } else if !isProbing, recentAnswers.mostlyFailing {
            isProbing = true
        }
        if isProbing {
            failedProbes += 1
            block(until: now.addingTimeInterval(gap(failedProbes)), rateLimit: false)
        }
    }

    /// A 429: Plunk-wide wait of `Retry-After`, else `backoff(rate limits in a row)`,
    /// never longer than `cap`. Returns the wait, which the answered event waits too.
    mutating func rateLimited(retryAfter: TimeInterval?, now: Date, cap: TimeInterval, backoff: (Int) -> TimeInterval) -> TimeInterval {
        consecutiveRateLimits += 1
        let wait = min(cap, retryAfter ?? backoff(consecutiveRateLimits))
        block(until: now.addingTimeInterval(wait), rateLimit: true)
        return wait
    }

    /// A 402: nothing is sent until the calendar month rolls over.
    mutating func quotaExceeded(now: Date) -> Notice? {
        guard hold.pausedUntil == nil else { return nil }
        let until = MonthBoundary.startOfNextMonth(after: now)
        hold.pausedUntil = until
        hold.pauseReason = "quota"
        holdChanged = true
        return .quotaPaused(until: until)
    }

    /// A 401 for the key with `fingerprint`: held until the key changes or `resume`.
    mutating func keyRefused(fingerprint: String, now: Date) -> Notice? {
        guard hold.refusedKeyFingerprint == nil else { return nil }
        hold.refusedKeyFingerprint = fingerprint
        hold.heldSince = now
        holdChanged = true
        return .keyRefused
    }

    /// Time passed: a pause or a block that has ended lets go.
    mutating func tick(now: Date) -> Notice? {
        var notice: Notice?
        if let until = hold.pausedUntil, until <= now {
            hold.pausedUntil = nil
            hold.pauseReason = nil
            holdChanged = true
            notice = .pauseOver
        }
        if let until = blockedUntil, until <= now {
            blockedUntil = nil
            blockedByRateLimit = false
        }
        return notice
    }

    /// The key is no longer the refused one: the auth hold ends.
    mutating func liftAuthHold() {
        hold.refusedKeyFingerprint = nil
        hold.heldSince = nil
    }

    /// A lift the store did not take is undone: the auth hold and the pause of `stored`
    /// (the hold as the store still has it) come back where nothing has replaced them, so
    /// the same command or key, tried again, lifts them and requeues their events.
    mutating func restoreLifted(_ stored: StoredDeliveryHold) {
        if hold.refusedKeyFingerprint == nil {
            hold.refusedKeyFingerprint = stored.refusedKeyFingerprint
            hold.heldSince = stored.heldSince
        }
        if hold.pausedUntil == nil {
            hold.pausedUntil = stored.pausedUntil
            hold.pauseReason = stored.pauseReason
        }
    }

    /// `plunkd resume`: every pause, hold, block and failure run ends now.
    mutating func resume() {
        hold = StoredDeliveryHold()
        holdChanged = true
        blockedUntil = nil
        blockedByRateLimit = false
        consecutiveFailures = 0
        failedSinceSane = SendOrderRuns()
        isProbing = false
        probingAfterRunFrom = nil
        failedProbes = 0
        recentAnswers = AnswerWindow()
    }

    private mutating func block(until date: Date, rateLimit: Bool) {
        if let current = blockedUntil, current >= date { return }
        blockedUntil = date
        blockedByRateLimit = rateLimit
    }
}

/// The last `size` answers from Plunk, sane or failed, for the failure-rate rule.
struct AnswerWindow: Equatable {
    /// Large enough that 30 % random failures almost never look like an outage (fewer
    /// than 25 sane of 50 happens with a chance of about 1 in 1,000 per window); a real
    /// outage is caught sooner by the failures in a row.
    static let size = 50
    private var answers: [Bool] = []
    private var next = 0
    private(set) var sane = 0

    var count: Int { answers.count }

    mutating func record(sane isSane: Bool) {
        if answers.count < Self.size {
            answers.append(isSane)
        } else {
            if answers[next] { sane -= 1 }
            answers[next] = isSane
            next = (next + 1) % Self.size
        }
        if isSane { sane += 1 }
    }

    /// A full window with fewer than half of its answers sane.
    var mostlyFailing: Bool { answers.count == Self.size && sane * 2 < Self.size }
}

/// Requests that failed, by their number in send order, since the newest sane answer:
/// where a run of requests sent one after another, all failed, is found.
struct SendOrderRuns: Equatable {
    private var failed: Set<Int> = []
    private var newestSane = 0
    /// More than any run looked for spans: a Plunk down for a day adds a failed probe a
    /// second, and the oldest are of no use once this many newer ones failed.
    static let kept = 1024

    /// Request `number` failed: the first number of a run of at least `length` failed
    /// requests sent one after another that it belongs to, if there is one.
    mutating func failed(_ number: Int, reaching length: Int) -> Int? {
        guard number > newestSane else { return nil }
        failed.insert(number)
        if failed.count > Self.kept { failed = failed.filter { $0 > number - Self.kept / 2 } }
        var first = number
        while first > number - length, failed.contains(first - 1) { first -= 1 }
        var last = number
        while last < first + length - 1, failed.contains(last + 1) { last += 1 }
        return last - first + 1 >= length ? first : nil
    }

    /// Request `number` answered sanely: no run reaches across it. Called for every
    /// delivered event, so the set is rebuilt only when it holds a failure.
    mutating func answeredSanely(_ number: Int) {
        guard number > newestSane else { return }
        newestSane = number
        if !failed.isEmpty { failed = failed.filter { $0 > number } }
    }
}
