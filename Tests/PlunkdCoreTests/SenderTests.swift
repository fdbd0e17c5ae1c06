import Foundation
import GRDB
import PlunkdTestSupport
import Synchronization
import Testing

@testable import PlunkdCore

@Suite("Delivery to a fake Plunk", .timeLimit(.minutes(2)), .watchdog)
struct SenderTests {
    @Test("events are posted with the key, JSON type, their id as Idempotency-Key and their body as received")
    func delivers() async throws {
        let fixture = try await DeliveryFixture()
        let events = try fixture.enqueue(20)
        #expect(try await fixture.waitUntilEmpty())
        let requests = fixture.fake.requests
        #expect(requests.count == 20)
        for event in events {
            let request = try #require(requests.first { $0.idempotencyKey == event.id.uuidString.lowercased() })
            #expect(request.path == "/v1/track")
            #expect(request.headers["authorization"] == "Bearer \(DeliveryFixture.key.value)")
            #expect(request.headers["content-type"] == "application/json")
            #expect(request.body == event.body)
        }
        #expect(try fixture.counter("delivered_total") == 20)
        #expect(try fixture.counter("attempts_delivered_total") == 20)
        #expect(fixture.outbox.storedCount == 0)
        await fixture.stop()
    }

    @Test("a v2 success body and a 409 IDEMPOTENCY_KEY_REUSED without details both count as delivered")
    func v2AndDuplicates() async throws {
        let fixture = try await DeliveryFixture { request in
            request.index % 2 == 0
                ? FakePlunk.v2Success()
                : FakePlunk.v2Error(409, "IDEMPOTENCY_KEY_REUSED", "Idempotency key already used")
        }
        try fixture.enqueue(10)
        #expect(try await fixture.waitUntilEmpty())
        #expect(try fixture.counter("delivered_total") == 10)
        #expect(try fixture.counter("duplicates_suppressed_total") == 5)
        await fixture.stop()
    }

    @Test("an event Plunk refuses is parked `rejected` with status and answer; others go on")
    func rejected() async throws {
        let fixture = try await DeliveryFixture { request in
            request.eventName == "e3" ? FakePlunk.v2Error(422, "VALIDATION_ERROR", "Invalid email") : FakePlunk.legacySuccess()
        }
        let events = try fixture.enqueue(6)
        #expect(try await fixture.waitForStore { pending, inFlight, parked in pending + inFlight == 0 && parked[.rejected] == 1 })
        let row = try #require(try fixture.parkedRow(id: events[3].id))
        #expect(row["state"] as String == "parked")
        #expect(row["park_reason"] as String == "rejected")
        #expect(row["last_status"] as Int == 422)
        #expect((row["last_error"] as String).contains("VALIDATION_ERROR"))
        #expect(try fixture.counter("delivered_total") == 5)
        #expect(try fixture.counter("parked_rejected_total") == 1)
        #expect(fixture.fake.requests.count == 6)
        await fixture.stop()
    }

    @Test("401 parks `unauthorized` and holds delivery; a new key puts them back in line in order")
    func unauthorizedHold() async throws {
        let fixture = try await DeliveryFixture(concurrency: 1) { request in
            request.headers["authorization"] == "Bearer pk_good_key"
                ? FakePlunk.legacySuccess()
                : FakePlunk.legacyError(401, "Invalid API key")
        }
        let events = try fixture.enqueue(5, contact: { _ in "same@example.com" })
        #expect(try await fixture.waitForStore { _, inFlight, parked in parked[.unauthorized] == 1 && inFlight == 0 })
        #expect(fixture.sender.snapshot().state == .authHeld)
        let seen = fixture.fake.requests.count
        try fixture.enqueue(3)
        try await fixture.settle()
        #expect(fixture.sender.snapshot().inFlight == 0, "nothing left for Plunk either")
        #expect(fixture.fake.requests.count == seen, "requests were sent during an auth hold")

        try await fixture.sender.updateAPIKey(APIKey("pk_good_key"))
        #expect(try await fixture.waitUntilEmpty())
        let delivered = fixture.fake.requests.filter { $0.headers["authorization"] == "Bearer pk_good_key" }
        let sameContact = delivered.filter { $0.email == "same@example.com" }.map(\.idempotencyKey)
        #expect(sameContact == events.map { $0.id.uuidString.lowercased() })
        await fixture.stop()
    }

