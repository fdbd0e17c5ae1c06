import Foundation
import PlunkdTestSupport
import Testing

@testable import PlunkdCore

/// `plunk.concurrency: auto`, driven against a simulated Plunk: `workers` requests served
/// at once, each taking `service` seconds, the rest queued (so a round trip grows once
/// the limit passes the server's capacity, as a real overloaded server's does). Made-up
/// times only: no clock, no sleep.
@Suite("adaptive concurrency", .timeLimit(.minutes(2)), .watchdog)
struct AdaptiveConcurrencyTests {
    static let start = Date(timeIntervalSince1970: 1_800_000_000)

    /// What a simulated run measured.
    struct Run {
        /// Answers per second in each whole second of the run.
        var ratePerSecond: [Double]
        var limits: [Int]
        var meanRoundTrip: Double
        var final: AdaptiveConcurrency

        /// The first second whose rate reached `share` of `capacity`.
        func secondsToReach(_ share: Double, of capacity: Double) -> Int? {
            ratePerSecond.firstIndex { $0 >= share * capacity }
        }

        func steadyRate(from second: Int) -> Double {
            let tail = ratePerSecond.dropFirst(second)
            return tail.reduce(0, +) / Double(tail.count)
        }
    }

    /// A backlog that never runs out, sent as fast as the limit allows for `seconds`.
    /// `backPressure(n, now)` decides whether the n-th answer is back pressure.
    static func simulate(
        limiter: AdaptiveConcurrency, workers: Int, service: TimeInterval, seconds: Int, from start: Date = Self.start,
        backPressure: (Int, Date) -> Bool = { _, _ in false }
    ) -> Run {
        var limiter = limiter
        var workerFree = [Date](repeating: start, count: workers)
        // (answer time, sent time), kept sorted by answer time.
        var inFlight: [(answeredAt: Date, sentAt: Date)] = []
        var now = start
        let end = start.addingTimeInterval(TimeInterval(seconds))
        var answersPerSecond = [Int](repeating: 0, count: seconds)
        var limits: [Int] = []
        var roundTrips = 0.0
        var answers = 0
        while now < end {
            while inFlight.count < limiter.limit {
                let worker = workerFree.indices.min { workerFree[$0] < workerFree[$1] }!
                let done = max(now, workerFree[worker]).addingTimeInterval(service)
                workerFree[worker] = done
                let index = inFlight.firstIndex { $0.answeredAt > done } ?? inFlight.endIndex
                inFlight.insert((done, now), at: index)
                limiter.noteInFlight(inFlight.count)
            }
            let next = inFlight.removeFirst()
            now = next.answeredAt
            guard now < end else { break }
            answers += 1
            answersPerSecond[Int(now.timeIntervalSince(start))] += 1
            roundTrips += now.timeIntervalSince(next.sentAt)
            limiter.answered(sentAt: next.sentAt, now: now, backPressure: backPressure(answers, now))
            limits.append(limiter.limit)
        }
        return Run(
            ratePerSecond: answersPerSecond.map(Double.init), limits: limits, meanRoundTrip: roundTrips / Double(max(answers, 1)),
            final: limiter)
    }

    @Test("a far-away Plunk with room to spare: the limit doubles per round trip to its maximum, and the rate follows within two seconds")
    func rampsUpFast() {
        let run = Self.simulate(limiter: AdaptiveConcurrency(maximum: 64), workers: 1000, service: 0.150, seconds: 10)
        let capacity = 64 / 0.150
        #expect(run.final.limit == 64, "\(run.limits.suffix(20))")
        let reached = run.secondsToReach(0.9, of: capacity)
        #expect(reached != nil && reached! <= 2, "rates \(run.ratePerSecond), capacity \(capacity)")
        #expect(run.steadyRate(from: 3) >= 0.95 * capacity, "rates \(run.ratePerSecond)")
    }

