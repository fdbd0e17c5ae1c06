import Foundation
import Testing

@testable import PlunkdCore

/// Ingest wakes the sender after every commit only when new events could be sent now.
@Suite("Waking the sender", .timeLimit(.minutes(2)), .watchdog)
struct SenderWakeTests {
    @Test("a sender that cannot send is not woken by commits; the turn that can send takes what arrived")
    func noWakeWhileHeld() async throws {
        let fixture = try await DeliveryFixture(apiKey: nil)
        fixture.sender.queue.sync {}  // the first turn has run and found no key
        let usefulWhileHeld = fixture.sender.newEventsUseful.load(ordering: .sequentiallyConsistent)
        #expect(!usefulWhileHeld)
        for _ in 0..<5 { try fixture.enqueue(4) }
        fixture.sender.queue.sync {}
        let wakeUpsWhileHeld = fixture.sender.wakeUps.load(ordering: .relaxed)
        #expect(wakeUpsWhileHeld == 0)
        #expect(fixture.fake.requests.isEmpty)

        try await fixture.sender.updateAPIKey(DeliveryFixture.key)
        #expect(try await fixture.waitUntilEmpty())
        #expect(fixture.fake.requests.count == 20)
        let usefulWithKey = fixture.sender.newEventsUseful.load(ordering: .sequentiallyConsistent)
        #expect(usefulWithKey)
        await fixture.stop()
    }

    @Test("an idle sender with free slots is woken by each commit and delivers at once")
    func idleSenderIsWoken() async throws {
        let fixture = try await DeliveryFixture()
        for round in 1...3 {
            try fixture.enqueue(1, name: "r\(round)-")
            #expect(try await fixture.waitUntilEmpty())
            #expect(fixture.fake.requests.count == round)
        }
        let wakeUps = fixture.sender.wakeUps.load(ordering: .relaxed)
        #expect(wakeUps == 3)
        await fixture.stop()
    }
}
