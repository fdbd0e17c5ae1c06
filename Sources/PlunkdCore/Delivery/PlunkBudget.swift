import Foundation

/// Plunk's token bucket for the project, as its `RateLimit-*` headers describe it: so the
/// sender slows down before the bucket is empty instead of learning of it from 429s,
/// each of which stops the whole destination for its `Retry-After`.
///
/// Requests are numbered as they leave. Each recent answer gives an estimate: what it
/// said remained, plus what has refilled since, minus every request sent after it,
/// answered or not. The model is the lowest of the estimates from the answers of the
/// last second (at most `recentAnswers`): requests travel over many connections and
/// reach Plunk in another order than they left, so the answer to the newest request may
/// predate others' being counted, and only the lowest estimate is safe. Requests leave
/// while the model stays above a margin of a twentieth of the largest `Remaining` seen.
/// The refill rate is measured, not read: across recent answers, the rise in `Remaining`
/// plus the requests Plunk counted in between, over the time it took. That is the rate
/// this host gets, whatever other hosts on the same project take, and whatever `Limit`
/// and `Reset` mean to the limiter.
struct PlunkBudget {
    private struct Sample {
        var number: Int
        var at: Date
        var remaining: Int
        /// False for a 429, which the limiter refused before counting it.
        var tookToken: Bool
    }

    /// Answers this recent measure the refill rate.
    static let window: TimeInterval = 5
    static let maxSamples = 512
    /// A model this old says nothing: the bucket has had time to refill.
    static let staleAfter: TimeInterval = 60

    /// Requests sent so far; the next one is number `sent + 1`.
    private(set) var sent = 0
    /// Recent answers carrying the headers, in request order.
    private var samples: [Sample] = []
    private(set) var largestRemaining = 0
    /// Tokens per second this host gets, once measured.
    private(set) var measuredRate: Double?
    /// `Limit / Reset`, the best guess before a measure.
    private var guessedRate: Double?
    /// The newest answers, by arrival, that the model takes the lowest estimate of.
    private var recent: [Sample] = []
    static let recentAnswers = 32
    /// The last answer to arrive, and the `Reset` it carried.
    private var latest: (sample: Sample, reset: Double?)?

    /// A request leaves: its number, to hand back with its answer.
    mutating func noteSent() -> Int {
        sent += 1
        return sent
    }

    /// The answer to request `number` carried the headers.
    mutating func observe(_ headers: RateLimitHeaders, tookToken: Bool, number: Int, now: Date) {
        if let latest, now < latest.sample.at {  // the clock stepped back
            samples.removeAll()
            recent.removeAll()
        }
        let sample = Sample(number: number, at: now, remaining: headers.remaining, tookToken: tookToken)
        largestRemaining = max(largestRemaining, headers.remaining)
        samples.removeAll { now.timeIntervalSince($0.at) > Self.window }
        if samples.count == Self.maxSamples { samples.removeFirst() }
        let index = samples.lastIndex { $0.number < number }.map { $0 + 1 } ?? 0
        samples.insert(sample, at: index)
        measure()
        if let limit = headers.limit, limit > 0 {
            guessedRate = Double(limit) / max(1, headers.reset ?? 1)
        }
        if recent.count == Self.recentAnswers { recent.removeFirst() }
        recent.append(sample)
        recent.removeAll { now.timeIntervalSince($0.at) > 1 }
        latest = (sample, headers.reset)
    }

    /// The refill rate over the newest run of answers that found the bucket well short of
    /// full (a full bucket refills nothing, which would read as a slow rate).
    private mutating func measure() {
        guard let newest = samples.last else { return }
        let full = largestRemaining * 9 / 10
        var first = samples.endIndex - 1
        var refused = 0
        while first > 0, samples[first - 1].remaining < full {
            if !samples[first].tookToken { refused += 1 }
            first -= 1
        }
        let oldest = samples[first]
        let seconds = newest.at.timeIntervalSince(oldest.at)
        let counted = newest.number - oldest.number - refused
        guard newest.remaining < full, seconds >= 0.5, counted >= 5 else { return }
        measuredRate = max(0, Double(newest.remaining - oldest.remaining + counted) / seconds)
    }

    var rate: Double { measuredRate ?? guessedRate ?? 1 }

    /// Tokens left below which requests wait.
    var margin: Int { max(2, largestRemaining / 20) }

    /// The tokens the model gives Plunk's bucket now, or nil when nothing recent is known.
    func available(now: Date) -> Double? {
        guard let latest, now >= latest.sample.at, now.timeIntervalSince(latest.sample.at) < Self.staleAfter else { return nil }
        let rate = rate
        // Capped once, not per estimate: an answer that found the bucket nearly full must
        // still see it refill behind the requests sent since.
        let lowest = recent.map { sample in
            Double(sample.remaining) + rate * now.timeIntervalSince(sample.at) - Double(sent - sample.number)
        }.min()
        return lowest.map { min(Double(largestRemaining), $0) }
    }

    func allows(inFlight: Int, now: Date) -> Bool {
        guard let available = available(now: now) else { return true }
        return available >= Double(margin + 1) || (inFlight == 0 && now >= probeAt)
    }

    /// When a request may leave: when the model refills past the margin, or, with nothing
    /// in flight to bring news, when the limiter said the bucket would be refilled (a fixed
    /// window's reset, which no refill rate foresees).
    func nextAllowed(inFlight: Int, now: Date) -> Date {
        guard let available = available(now: now) else { return now }
        let missing = Double(margin + 1) - available
        guard missing > 0 else { return now }
        var at = rate > 0 ? now.addingTimeInterval(missing / rate) : .distantFuture
        if inFlight == 0 { at = min(at, probeAt) }
        return max(at, now.addingTimeInterval(0.001))
    }

    private var probeAt: Date {
        guard let latest else { return .distantPast }
        return latest.sample.at.addingTimeInterval(min(Self.staleAfter, max(0.05, latest.reset ?? 1)))
    }

    /// The last `Remaining` Plunk sent, while it still says something; for `status`.
    func lastRemaining(now: Date) -> Int? {
        guard let latest, now.timeIntervalSince(latest.sample.at) < Self.staleAfter else { return nil }
        return latest.sample.remaining
    }
}