    @Test("a Plunk that serves 16 at a time: the limit settles near its capacity, queueing stays short, and the rate stays at least 90 % of the capacity")
    func findsCapacity() {
        let service = 0.150
        let run = Self.simulate(limiter: AdaptiveConcurrency(maximum: 256), workers: 16, service: service, seconds: 60)
        let capacity = 16 / service
        #expect(run.steadyRate(from: 5) >= 0.9 * capacity, "rates \(run.ratePerSecond)")
        let steadyLimits = run.limits.suffix(run.limits.count / 2)
        let meanLimit = Double(steadyLimits.reduce(0, +)) / Double(steadyLimits.count)
        // Growth stops once round trips rise by half: about 24 in flight, never the 256 allowed.
        #expect(meanLimit >= 16 && meanLimit <= 32, "mean limit \(meanLimit): \(steadyLimits.suffix(40))")
        #expect(run.meanRoundTrip <= 2 * service, "mean round trip \(run.meanRoundTrip)")
    }

    @Test("back pressure halves the limit once per round trip: answers to requests sent before the cut do not cut again")
    func backPressureOncePerRoundTrip() {
        var limiter = AdaptiveConcurrency(maximum: 64)
        let sent = Self.start
        // Grow to the maximum on flat 100 ms round trips.
        let grown = Self.simulate(limiter: limiter, workers: 1000, service: 0.1, seconds: 3)
        limiter = grown.final
        #expect(limiter.limit == 64)
        let now = sent.addingTimeInterval(10)
        for n in 0..<64 {
            limiter.answered(sentAt: now.addingTimeInterval(-0.1), now: now.addingTimeInterval(Double(n) * 0.001), backPressure: true)
        }
        #expect(limiter.limit == 32, "64 answers of one round trip, all back pressure")
        // A request sent after the cut that meets back pressure again cuts again.
        limiter.answered(sentAt: now.addingTimeInterval(0.07), now: now.addingTimeInterval(0.17), backPressure: true)
        #expect(limiter.limit == 16)
    }

    @Test("after an outage shrank it to one, the limit doubles back to where it was within seconds, not one step per round trip")
    func recoversAfterOutage() {
        var limiter = Self.simulate(limiter: AdaptiveConcurrency(maximum: 64), workers: 1000, service: 0.150, seconds: 3).final
        var now = Self.start.addingTimeInterval(10)
        for _ in 0..<10 {
            limiter.answered(sentAt: now, now: now.addingTimeInterval(0.2), backPressure: true)
            now = now.addingTimeInterval(0.3)
        }
        #expect(limiter.limit == 1)
        let run = Self.simulate(limiter: limiter, workers: 1000, service: 0.150, seconds: 5, from: now)
        #expect(run.final.limit == 64, "\(run.limits.prefix(40))")
        let reached = run.secondsToReach(0.9, of: 64 / 0.150)
        #expect(reached != nil && reached! <= 2, "rates \(run.ratePerSecond)")
    }

    @Test(
        "a path that becomes slower for good (50 ms to 150 ms) is not taken for a queue for ten minutes: once one request in flight still sees it, it is the new baseline, and the limit grows back"
    )
    func slowerPathBecomesBaseline() {
        let fast = Self.simulate(limiter: AdaptiveConcurrency(maximum: 64), workers: 1000, service: 0.05, seconds: 5)
        #expect(fast.final.limit == 64)
        let slow = Self.simulate(
            limiter: fast.final, workers: 1000, service: 0.15, seconds: 40, from: Self.start.addingTimeInterval(5))
        #expect(slow.limits.min() == 1, "the limit never came down to one: \(slow.limits.prefix(200))")
        #expect(slow.final.limit == 64, "\(slow.limits.suffix(40))")
        #expect(slow.final.baseline.map { $0 >= 0.14 } == true, "baseline \(slow.final.baseline ?? 0)")
    }

    @Test("random plain 500s are answers, not back pressure: with 30 % of them the limit still reaches its maximum")
    func plainFailuresDoNotShrink() {
        #expect(!DeliveryOutcome.transient(status: 500, detail: "").isBackPressure)
        #expect(!DeliveryOutcome.transient(status: 502, detail: "").isBackPressure)
        #expect(DeliveryOutcome.transient(status: 503, detail: "").isBackPressure)
        #expect(DeliveryOutcome.transient(status: 504, detail: "").isBackPressure)
        #expect(DeliveryOutcome.transient(status: nil, detail: "timed out").isBackPressure)
        #expect(DeliveryOutcome.rateLimited(retryAfter: 1, detail: "").isBackPressure)
        #expect(!DeliveryOutcome.delivered.isBackPressure)
        var random = SplitMix64(seed: 14)
        let run = Self.simulate(limiter: AdaptiveConcurrency(maximum: 64), workers: 1000, service: 0.02, seconds: 4) { _, _ in
            // What the machine passes for a 500 is `isBackPressure`, false: draw it anyway,
            // so a limiter that shrank on every failure would be caught here too.
            let failed = random.next() % 10 < 3
            return failed && DeliveryOutcome.transient(status: 500, detail: "").isBackPressure
        }
        #expect(run.final.limit == 64)
    }

