import Foundation
import Testing

@testable import PlunkdCore

/// What a crash can send twice, bounded: requests in flight plus 2xx answers not yet
/// committed never pass 2 × concurrency, however slowly the store commits. Each is an
/// event a legacy host would store again after a restart.
///
/// Nothing in the machine counts them: the bound follows from the claim. A turn claims
/// at most the free slots plus a reserve as large, minus what is in flight or ready, and
/// claimed events only arrive when their transaction commits, which also records every
/// answer handed to it; with one transaction at a time, answered-not-recorded and in
/// flight together never exceed the events one claim can hold. A reserve of 2 × slots
/// (a claim target of 3 × concurrency) fails this test at once.
@Suite("duplicate bound", .timeLimit(.minutes(2)), .watchdog)
struct DuplicateBoundTests {
    @Test(
        "a slow store: answers pile up behind its commits, yet in flight plus answered-not-recorded stays within 2 × concurrency (fixed, or auto's maximum)",
        arguments: [1, 2, 4, 8, 64], [false, true])
    func slowStoreBoundsUnrecorded(concurrency: Int, auto: Bool) {
        let seed = UInt64(concurrency * 7919) + (auto ? 1 : 0)
        var random = SplitMix64(seed: seed)
        var drive = DeliveryMachineTests.Drive(concurrency: concurrency, adaptsConcurrency: auto)
        var available = (0..<3000).map { _ in drive.event() }
        var answeredOK: Set<Int64> = []
        var committed: Set<Int64> = []
        var answered: Set<Int64> = []
        var worst = 0
        var largestLimit = 0
        drive.wake(available: &available)
        for _ in 0..<4000 {
            // Time passes (a millisecond a step), so auto sees round trips and grows.
            drive.now = drive.now.addingTimeInterval(0.001)
            let outstanding = drive.sent.map(\.seq).filter { !answered.contains($0) }
            let roll = Double.random(in: 0..<1, using: &random)
            if !outstanding.isEmpty && roll < 0.6 {
                let seq = outstanding[Int(Double.random(in: 0..<1, using: &random) * Double(outstanding.count))]
                let event = drive.sent.first { $0.seq == seq }!
                let ok = Double.random(in: 0..<1, using: &random) < 0.9
                answered.insert(seq)
                if ok { answeredOK.insert(seq) }
                drive.answer(event, DeliveryMachineTests.status(ok ? 200 : 500))
            } else if drive.turnPending && roll < 0.8 {
                drive.turn()
            } else if !drive.stored.isEmpty && roll < 0.85 {
                // The disk: one commit in a while, while answers keep coming.
                drive.finishStore(available: &available)
            } else if drive.stored.isEmpty && !drive.turnPending {
                drive.wake(available: &available)
            }
            // Every transaction that finished, the ones a wake-up's turns ran included.
            for work in drive.finished { for case .delivered(let seq) in work.moves { committed.insert(seq) } }
            drive.finished.removeAll()
            let unrecorded = drive.sent.count - answered.count + answeredOK.subtracting(committed).count
            worst = max(worst, unrecorded)
            largestLimit = max(largestLimit, drive.machine.concurrencyLimit)
            if unrecorded > 2 * concurrency {
                Issue.record("\(unrecorded) requests in flight or answered and not recorded, over 2 × \(concurrency) (seed \(seed))")
                return
            }
        }
        #expect(answeredOK.count > 200, "the run delivered little: it proved little (seed \(seed))")
        // A plain 500 is not back pressure, so auto grows until round trips rise: this
        // simulated Plunk answers one random outstanding request at a time, so a round
        // trip grows with the requests in flight, and auto settles at 4 to 8.
        let reached = auto ? min(concurrency, 4) : concurrency
        #expect(largestLimit >= reached, "the limit never reached \(reached): the run did not test it (seed \(seed))")
        #expect(worst > reached, "answers never piled up behind a commit: the store was not slow enough to test the bound (seed \(seed))")
    }
}
