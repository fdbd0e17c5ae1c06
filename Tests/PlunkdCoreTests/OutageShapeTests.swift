import Foundation
import Synchronization
import Testing

@testable import PlunkdCore

/// Plunks with a shape in time, answered against the delivery machine with made-up time:
/// each request's answer and when it comes are the model's, so a run of seconds takes
/// milliseconds and every seed replays exactly.
@Suite("outage shapes", .timeLimit(.minutes(2)), .watchdog)
struct OutageShapeTests {
    /// A Plunk: for a request sent at `elapsed` seconds into the run, its answer and the
    /// seconds until it comes.
    typealias Plunk = (_ elapsed: TimeInterval, _ random: inout SplitMix64) -> (answer: PlunkAnswer, after: TimeInterval)

    struct Outcome {
        /// When each request was sent, in seconds from the start.
        var sentAt: [TimeInterval] = []
        var delivered = 0

        func sent(from start: TimeInterval, to end: TimeInterval) -> Int { sentAt.filter { $0 >= start && $0 < end }.count }
    }

    /// Runs `seconds` of delivery of a backlog larger than can drain, against `plunk`.
    static func run(
        seed: UInt64, seconds: TimeInterval, concurrency: Int = 8, auto: Bool = false, initialBackoff: TimeInterval = 0.05, plunk: Plunk
    ) -> Outcome {
        var random = SplitMix64(seed: seed)
        let unit = Mutex(SplitMix64(seed: seed &+ 1000))
        var drive = DeliveryMachineTests.Drive(
            concurrency: concurrency, retry: RetryPolicy(initialBackoff: initialBackoff, maxBackoff: 1, maxAge: 3600), failingAfter: 8,
            unitRandom: { unit.withLock { Double.random(in: 0..<1, using: &$0) } }, adaptsConcurrency: auto)
        var available = (0..<20_000).map { _ in drive.event() }
        let start = drive.now
        let end = start.addingTimeInterval(seconds)
        var outstanding: [(at: Date, event: ClaimedEvent, answer: PlunkAnswer)] = []
        var outcome = Outcome()
        drive.wake(available: &available)
        for _ in 0..<1_000_000 where drive.now < end {
            while outcome.sentAt.count < drive.sent.count {
                let elapsed = drive.now.timeIntervalSince(start)
                let (answer, after) = plunk(elapsed, &random)
                outstanding.append((drive.now.addingTimeInterval(after), drive.sent[outcome.sentAt.count], answer))
                outcome.sentAt.append(elapsed)
            }
            let next = outstanding.indices.min { outstanding[$0].at < outstanding[$1].at }
            if let next, drive.machine.timerDeadline.map({ outstanding[next].at <= $0 }) ?? true {
                let (at, event, answer) = outstanding.remove(at: next)
                drive.now = max(drive.now, at)
                if case .response(let status, _, _, _) = answer, status == 200 { outcome.delivered += 1 }
                drive.answer(event, answer)
                drive.settle(available: &available)
            } else if let timer = drive.machine.timerDeadline {
                drive.now = max(drive.now, timer)
                drive.fireTimer(available: &available)
            } else {
                Issue.record("nothing in flight and no timer: delivery stopped (seed \(seed))")
                break
            }
        }
        return outcome
    }

    /// The crash-loop soak's stand-in: `failing` of requests fail in one of six ways (a
    /// reset, 500, 502 or 503 after 10 ms, a timeout after 0.5 s, a 429 with
    /// `Retry-After: 1`), one 2xx in five comes after 250 ms, the rest after 10 ms; from
    /// `downAt` on, every request is answered 503 after 10 ms.
    static func soakPlunk(failing: Double, downAt: TimeInterval) -> Plunk {
        { elapsed, random in
            if elapsed >= downAt { return (DeliveryMachineTests.status(503), 0.01) }
            if Double.random(in: 0..<1, using: &random) < failing {
                switch Int.random(in: 0..<6, using: &random) {
                case 0: return (.transportFailure("connection reset"), 0.01)
                case 1: return (DeliveryMachineTests.status(500), 0.01)
                case 2: return (DeliveryMachineTests.status(502), 0.01)
                case 3: return (DeliveryMachineTests.status(503), 0.01)
                case 4: return (.transportFailure("timed out"), 0.5)
                default: return (DeliveryMachineTests.status(429, retryAfter: "1"), 0.01)
                }
            }
            return (DeliveryMachineTests.status(200), Double.random(in: 0..<1, using: &random) < 0.2 ? 0.25 : 0.01)
        }
    }

    /// The soak's outage (`plunkd-soak`, which failed CI with 64 requests against its
    /// bound of 62): before a fix, seeds here sent up to 113 in the 5 s, because 2xx
    /// answers to slow requests sent before the outage reset each run of failures and
    /// ended probing. In flight and in reserve when it began (16), the run of 8 that
    /// shows it, then probes spaced by a backoff of up to 1 s: 34 with room.
    @Test(
        "Plunk goes down after a flaky run with one 2xx in five slow: at most 34 requests in 5 s of outage, over 40 seeds",
        arguments: [0.3, 0.05])
    func outageAfterAFlakyRun(failing: Double) {
        let counts = (UInt64(1)...40).map { seed in
            (seed, Self.run(seed: seed, seconds: 8, plunk: Self.soakPlunk(failing: failing, downAt: 3)).sent(from: 3, to: 8))
        }
        let worst = counts.max { $0.1 < $1.1 }!
        #expect(worst.1 <= 34, "\(worst.1) requests in 5 s of outage (seed \(worst.0), \(Int(failing * 100)) % failing before)")
    }

    /// The case that taking runs in answer order got wrong the other way (`DestinationGate`):
    /// a healthy Plunk whose failures come back ahead of its successes.
    @Test("30 % of requests failing at once and the rest answered after 20 ms: at least 90 % of a healthy Plunk's deliveries, auto up to 64")
    func failuresAheadOfSuccesses() {
        let healthy = Self.run(seed: 1, seconds: 2, concurrency: 64, auto: true, initialBackoff: 1) { _, _ in
            (DeliveryMachineTests.status(200), 0.02)
        }
        for seed in UInt64(1)...4 {
            let waves = Self.run(seed: seed, seconds: 2, concurrency: 64, auto: true, initialBackoff: 1) { _, random in
                Double.random(in: 0..<1, using: &random) < 0.3
                    ? (DeliveryMachineTests.status(500), 0.0005) : (DeliveryMachineTests.status(200), 0.02)
            }
            #expect(
                Double(waves.delivered) >= 0.9 * Double(healthy.delivered),
                "\(waves.delivered) delivered against \(healthy.delivered) from a healthy Plunk (seed \(seed))")
        }
    }
}