    @Test("an auth hold survives a restart with the same key and ends with another")
    func holdAcrossRestart() async throws {
        let fixture = try await DeliveryFixture { request in
            request.headers["authorization"] == "Bearer pk_other"
                ? FakePlunk.v2Success()
                : FakePlunk.v2Error(403, "PROJECT_DISABLED", "Project disabled")
        }
        try fixture.enqueue(1)
        #expect(try await fixture.waitForStore { _, _, parked in parked[.unauthorized] == 1 })
        try await fixture.restartSender()
        #expect(fixture.sender.snapshot().state == .authHeld)
        var other = fixture.settings
        other.apiKey = APIKey("pk_other")
        try await fixture.restartSender(settings: other)
        #expect(try await fixture.waitUntilEmpty())
        await fixture.stop()
    }

    @Test("402 pauses until next month, the pause survives a restart, and resume lifts it")
    func quotaPause() async throws {
        let fixture = try await DeliveryFixture { request in
            request.index == 0 ? FakePlunk.legacyError(402, "You have hit your plan's monthly limit") : FakePlunk.legacySuccess()
        }
        // The month may turn while the test runs (00:00 UTC on the 1st): either side of it.
        let monthBefore = MonthBoundary.startOfNextMonth(after: Date())
        try fixture.enqueue(3, contact: { _ in "q@example.com" })
        #expect(await fixture.fake.waitFor { $0.count >= 1 })
        #expect(try await fixture.waitForStore { pending, inFlight, _ in pending == 3 && inFlight == 0 })
        let snapshot = fixture.sender.snapshot()
        #expect(snapshot.state == .quotaPaused)
        #expect([monthBefore, MonthBoundary.startOfNextMonth(after: Date())].contains(snapshot.pausedUntil))
        let hold = try fixture.outbox.loadHold()
        #expect(hold.pausedUntil == snapshot.pausedUntil)

        try await fixture.restartSender()
        #expect(fixture.sender.snapshot().state == .quotaPaused)
        try await fixture.settle()
        #expect(fixture.sender.snapshot().inFlight == 0, "nothing left for Plunk either")
        #expect(fixture.fake.requests.count == 1, "requests were sent during a quota pause")
        let attempts = try Self.maxAttempts(path: fixture.outbox.path)
        #expect(attempts == 0)

        _ = try fixture.sender.resume()
        #expect(try await fixture.waitUntilEmpty())
        #expect(try fixture.outbox.loadHold() == StoredDeliveryHold())
        await fixture.stop()
    }

