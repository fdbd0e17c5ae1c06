import Foundation
import Testing

@testable import PlunkdCore

/// Pacing under Plunk's rate limit and under `plunk.max_rate`, driven against a simulated
/// limiter with made-up times: no clock, no sleep. Randomness is seeded.
@Suite("pacing", .timeLimit(.minutes(2)), .watchdog)
struct PacingTests {
    static let start = Date(timeIntervalSince1970: 1_800_000_000)

    // MARK: Headers

    @Test("RateLimit headers are read under both names, from a list's first number; a bad Remaining reads as none")
    func headers() {
        func read(_ fields: [String: String]) -> RateLimitHeaders? {
            RateLimitHeaders.read { name in fields.first { $0.key.lowercased() == name.lowercased() }?.value }
        }
        #expect(read(["RateLimit-Limit": "200", "RateLimit-Remaining": "17", "RateLimit-Reset": "2"]) == RateLimitHeaders(remaining: 17, limit: 200, reset: 2))
        #expect(read(["x-ratelimit-remaining": " 3 ", "x-ratelimit-limit": "100, 100;w=1"]) == RateLimitHeaders(remaining: 3, limit: 100))
        #expect(read(["RateLimit-Remaining": "-1"]) == nil)
        #expect(read(["RateLimit-Remaining": "many"]) == nil)
        #expect(read(["RateLimit-Limit": "200"]) == nil)
        #expect(read(["RateLimit-Remaining": "5", "RateLimit-Reset": "1796000000"])?.reset == nil, "an epoch time is not a delta")
    }

    // MARK: plunk.max_rate

    @Test("plunk.max_rate lets a burst leave at once, then one request per 1/rate; a quiet spell refills only up to the burst")
    func tokenBucket() {
        var bucket = TokenBucket(rate: 10, burst: 3)
        var now = Self.start
        for _ in 0..<3 {
            #expect(bucket.allows(now: now))
            bucket.take(now: now)
        }
        #expect(!bucket.allows(now: now))
        #expect(abs(bucket.nextAllowed(now: now).timeIntervalSince(now) - 0.1) < 1e-6)
        now += 0.1
        #expect(bucket.allows(now: now))
        now += 60
        #expect(abs(bucket.available(now: now) - 3) < 1e-6, "capped at the burst")
        bucket.take(now: now)
        #expect(abs(bucket.available(now: now.addingTimeInterval(-3600)) - 2) < 1e-6, "a clock stepped back takes nothing away")
    }

    @Test("the machine holds ready events to plunk.max_rate and arms the timer for the next token")
    func machineHonoursMaxRate() {
        var drive = DeliveryMachineTests.Drive(concurrency: 8)
        drive.machine.pacer.configured = TokenBucket(rate: 10, burst: 2)
        var available = (0..<10).map { _ in drive.event() }
        drive.wake(available: &available)
        #expect(drive.sent.count == 2, "the burst, though eight slots are free")
        #expect(drive.timers.contains(drive.now.addingTimeInterval(0.1)), "\(drive.timers)")
        drive.now += 0.1
        drive.fireTimer(available: &available)
        #expect(drive.sent.count == 3)
        drive.now += 0.35
        drive.fireTimer(available: &available)
        #expect(drive.sent.count == 5, "3.5 tokens in 0.35 s at 10/s, but never more than the burst of 2")
    }

    // MARK: Plunk's RateLimit headers

    /// A project's token bucket at Plunk, answering as a v2 limiter does.
    struct SimulatedLimiter {
        enum Semantics {
            /// `Limit` the burst, `Reset` the seconds until full.
            case untilFull
            /// `Limit` the rate per second, `Reset` always 1.
            case perSecond
            /// A fixed window: `Limit` requests per `window` seconds, `Reset` until the next.
            case fixedWindow(TimeInterval)
        }
        var rate: Double
        var burst: Double
        var semantics: Semantics
        var tokens: Double
        var updatedAt: Date
        var windowUsed = 0

        init(rate: Double, burst: Double, semantics: Semantics, at start: Date) {
            self.rate = rate
            self.burst = burst
            self.semantics = semantics
            tokens = burst
            updatedAt = start
        }

