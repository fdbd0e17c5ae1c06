import Foundation

/// How many requests may be in flight when `plunk.concurrency` is `auto`, learned from
/// Plunk's answers as they come: the design of Vector's Adaptive Request Concurrency
/// (additive increase while round trips stay flat, multiplicative decrease on back
/// pressure), with the fixes its issues asked for.
///
/// - Slow ramp-up (Vector starts at 1 and adds 1 per round trip, minutes to reach a
///   far-away Plunk's capacity): the limit doubles per round trip, as TCP's slow start
///   does, up to the last limit at which latency rose (`ceiling`), and adds 1 beyond it.
/// - Oscillation and overshoot from judging a new limit by answers to requests sent
///   under the old one: only answers to requests sent after the last change count, so
///   the limit changes at most once per round trip, each time on what the change did.
/// - Every 5xx counted as back pressure, which collapsed the limit under random errors:
///   only 429, 503, 504 and transport failures (timeouts, refused or reset connections)
///   are back pressure; a plain 500 is an answer like any other.
///
/// Latency is judged against `baseline`, the lowest window mean of the last
/// `baselineMemory` seconds: the link without a queue at Plunk. (A memory of a few
/// windows forgets the unqueued round trip while the limit hovers above Plunk's
/// capacity, and the baseline then creeps up with the queue: seen in the tests.) A rise
/// that persists with one request in flight cannot be a queue plunkd made: it is the
/// path, and becomes the baseline. A window's mean above
/// `baseline × riseFactor` means requests are queueing, so the limit steps down; at or
/// under `baseline × flatFactor`, with the limit reached during the window and no back
/// pressure, it steps up. In between it holds.
struct AdaptiveConcurrency {
    let maximum: Int
    private(set) var limit: Int
    /// The limit after the last latency rise: growth doubles up to it, adds 1 beyond.
    private(set) var ceiling: Int
    /// The lowest window mean per `bucketLength` seconds, oldest first.
    private var baselineBuckets: [(start: Date, lowest: TimeInterval)] = []
    private var windowStart: Date?
    private var windowLength: TimeInterval = 0
    private var windowSum: TimeInterval = 0
    private var windowCount = 0
    private var windowSaturated = false
    /// Answers to requests sent before this were sent under another limit.
    private var lastChange: Date?

    static let initialLimit = 2
    static let decreaseOnBackPressure = 0.5
    static let decreaseOnLatency = 0.9
    static let riseFactor = 1.5
    static let flatFactor = 1.25
    static let baselineMemory: TimeInterval = 600
    static let bucketLength: TimeInterval = 20
    /// A window is at least this long, so a loopback Plunk answering in microseconds is
    /// not judged on a handful of answers.
    static let minimumWindow: TimeInterval = 0.005

    init(maximum: Int) {
        self.maximum = max(1, maximum)
        limit = min(Self.initialLimit, self.maximum)
        ceiling = self.maximum
    }

    /// The lowest recent window mean: the round trip without queueing.
    var baseline: TimeInterval? { baselineBuckets.map(\.lowest).min() }

    /// Requests in flight after a send: whether the limit was reached in this window.
    mutating func noteInFlight(_ count: Int) {
        if count >= limit { windowSaturated = true }
    }

    /// An answer to a request sent at `sentAt`, received at `now`.
    mutating func answered(sentAt: Date, now: Date, backPressure: Bool) {
        // The wall clock stepped back: start over from now rather than wait for it.
        if let start = windowStart, now < start { windowStart = nil }
        if let change = lastChange, now < change { lastChange = nil }
        if let change = lastChange, sentAt < change { return }
        if backPressure {
            change(to: Int(Double(limit) * Self.decreaseOnBackPressure), now: now)
            return
        }
        if windowStart == nil { startWindow(at: now, length: now.timeIntervalSince(sentAt)) }
        windowSum += max(0, now.timeIntervalSince(sentAt))
        windowCount += 1
        if let start = windowStart, now.timeIntervalSince(start) >= windowLength {
            endWindow(now: now)
        }
    }

    private mutating func endWindow(now: Date) {
        let mean = windowSum / Double(windowCount)
        remember(mean, at: now)
        let baseline = self.baseline ?? mean
        if mean > baseline * Self.riseFactor {
            if limit == 1 {
                baselineBuckets.removeAll()
                remember(mean, at: now)
            } else {
                change(to: Int(Double(limit) * Self.decreaseOnLatency), now: now)
                ceiling = limit
            }
        } else if windowSaturated && mean <= baseline * Self.flatFactor && limit < maximum {
            change(to: limit * 2 <= ceiling ? limit * 2 : limit + 1, now: now)
            ceiling = max(ceiling, limit)
        }
        startWindow(at: now, length: mean)
    }

    private mutating func change(to newLimit: Int, now: Date) {
        limit = min(maximum, max(1, newLimit))
        lastChange = now
        startWindow(at: now, length: windowLength)
    }

    private mutating func remember(_ mean: TimeInterval, at now: Date) {
        baselineBuckets.removeAll { now.timeIntervalSince($0.start) > Self.baselineMemory || $0.start > now }
        if let last = baselineBuckets.last, now.timeIntervalSince(last.start) < Self.bucketLength {
            baselineBuckets[baselineBuckets.count - 1].lowest = min(last.lowest, mean)
        } else {
            baselineBuckets.append((now, mean))
        }
    }

    private mutating func startWindow(at date: Date, length: TimeInterval) {
        windowStart = date
        windowLength = max(Self.minimumWindow, length)
        windowSum = 0
        windowCount = 0
        windowSaturated = false
    }
}