    @Test("a pause gives back the events claimed ahead of the requests: none stays in flight, none is sent")
    func pauseReleasesReadyEvents() async throws {
        // Concurrency 4 keeps 4 more events claimed and ready; every answer is a slow 402.
        let fixture = try await DeliveryFixture(concurrency: 4) { _ in
            .answer(status: 402, body: #"{"code":402,"error":"Payment Required","message":"limit"}"#, delay: .milliseconds(150))
        }
        try fixture.enqueue(20)
        #expect(try await fixture.waitForStore { _, _, _ in ((try? fixture.counter("attempts_quota_exceeded_total")) ?? 0) >= 4 })
        #expect(try await fixture.waitForStore { pending, inFlight, _ in pending == 20 && inFlight == 0 })
        #expect(fixture.fake.requests.count == 4, "requests were sent after the 402")
        #expect(fixture.fake.maxInFlight <= 4)
        #expect(fixture.sender.snapshot().state == .quotaPaused)
        await fixture.stop()
    }

    @Test("429 makes the whole destination wait Retry-After, and the attempt does not count")
    func rateLimit() async throws {
        // Retry-After is capped by retry.max_backoff, so the cap here is above the 1 s asked for.
        let fixture = try await DeliveryFixture(retry: RetryPolicy(initialBackoff: 0.02, maxBackoff: 5, maxAge: 3600)) { request in
            request.index == 0
                ? FakePlunk.v2Error(429, "RATE_LIMIT_EXCEEDED", "Too many", headers: [("Retry-After", "1")])
                : FakePlunk.v2Success()
        }
        try fixture.enqueue(1)
        #expect(await fixture.fake.waitFor { $0.count >= 1 })
        // The 429 has been handled once its attempt is counted (the state itself is only
        // `rate_limited` for the one second, too short to poll for on a loaded machine).
        #expect(try await fixture.waitForStore { _, _, _ in ((try? fixture.counter("attempts_rate_limited_total")) ?? 0) >= 1 })
        try fixture.enqueue(4, contact: { "other\($0)@example.com" })
        #expect(try await fixture.waitUntilEmpty())
        let requests = fixture.fake.requests
        let first = requests[0].at
        for request in requests.dropFirst() {
            #expect(request.at.timeIntervalSince(first) >= 0.9, "a request went out during the Retry-After wait")
        }
        #expect(try fixture.counter("attempts_rate_limited_total") == 1)
        await fixture.stop()
    }

    @Test("transient failures are retried with the same Idempotency-Key until delivered", arguments: ["html", "reset", "slow"])
    func transientThenDelivered(fault: String) async throws {
        let fixture = try await DeliveryFixture(requestTimeout: 0.5) { request in
            guard request.index < 2 else { return FakePlunk.legacySuccess() }
            switch fault {
            case "html": return FakePlunk.htmlPage(502)
            case "reset": return .reset
            default: return .answer(status: 200, body: "{}", delay: .seconds(2))
            }
        }
        let event = try #require(try fixture.enqueue(1).first)
        #expect(try await fixture.waitUntilEmpty())
        let keys = fixture.fake.requests.map(\.idempotencyKey)
        #expect(keys.count >= 3)
        #expect(Set(keys) == [event.id.uuidString.lowercased()])
        #expect(try fixture.counter("attempts_transient_total") >= 2)
        #expect(try fixture.counter("delivered_total") == 1)
        await fixture.stop()
    }

    @Test("a refused connection is transient; delivery resumes when the server is back")
    func refusedConnection() async throws {
        let fixture = try await DeliveryFixture(retry: RetryPolicy(initialBackoff: 0.05, maxBackoff: 0.1, maxAge: 3600))
        let port = fixture.fake.port
        await fixture.fake.stop()
        let event = try #require(try fixture.enqueue(1).first)
        #expect(try await fixture.waitForStore { _, _, _ in ((try? fixture.counter("attempts_transient_total")) ?? 0) >= 2 })
        #expect(fixture.sender.snapshot().lastError?.isEmpty == false)
        let revived = try await FakePlunk(port: port)
        #expect(try await fixture.waitUntilEmpty())
        #expect(revived.requests.map(\.idempotencyKey) == [event.id.uuidString.lowercased()])
        await revived.stop()
        await fixture.stop()
    }

    @Test("events failing for longer than retry.max_age are parked `expired`, never dropped")
    func expires() async throws {
        // Real time, plus a jump the test makes: the retries run at their own pace however
        // slow the machine (or ThreadSanitizer) is, and the age limit passes only when told.
        let jump = SkewedClock()
        let fixture = try await DeliveryFixture(
            retry: RetryPolicy(initialBackoff: 0.02, maxBackoff: 0.05, maxAge: 60), clock: jump
        ) { _ in FakePlunk.htmlPage(503) }
        let event = try #require(try fixture.enqueue(1).first)
        #expect(await fixture.fake.waitFor { $0.count >= 2 })
        #expect(try fixture.outbox.stateCounts().parked.isEmpty)
        jump.skew(by: 61)
        #expect(try await fixture.waitForStore { _, _, parked in parked[.expired] == 1 })
        let row = try #require(try fixture.parkedRow(id: event.id))
        #expect(row["last_status"] as Int == 503)
        #expect((row["attempts"] as Int) >= 2)
        await fixture.stop()
    }

    @Test("per-contact order holds under concurrency 8 with seeded random faults: a follower leaves only after its predecessor's 2xx")
    func perContactOrder() async throws {
        // Seeded, so a failure can be replayed; the seed is in the failure message.
        let seed: UInt64 = 0x5EED_0001
        let random = Mutex(SplitMix64(seed: seed))
        // One log of arrivals and answers, in the order they happened at the fake.
        let log = Mutex<[(key: String, answered: Bool)]>([])
        let fixture = try await DeliveryFixture(concurrency: 8) { request in
            let key = request.idempotencyKey ?? ""
            log.withLock { $0.append((key, false)) }
            let roll = random.withLock { Int.random(in: 0..<10, using: &$0) }
            switch roll {
            case 0, 1: return FakePlunk.htmlPage(503)
            case 2: return .reset
            default:
                let delay = random.withLock { Int64.random(in: 0...15, using: &$0) }
                return .answer(
                    status: 200, body: "{}", delay: .milliseconds(delay), whenSent: { log.withLock { $0.append((key, true)) } })
            }
        }
        let events = try fixture.enqueue(120, contact: { "contact\($0 % 6)@example.com" })
        #expect(try await fixture.waitUntilEmpty(timeout: 60))
        let entries = log.withLock { $0 }
        for contact in Set(events.map(\.contact)) {
            let keys = events.filter { $0.contact == contact }.map { $0.id.uuidString.lowercased() }
            for (earlier, later) in zip(keys, keys.dropFirst()) {
                let success = entries.firstIndex { $0.key == earlier && $0.answered }
                let followerLeft = entries.firstIndex { $0.key == later && !$0.answered }
                #expect(
                    success != nil && followerLeft != nil && success! < followerLeft!,
                    "seed \(seed): \(later) was sent before \(earlier) was delivered (\(contact))")
            }
        }
        #expect(fixture.fake.maxInFlight <= 8)
        await fixture.stop()
    }

