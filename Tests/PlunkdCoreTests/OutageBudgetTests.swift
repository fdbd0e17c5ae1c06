import Foundation
import Synchronization
import Testing

@testable import PlunkdCore

/// A total outage with a backlog waiting: what plunkd sends Plunk in its first seconds,
/// on the shipped settings (concurrency 8, probing after 8 failures in a row, backoff
/// from 1 s). Issue 14's target: at most 25 requests in 4 s with 300 events pending.
@Suite("outage budget", .timeLimit(.minutes(2)), .watchdog)
struct OutageBudgetTests {
    @Test(
        "300 pending, every answer a 503 after 20 ms: at most 25 requests in the first 4 s, with 8 fixed or auto up to 64",
        arguments: [UInt64(1), 2, 3, 4, 5, 6, 7, 8], [false, true])
    func totalOutage(seed: UInt64, auto: Bool) {
        let random = Mutex(SplitMix64(seed: seed))
        let defaults = DaemonConfiguration.defaults(uid: 1000, environment: [:])
        var drive = DeliveryMachineTests.Drive(
            concurrency: auto ? defaults.maxConcurrency : 8,
            retry: RetryPolicy(initialBackoff: defaults.initialBackoff, maxBackoff: defaults.maxBackoff, maxAge: defaults.maxAge),
            failingAfter: DeliverySettings(apiKey: nil, concurrency: 8, retry: RetryPolicy(initialBackoff: 1, maxBackoff: 1, maxAge: 1)).failingAfter,
            unitRandom: { random.withLock { Double.random(in: 0..<1, using: &$0) } }, adaptsConcurrency: auto)
        var available = (0..<300).map { _ in drive.event() }
        let end = drive.now.addingTimeInterval(4)
        drive.wake(available: &available)
        for _ in 0..<10_000 where drive.now < end {
            if !drive.machine.inFlight.isEmpty {
                // Every request in flight is answered 503, 20 ms after the last step.
                drive.now = drive.now.addingTimeInterval(0.02)
                for (_, flight) in drive.machine.inFlight.sorted(by: { $0.key < $1.key }) {
                    drive.answer(flight.event, DeliveryMachineTests.status(503))
                }
                drive.settle(available: &available)
            } else if let wake = drive.machine.timerDeadline, wake > drive.now {
                drive.now = wake
                drive.fireTimer(available: &available)
            } else {
                Issue.record("nothing in flight and no timer: delivery stopped during an outage (seed \(seed))")
                return
            }
        }
        let sent = drive.sent.count
        #expect(sent <= 25, "\(sent) requests in 4 s of total outage (seed \(seed), auto \(auto))")
        #expect(
            drive.machine.timerDeadline != nil || !drive.machine.inFlight.isEmpty,
            "no probe out and no timer: nothing would look again after the outage (seed \(seed))")
    }
}
