import Foundation
import Testing

@testable import PlunkdCore

/// The sender's decisions about Plunk as a whole, driven directly: events in with made-up
/// times, decisions out. No queue, no timer, no store, no sleep.
@Suite("The destination gate", .timeLimit(.minutes(2)), .watchdog)
struct DestinationGateTests {
    let t0 = Date(timeIntervalSince1970: 1_800_000_000)

    @Test("failures in a row: backing off at once, one probe at a time from the threshold, spaced by the gap; a sane answer ends it")
    func failureRun() {
        var gate = DestinationGate(failingAfter: 3)
        #expect(gate.state(now: t0, hasKey: true, inFlight: 0) == .idle)
        var gaps: [Int] = []
        for n in 1...3 {
            gate.failedTransiently(number: n, now: t0) {
                gaps.append($0)
                return 10
            }
            #expect(gate.isProbing == (n >= 3))
        }
        #expect(gaps == [1])
        #expect(gate.requestSlots(concurrency: 8) == 1)
        #expect(gate.state(now: t0, hasKey: true, inFlight: 0) == .backingOff)
        #expect(!gate.sendingAllowed(now: t0.addingTimeInterval(9), hasKey: true))
        #expect(gate.opensAt == t0.addingTimeInterval(10))
        _ = gate.tick(now: t0.addingTimeInterval(10))
        #expect(gate.sendingAllowed(now: t0.addingTimeInterval(10), hasKey: true))
        // Still failing: the next probe's gap grows with the run.
        gate.failedTransiently(number: 4, now: t0.addingTimeInterval(10)) {
            gaps.append($0)
            return 20
        }
        #expect(gaps == [1, 2])
        gate.answeredSanely(number: 5)
        #expect(!gate.isProbing && gate.requestSlots(concurrency: 8) == 8)
        #expect(gate.opensAt == nil)
        #expect(gate.state(now: t0.addingTimeInterval(11), hasKey: true, inFlight: 2) == .delivering)
    }

    @Test("30 % of answers failing, however they bunch short of 8 in a row: never probing, every slot keeps sending")
    func randomFailuresKeepFlowing() {
        var gate = DestinationGate(failingAfter: 8)
        var random = SplitMix64(seed: 30)
        var run = 0
        for number in 1...5_000 {
            let fails = random.next() % 100 < 30 && run < 7
            if fails {
                run += 1
                gate.failedTransiently(number: number, now: t0) { _ in 1 }
            } else {
                run = 0
                gate.answeredSanely(number: number)
            }
            #expect(!gate.isProbing)
            if gate.isProbing { return }
        }
        #expect(gate.requestSlots(concurrency: 8) == 8)
    }

    @Test("more than half failing, never 8 in a row: probing once 50 answers are in; one sane answer restores every slot")
    func partialOutage() {
        var gate = DestinationGate(failingAfter: 8)
        // Three failures in every five answers.
        for n in 0..<AnswerWindow.size {
            if n % 5 < 3 { gate.failedTransiently(number: n + 1, now: t0) { _ in 1 } } else { gate.answeredSanely(number: n + 1) }
            #expect(!gate.isProbing, "judged before the window was full (answer \(n + 1))")
        }
        gate.failedTransiently(number: AnswerWindow.size + 1, now: t0) { _ in 1 }
        #expect(gate.isProbing)
        #expect(gate.requestSlots(concurrency: 8) == 1)
        gate.answeredSanely(number: 3)
        #expect(!gate.isProbing && gate.requestSlots(concurrency: 8) == 8, "a partial outage ends with any sane answer")
        #expect(gate.recentAnswers.count == 0, "the outage is not held against the recovery")
    }

    @Test("a total outage after a healthy run: probing at the 8th failure in a row, not before")
    func outageAfterHealth() {
        var gate = DestinationGate(failingAfter: 8)
        for number in 1...200 { gate.answeredSanely(number: number) }
        var gaps: [Int] = []
        for n in 1...9 {
            gate.failedTransiently(number: 200 + n, now: t0) {
                gaps.append($0)
                return 1
            }
            #expect(gate.isProbing == (n >= 8))
        }
        #expect(gaps == [1, 2], "each failed probe waits longer")
    }

    @Test("one wave's failures answered ahead of its successes are no run: requests sent between them are still out")
    func failuresAheadOfTheirWave() {
        var gate = DestinationGate(failingAfter: 8)
        // 64 sent; the 21 numbered 3, 6, 9 … fail at once, while the others are still out.
        let failing = Array(stride(from: 3, through: 63, by: 3))
        for number in failing {
            gate.failedTransiently(number: number, now: t0) { _ in 1 }
            #expect(!gate.isProbing, "failure \(number) of a wave whose successes are still out")
        }
        #expect(gate.consecutiveFailures == 21, "status still shows the failures as they came")
        for number in 1...64 where !failing.contains(number) { gate.answeredSanely(number: number) }
        #expect(gate.consecutiveFailures == 0 && !gate.isProbing)
        // A real outage: 8 sent one after another all fail.
        for number in 65...71 { gate.failedTransiently(number: number, now: t0) { _ in 1 } }
        #expect(!gate.isProbing)
        gate.failedTransiently(number: 72, now: t0) { _ in 1 }
        #expect(gate.isProbing, "8 sent one after another, all failed, are an outage")
    }