    @Test("a contact whose request hangs holds up only itself: the other contacts' events are all delivered meanwhile, several at once")
    func otherContactsAreNotHeldUp() async throws {
        // The stuck contact's requests hang for the whole test (the timeout is long).
        let fixture = try await DeliveryFixture(concurrency: 4, requestTimeout: 120) { request in
            String(decoding: request.body, as: UTF8.self).contains("stuck@example.com")
                ? .hang : .answer(status: 200, body: "{}", delay: .milliseconds(20))
        }
        let stuck = try fixture.enqueue(2, contact: { _ in "stuck@example.com" }, name: "stuck")
        let others = try fixture.enqueue(40, contact: { "other\($0 % 8)@example.com" })
        let othersDelivered = await Poll.until(timeout: 60) {
            let delivered = Set(fixture.fake.requests.compactMap(\.idempotencyKey))
            return others.allSatisfy { delivered.contains($0.id.uuidString.lowercased()) }
        }
        #expect(othersDelivered, "a hung contact held up the others")
        let requests = fixture.fake.requests
        let stuckKeys = stuck.map { $0.id.uuidString.lowercased() }
        #expect(requests.filter { $0.idempotencyKey == stuckKeys[0] }.count == 1, "the stuck contact's first event is still in flight")
        #expect(!requests.contains { $0.idempotencyKey == stuckKeys[1] }, "the stuck contact's second event left before its first was delivered")
        #expect(requests.contains { $0.inFlightAtArrival > 2 }, "the other contacts were sent one at a time beside the hung request")
        await fixture.stop()
    }

