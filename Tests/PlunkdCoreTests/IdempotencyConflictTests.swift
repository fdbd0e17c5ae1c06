import Foundation
import NIOCore
import Testing

@testable import PlunkdCore

/// v2's 409 answers against a stand-in that keeps keys the way v2's middleware does: each
/// case ends with the event stored at Plunk exactly once.
@Suite("v2's 409 IDEMPOTENCY_KEY_REUSED, read right", .timeLimit(.minutes(2)), .watchdog)
struct IdempotencyConflictTests {
    /// The keys of every request for the event named `name`, in arrival order.
    func keys(_ fixture: DeliveryFixture, _ name: String) -> [String] {
        fixture.fake.requests.filter { $0.eventName == name }.compactMap(\.idempotencyKey)
    }

    @Test(
        "Plunk's contract: a track event stored, answered 500 and kept by its key is delivered as accepted_recovering on the 409, never sent under a new key: one event at Plunk"
    )
    func storedThenFailedIsAcceptedRecovering() async throws {
        // Plunk's newest track: the event is stored, dispatch fails (500), the key stays.
        let plunk = V2IdempotentPlunk { _ in .store(status: 500) }
        let fixture = try await DeliveryFixture(responder: plunk.responder)
        let event = try fixture.enqueue(1)[0]
        #expect(try await fixture.waitUntilEmpty())
        let id = event.id.uuidString.lowercased()
        #expect(plunk.stored == ["e0"])
        #expect(keys(fixture, "e0") == [id, id])
        #expect(plunk.conflicts.map(\.original) == [500])
        #expect(try fixture.counter("attempts_accepted_recovering_total") == 1)
        #expect(try fixture.counter("delivered_total") == 1)
        #expect(try fixture.counter("rekeyed_total") == 0)
        await fixture.stop()
    }

    @Test(
        "the first-seen-contact race (500, key kept), with plunk.rekey_burned_track_keys: the 409 says 500, the event is sent again under a derived key and stored once"
    )
    func raceIsResentUnderANewKey() async throws {
        let plunk = V2IdempotentPlunk { request in
            request.idempotencyKey?.contains(".r") == true ? .store(status: 200) : .fail(status: 500)
        }
        let fixture = try await DeliveryFixture(rekeyBurnedTrackKeys: true, responder: plunk.responder)
        let event = try fixture.enqueue(1)[0]
        #expect(try await fixture.waitUntilEmpty())
        let id = event.id.uuidString.lowercased()
        #expect(plunk.stored == ["e0"])
        #expect(keys(fixture, "e0") == [id, id, "\(id).r1"])
        #expect(plunk.conflicts.map(\.original) == [500])
        #expect(try fixture.counter("rekeyed_total") == 1)
        #expect(try fixture.counter("delivered_total") == 1)
        #expect(try fixture.counter("duplicates_suppressed_total") == 0)
        await fixture.stop()
    }

    @Test(
        "first attempt still running (null), then stored and failing: asked again with the same key until the 409 says 500, then accepted_recovering; never a new key"
    )
    func runningThenFailing() async throws {
        // The first attempt outlives plunkd's 0.3 s timeout by far, then fails after storing.
        let plunk = V2IdempotentPlunk { _ in .store(status: 500, delay: .milliseconds(1500)) }
        let fixture = try await DeliveryFixture(requestTimeout: 0.3, responder: plunk.responder)
        let event = try fixture.enqueue(1)[0]
        #expect(try await fixture.waitUntilEmpty())
        let id = event.id.uuidString.lowercased()
        #expect(plunk.stored == ["e0"])
        let conflicts = plunk.conflicts.map(\.original)
        #expect(conflicts.contains(nil))
        #expect(conflicts.last == 500)
        #expect(keys(fixture, "e0").allSatisfy { $0 == id })
        #expect(try fixture.counter("rekeyed_total") == 0)
        #expect(try fixture.counter("attempts_accepted_recovering_total") == 1)
        await fixture.stop()
    }