    @Test("requests sent before an outage and answered sanely during it break no run and end no probing; a probe's answer does")
    func oldNewsDuringAnOutage() {
        var gate = DestinationGate(failingAfter: 8)
        // 1…6 are slow and still out when Plunk goes down; 7…14 fail at once, answered first.
        for number in 7...14 { gate.failedTransiently(number: number, now: t0) { _ in 1 } }
        #expect(gate.isProbing)
        for number in 1...6 {
            gate.answeredSanely(number: number)
            #expect(gate.isProbing, "request \(number), sent before the outage, says nothing of Plunk now")
        }
        #expect(gate.requestSlots(concurrency: 8) == 1)
        // Before probing, an old answer between the failures breaks no run either.
        var second = DestinationGate(failingAfter: 8)
        for number in 7...10 { second.failedTransiently(number: number, now: t0) { _ in 1 } }
        second.answeredSanely(number: 1)
        #expect(second.consecutiveFailures == 0)
        for number in 11...14 { second.failedTransiently(number: number, now: t0) { _ in 1 } }
        #expect(second.isProbing, "the run 7…14 in send order stands")
        // The probe, sent after the run, answers sanely: Plunk is back.
        gate.answeredSanely(number: 15)
        #expect(!gate.isProbing && gate.requestSlots(concurrency: 8) == 8)
    }

    @Test("a 429 blocks Plunk-wide for Retry-After, capped; a sane answer meanwhile does not lift it, time does")
    func rateLimit() {
        var gate = DestinationGate(failingAfter: 3)
        let wait = gate.rateLimited(retryAfter: 900, now: t0, cap: 300) { _ in 1 }
        #expect(wait == 300)
        #expect(gate.state(now: t0, hasKey: true, inFlight: 0) == .rateLimited)
        gate.answeredSanely(number: 1)
        #expect(!gate.sendingAllowed(now: t0.addingTimeInterval(299), hasKey: true))
        #expect(gate.tick(now: t0.addingTimeInterval(300)) == nil)
        #expect(gate.sendingAllowed(now: t0.addingTimeInterval(300), hasKey: true))
        // Without Retry-After: backoff by the count of 429s in a row.
        var counts: [Int] = []
        _ = gate.rateLimited(retryAfter: nil, now: t0, cap: 300) {
            counts.append($0)
            return 2
        }
        _ = gate.rateLimited(retryAfter: nil, now: t0, cap: 300) {
            counts.append($0)
            return 4
        }
        #expect(counts == [1, 2])
    }

    @Test("a 402 pauses until the 1st of next month (UTC), stored once, and ends by itself when the month turns")
    func quotaPauseEndsByItself() {
        var gate = DestinationGate(failingAfter: 3)
        let until = MonthBoundary.startOfNextMonth(after: t0)
        #expect(gate.quotaExceeded(now: t0) == .quotaPaused(until: until))
        #expect(gate.holdChanged)
        gate.holdChanged = false
        #expect(gate.quotaExceeded(now: t0.addingTimeInterval(5)) == nil)
        #expect(!gate.holdChanged)
        #expect(gate.state(now: t0, hasKey: true, inFlight: 0) == .quotaPaused)
        #expect(gate.opensAt == until)
        #expect(gate.tick(now: until.addingTimeInterval(-1)) == nil)
        #expect(!gate.sendingAllowed(now: until.addingTimeInterval(-1), hasKey: true))
        #expect(gate.tick(now: until) == .pauseOver)
        #expect(gate.holdChanged)
        #expect(gate.sendingAllowed(now: until, hasKey: true))
        #expect(gate.state(now: until, hasKey: true, inFlight: 0) == .idle)
    }

    @Test("a 401 holds until resume; a stored hold comes back held; no key outranks everything")
    func authHold() {
        var gate = DestinationGate(failingAfter: 3)
        #expect(gate.keyRefused(fingerprint: "abc", now: t0) == .keyRefused)
        #expect(gate.keyRefused(fingerprint: "abc", now: t0.addingTimeInterval(1)) == nil)
        #expect(gate.hold.heldSince == t0)
        #expect(gate.state(now: t0, hasKey: true, inFlight: 0) == .authHeld)
        #expect(gate.state(now: t0, hasKey: false, inFlight: 0) == .noAPIKey)
        // Time alone never lifts it.
        _ = gate.tick(now: t0.addingTimeInterval(86_400 * 60))
        #expect(!gate.sendingAllowed(now: t0.addingTimeInterval(86_400 * 60), hasKey: true))
        let restarted = DestinationGate(failingAfter: 3, hold: gate.hold)
        #expect(restarted.state(now: t0, hasKey: true, inFlight: 0) == .authHeld)
        gate.resume()
        #expect(gate.holdChanged && gate.hold == StoredDeliveryHold())
        #expect(gate.sendingAllowed(now: t0, hasKey: true))
    }
}