        /// One request arriving at `now`: its status and headers.
        mutating func arrive(at now: Date) -> (status: Int, headers: RateLimitHeaders, retryAfter: Double?) {
            if case .fixedWindow(let window) = semantics {
                let start = PacingTests.start
                let into = now.timeIntervalSince(start).truncatingRemainder(dividingBy: window)
                if Int(now.timeIntervalSince(start) / window) != Int(updatedAt.timeIntervalSince(start) / window) { windowUsed = 0 }
                updatedAt = now
                let limit = Int(burst)
                let reset = (window - into).rounded(.up)
                if windowUsed >= limit { return (429, RateLimitHeaders(remaining: 0, limit: limit, reset: reset), max(1, reset)) }
                windowUsed += 1
                return (200, RateLimitHeaders(remaining: limit - windowUsed, limit: limit, reset: reset), nil)
            }
            tokens = min(burst, tokens + now.timeIntervalSince(updatedAt) * rate)
            updatedAt = now
            let took = tokens >= 1
            if took { tokens -= 1 }
            let headers: RateLimitHeaders
            switch semantics {
            case .untilFull:
                headers = RateLimitHeaders(remaining: Int(tokens), limit: Int(burst), reset: ((burst - tokens) / rate).rounded(.up))
            case .perSecond, .fixedWindow:
                headers = RateLimitHeaders(remaining: Int(tokens), limit: Int(rate), reset: 1)
            }
            return took ? (200, headers, nil) : (429, headers, max(1, ((1 - tokens) / rate).rounded(.up)))
        }
    }

    struct PacedRun {
        var deliveredPerSecond: [Int]
        var answers = 0
        var rateLimited = 0
        var share429: Double { Double(rateLimited) / Double(max(answers, 1)) }
        func rate(from second: Int) -> Double {
            let tail = deliveredPerSecond.dropFirst(second)
            return Double(tail.reduce(0, +)) / Double(tail.count)
        }
    }

    /// A backlog that never runs out, sent by `concurrency` slots through the pacer to the
    /// limiter, `roundTrip` seconds away, for `seconds`. Each way takes half the round trip
    /// plus up to an eighth of it at random (seeded), so requests reach the limiter, and
    /// answers come back, in another order than they left, as over many connections. A
    /// 429 stops every request for its `Retry-After`, as the sender's gate does. `others`
    /// requests per second from other hosts take from the same bucket.
    static func simulate(
        limiter: SimulatedLimiter, concurrency: Int, roundTrip: TimeInterval, seconds: Int, others: Double = 0, paced: Bool = true
    ) -> PacedRun {
        struct Request {
            var number: Int
            var arrivesAt: Date
            var answer: PlunkAnswer?
            var answeredAt: Date = .distantFuture
        }
        var limiter = limiter
        var pacer = RequestPacer()
        var random = SplitMix64(seed: 42)
        func oneWay() -> TimeInterval { roundTrip / 2 + Double.random(in: 0..<(roundTrip / 8), using: &random) }
        var inFlight: [Request] = []
        var run = PacedRun(deliveredPerSecond: [Int](repeating: 0, count: seconds))
        var now = start
        var blockedUntil = start
        var othersSent = 0.0
        let end = start.addingTimeInterval(TimeInterval(seconds))
        func othersNext() -> Date { others > 0 ? start.addingTimeInterval(othersSent / others) : .distantFuture }
        while now < end {
            while now >= blockedUntil, inFlight.count < concurrency, !paced || pacer.allows(inFlight: inFlight.count, now: now) {
                inFlight.append(Request(number: pacer.sent(now: now), arrivesAt: now.addingTimeInterval(oneWay())))
            }
            var next = min(end, othersNext())
            for request in inFlight { next = min(next, request.answer == nil ? request.arrivesAt : request.answeredAt) }
            if now < blockedUntil { next = min(next, blockedUntil) }
            if paced, inFlight.count < concurrency, now >= blockedUntil { next = min(next, pacer.nextAllowed(inFlight: inFlight.count, now: now)) }
            now = max(now, next)
            guard now < end else { break }
            // Arrivals at the limiter up to now, ours and other hosts', in time order.
            while true {
                let ours = inFlight.indices.filter { inFlight[$0].answer == nil && inFlight[$0].arrivesAt <= now }
                    .min { inFlight[$0].arrivesAt < inFlight[$1].arrivesAt }
                let theirs = othersNext()
                if theirs <= now, ours == nil || theirs <= inFlight[ours!].arrivesAt {
                    _ = limiter.arrive(at: theirs)
                    othersSent += 1
                } else if let ours {
                    let (status, headers, retryAfter) = limiter.arrive(at: inFlight[ours].arrivesAt)
                    inFlight[ours].answer = .response(
                        status: status, retryAfter: retryAfter.map { String(Int($0)) }, rateLimit: headers, body: Data())
                    inFlight[ours].answeredAt = inFlight[ours].arrivesAt.addingTimeInterval(oneWay())
                } else {
                    break
                }
            }
            while let index = inFlight.firstIndex(where: { $0.answeredAt <= now }) {
                let request = inFlight.remove(at: index)
                guard let answer = request.answer else { continue }
                pacer.answered(answer, number: request.number, now: now)
                run.answers += 1
                guard case .response(let status, let retryAfter, _, _) = answer else { continue }
                if status == 429 {
                    run.rateLimited += 1
                    blockedUntil = max(blockedUntil, now.addingTimeInterval(Double(retryAfter ?? "1") ?? 1))
                } else {
                    run.deliveredPerSecond[Int(now.timeIntervalSince(start))] += 1
                }
            }
        }
        return run
    }