    @Test("while the destination keeps failing, at most one probe is in flight; a success restores full speed")
    func probeWhileFailing() async throws {
        let fixture = try await DeliveryFixture(concurrency: 8, retry: RetryPolicy(initialBackoff: 0.01, maxBackoff: 0.05, maxAge: 3600)) { request in
            // The first burst answers slowly, so its 8 requests are sure to overlap however slow
            // the machine is; the probes after it answer fast.
            request.index < 8
                ? .answer(status: 503, body: "down", delay: .milliseconds(300))
                : request.index < 40
                    ? .answer(status: 503, body: "down", delay: .milliseconds(5))
                    : .answer(status: 200, body: "{}", delay: .milliseconds(20))
        }
        try fixture.enqueue(30)
        #expect(try await fixture.waitUntilEmpty())
        let requests = fixture.fake.requests
        // The first burst goes out 8 wide; once three failures in a row came back, each
        // probe goes out alone until one succeeds.
        #expect(requests.prefix(8).contains { $0.inFlightAtArrival > 1 })
        for request in requests where request.index >= 16 && request.index <= 40 {
            #expect(request.inFlightAtArrival == 1, "request \(request.index) overlapped while failing")
        }
        #expect(requests.filter { $0.index > 40 }.contains { $0.inFlightAtArrival > 1 }, "full speed did not come back")
        #expect(fixture.sender.snapshot().consecutiveFailures == 0)
        await fixture.stop()
    }

    @Test("shutdown gives up on a request hung past the grace, not at the request's own timeout; the event is sent again at the next start")
    func shutdownGraceBoundsAHungRequest() async throws {
        let fixture = try await DeliveryFixture(concurrency: 1, requestTimeout: 120) { request in
            request.index == 0 ? .hang : FakePlunk.legacySuccess()
        }
        try fixture.enqueue(1)
        #expect(await fixture.fake.waitFor { $0.count == 1 })
        let started = ContinuousClock.now
        await fixture.sender.shutdown(grace: .milliseconds(300))
        #expect(ContinuousClock.now - started < .seconds(30), "shutdown waited for the hung request")
        try await fixture.restartSender()
        #expect(try await fixture.waitUntilEmpty())
        #expect(fixture.fake.requests.count == 2)
        #expect(Set(fixture.fake.requests.map(\.idempotencyKey)).count == 1, "sent again with the same key")
        await fixture.stop()
    }

    @Test("without an API key nothing is sent and the state says so")
    func noKey() async throws {
        let fixture = try await DeliveryFixture(apiKey: nil)
        try fixture.enqueue(3)
        #expect(fixture.sender.snapshot().state == .noAPIKey)
        try await fixture.settle()
        #expect(fixture.sender.snapshot().inFlight == 0, "nothing left for Plunk either")
        #expect(fixture.fake.requests.isEmpty)
        #expect(try fixture.outbox.stateCounts().pending == 3)
        await fixture.stop()
    }

    static func maxAttempts(path: String) throws -> Int? {
        let queue = try DatabaseQueue(path: path)
        return try queue.read { try Int.fetchOne($0, sql: "SELECT max(attempts) FROM event") }
    }

    /// Polls `condition` until it holds, for at most `timeout` seconds.
    static func eventually(timeout: Double = 30, _ condition: () -> Bool) async -> Bool {
        await Poll.until(timeout: timeout, every: .milliseconds(5)) { condition() }
    }
}

/// The wall clock, moved forward by a test when it says so.
final class SkewedClock: @unchecked Sendable {
    private let lock = NSLock()
    private var offset: TimeInterval = 0
    var now: Date {
        lock.lock()
        defer { lock.unlock() }
        return Date().addingTimeInterval(offset)
    }
    func skew(by seconds: TimeInterval) {
        lock.lock()
        offset += seconds
        lock.unlock()
    }
}

/// A small seeded generator (SplitMix64), so random faults can be replayed.
struct SplitMix64: RandomNumberGenerator {
    private var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