    @Test("first attempt still running, then stored with 200: delivered on the 409 that says 200, nothing sent after it")
    func runningThenStored() async throws {
        let plunk = V2IdempotentPlunk { _ in .store(status: 200, delay: .milliseconds(1500)) }
        let fixture = try await DeliveryFixture(requestTimeout: 0.3, responder: plunk.responder)
        let event = try fixture.enqueue(1)[0]
        #expect(try await fixture.waitUntilEmpty())
        let sentBeforeStop = fixture.fake.requests.count
        await fixture.sender.shutdown(grace: .seconds(5))
        let id = event.id.uuidString.lowercased()
        #expect(plunk.stored == ["e0"])
        #expect(keys(fixture, "e0").allSatisfy { $0 == id })
        #expect(plunk.conflicts.last?.original == 200)
        // The last request was the one answered with the 409 that said 200.
        #expect(plunk.conflicts.count == sentBeforeStop - 1)
        #expect(fixture.fake.requests.count == sentBeforeStop)
        #expect(try fixture.counter("duplicates_suppressed_total") == 1)
        #expect(try fixture.counter("rekeyed_total") == 0)
        await fixture.stop()
    }

    @Test("409s saying the first attempt still runs do not make Plunk count as failing")
    func runningIsNotFailing() async throws {
        // The first attempt never finishes: every later ask is a 409 null.
        let plunk = V2IdempotentPlunk { _ in .hang }
        let fixture = try await DeliveryFixture(requestTimeout: 0.2, responder: plunk.responder)
        try fixture.enqueue(1)
        #expect(await fixture.fake.waitFor { _ in plunk.conflicts.count >= 5 })
        let snapshot = fixture.sender.snapshot()
        #expect(snapshot.consecutiveFailures == 0)
        #expect(snapshot.state != .backingOff)
        #expect(plunk.stored.isEmpty)
        #expect(try fixture.counter("attempts_first_attempt_running_total") >= 4)
        await fixture.stop()
    }

    @Test("with plunk.rekey_burned_track_keys, a rekeyed event keeps its place in its contact's line: its follower is sent only after it is stored")
    func rekeyKeepsContactOrder() async throws {
        let plunk = V2IdempotentPlunk { request in
            request.eventName == "e0" && request.idempotencyKey?.contains(".r") != true ? .fail(status: 500) : .store(status: 200)
        }
        let fixture = try await DeliveryFixture(rekeyBurnedTrackKeys: true, responder: plunk.responder)
        try fixture.enqueue(3, contact: { _ in "same@example.com" })
        #expect(try await fixture.waitUntilEmpty())
        #expect(plunk.stored == ["e0", "e1", "e2"])
        let names = fixture.fake.requests.map { $0.eventName ?? "?" }
        let lastE0 = try #require(names.lastIndex(of: "e0"))
        let firstE1 = try #require(names.firstIndex(of: "e1"))
        #expect(lastE0 < firstE1)
        #expect(try fixture.counter("rekeyed_total") == 1)
        await fixture.stop()
    }

    @Test("with plunk.rekey_burned_track_keys, a derived key is stored with the event: a new sender on the same store sends the same one")
    func derivedKeySurvivesRestart() async throws {
        let plunk = V2IdempotentPlunk { request in
            request.idempotencyKey?.contains(".r") == true ? .hang : .fail(status: 500)
        }
        let fixture = try await DeliveryFixture(requestTimeout: 3, rekeyBurnedTrackKeys: true, responder: plunk.responder)
        let event = try fixture.enqueue(1)[0]
        let id = event.id.uuidString.lowercased()
        #expect(await fixture.fake.waitFor { requests in requests.contains { $0.idempotencyKey == "\(id).r1" } })
        // The derived key's request hangs; a restart puts the event back in line.
        let after = V2IdempotentPlunk { _ in .store(status: 200) }
        fixture.fake.respond(with: after.responder)
        try await fixture.restartSender(grace: .milliseconds(100))
        #expect(try await fixture.waitUntilEmpty())
        #expect(after.stored == ["e0"])
        // The bare id twice (a 500, then its burned key's 409), then only the derived key:
        // asked again while its first attempt hangs (as often as the machine's pace
        // allows before the restart), and sent by the new sender, which delivers it.
        let sent = keys(fixture, "e0")
        #expect(Array(sent.prefix(3)) == [id, id, "\(id).r1"], "\(sent)")
        #expect(sent.count >= 4 && sent.dropFirst(2).allSatisfy { $0 == "\(id).r1" }, "\(sent)")
        await fixture.stop()
    }
}