    @Test(
        "against Plunk's 100/s, burst 200: at least 95 events/s sustained with at most 1 % of requests answered 429, whatever Limit and Reset mean",
        arguments: [(SimulatedLimiter.Semantics.untilFull, 0.020), (.perSecond, 0.020), (.untilFull, 0.150), (.perSecond, 0.300)])
    func sustainsTheLimit(semantics: SimulatedLimiter.Semantics, roundTrip: TimeInterval) {
        let limiter = SimulatedLimiter(rate: 100, burst: 200, semantics: semantics, at: Self.start)
        let run = Self.simulate(limiter: limiter, concurrency: 64, roundTrip: roundTrip, seconds: 60)
        #expect(run.rate(from: 5) >= 95, "rates \(run.deliveredPerSecond)")
        #expect(run.share429 <= 0.01, "\(run.rateLimited) of \(run.answers) answered 429")
    }

    @Test("without pacing the same drain meets many 429s: the limiter in these tests does bite")
    func unpacedMeets429s() {
        let limiter = SimulatedLimiter(rate: 100, burst: 200, semantics: .untilFull, at: Self.start)
        let run = Self.simulate(limiter: limiter, concurrency: 64, roundTrip: 0.020, seconds: 60, paced: false)
        #expect(run.share429 > 0.05, "\(run.rateLimited) of \(run.answers)")
    }

    @Test("another host taking 40/s of the same bucket: this one takes the rest, still with at most 1 % 429s")
    func sharesTheBucket() {
        let limiter = SimulatedLimiter(rate: 100, burst: 200, semantics: .untilFull, at: Self.start)
        let run = Self.simulate(limiter: limiter, concurrency: 64, roundTrip: 0.050, seconds: 60, others: 40)
        #expect(run.rate(from: 5) >= 0.95 * 60, "rates \(run.deliveredPerSecond)")
        #expect(run.share429 <= 0.01, "\(run.rateLimited) of \(run.answers)")
    }

    @Test("a fixed window (100 per 10 s): requests stop near the window's end and start again at its reset, with few 429s")
    func fixedWindow() {
        let limiter = SimulatedLimiter(rate: 0, burst: 100, semantics: .fixedWindow(10), at: Self.start)
        let run = Self.simulate(limiter: limiter, concurrency: 16, roundTrip: 0.020, seconds: 60)
        let delivered = run.deliveredPerSecond.reduce(0, +)
        #expect(delivered >= 6 * 90, "each of the six windows mostly used: \(run.deliveredPerSecond)")
        #expect(run.rateLimited <= 6, "\(run.rateLimited) of \(run.answers) answered 429")
    }

    @Test("an answer without the headers leaves the pacer out of the way, and a model a minute old is forgotten")
    func staleModel() {
        var pacer = RequestPacer()
        pacer.answered(.response(status: 200, retryAfter: nil, body: Data()), number: pacer.sent(now: Self.start), now: Self.start)
        #expect(pacer.allows(inFlight: 50, now: Self.start))
        pacer.answered(
            .response(status: 200, retryAfter: nil, rateLimit: RateLimitHeaders(remaining: 0, limit: 200, reset: 2), body: Data()),
            number: pacer.sent(now: Self.start), now: Self.start)
        #expect(!pacer.allows(inFlight: 1, now: Self.start))
        #expect(pacer.allows(inFlight: 1, now: Self.start.addingTimeInterval(PlunkBudget.staleAfter)))
    }
}