    @Test("the machine with auto, 30 % of requests answered 500 at once and the rest 200 after 20 ms: every slot keeps sending, the limit reaches its maximum")
    func immediateFailuresDoNotShrink() {
        var drive = DeliveryMachineTests.Drive(concurrency: 32, failingAfter: 8, adaptsConcurrency: true)
        var available = (0..<30000).map { _ in drive.event() }
        drive.wake(available: &available)
        var random = SplitMix64(seed: 36)
        var due: [(at: Date, event: ClaimedEvent, fails: Bool)] = []
        var seen = 0
        var maxInFlight = 0
        for _ in 0..<8000 {
            for event in drive.sent.dropFirst(seen) {
                let fails = random.next() % 10 < 3
                due.append((drive.now.addingTimeInterval(fails ? 0.0005 : 0.02), event, fails))
            }
            seen = drive.sent.count
            maxInFlight = max(maxInFlight, due.count)
            guard let index = due.indices.min(by: { due[$0].at < due[$1].at }) else { break }
            let next = due.remove(at: index)
            drive.now = max(drive.now, next.at)
            drive.answer(next.event, DeliveryMachineTests.status(next.fails ? 500 : 200))
            drive.settle(available: &available)
        }
        #expect(drive.machine.concurrencyLimit == 32, "the limit fell to \(drive.machine.concurrencyLimit)")
        #expect(maxInFlight == 32)
        #expect(!drive.machine.gate.isProbing)
    }

    @Test("the daemon by default (auto) starts at 2 in flight at most; PLUNK_CONCURRENCY=8 pins 8")
    func daemonWiresAuto() async throws {
        let fake = try await FakePlunk()
        for (value, expected) in [(nil, 2), ("auto", 2), ("8", 8)] as [(String?, Int)] {
            let directory = try DaemonProcess.makeScratchDirectory()
            defer { try? FileManager.default.removeItem(atPath: directory) }
            let extra = value.map { ["PLUNK_CONCURRENCY": $0] } ?? [:]
            let daemon = try DaemonProcess(directory: directory, environment: TLSDeliveryTests.environment(fake, extra))
            defer { daemon.cleanUp(removeDirectory: false) }
            try daemon.waitUntilServing()
            let status = try TLSDeliveryTests.statusJSON(daemon)
            #expect(status.json["concurrency_limit"] as? Int == expected, "\(value ?? "default"): \(status.text)")
        }
        await fake.stop()
    }

    @Test("the machine with auto: two requests at first, then more each round trip, up to the maximum; a fixed number stays fixed")
    func machineUsesTheLimit() {
        for adapts in [true, false] {
            var drive = DeliveryMachineTests.Drive(concurrency: 32, adaptsConcurrency: adapts)
            var available = (0..<5000).map { _ in drive.event() }
            drive.wake(available: &available)
            #expect(drive.sent.count == (adapts ? 2 : 32))
            var answered = 0
            var sentAt: [Int64: Date] = [:]
            var maxInFlight = 0
            for _ in 0..<2000 {
                for event in drive.sent where sentAt[event.seq] == nil { sentAt[event.seq] = drive.now }
                let inFlight = drive.sent.dropFirst(answered)
                maxInFlight = max(maxInFlight, inFlight.count)
                guard let next = inFlight.first else { break }
                drive.now = max(drive.now, sentAt[next.seq]!.addingTimeInterval(0.15))
                drive.answer(next, DeliveryMachineTests.status(200))
                answered += 1
                drive.settle(available: &available)
            }
            #expect(maxInFlight == 32, "adapts \(adapts)")
            #expect(drive.machine.concurrencyLimit == 32)
            #expect(drive.machine.snapshot(now: drive.now).concurrencyLimit == 32)
        }
    }
}
