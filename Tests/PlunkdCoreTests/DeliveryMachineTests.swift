import Foundation
import Testing

@testable import PlunkdCore

/// The sender's decisions, driven directly: made-up times, made-up answers, no queue,
/// no store, no sleep. Each test plays the shell's part by hand (`Drive`).
@Suite("delivery machine", .timeLimit(.minutes(2)), .watchdog)
struct DeliveryMachineTests {
    static let key = APIKey("pk_test_0123456789")
    static let start = Date(timeIntervalSince1970: 1_800_000_000)

    /// The shell, by hand: runs turns, answers store work with the given claims, keeps
    /// what was sent, logged and timed.
    struct Drive {
        var machine: DeliveryMachine
        var now = DeliveryMachineTests.start
        var sent: [ClaimedEvent] = []
        var stored: [StoreWork] = []
        /// Every transaction finished so far, however it was run (`settle` runs some).
        var finished: [StoreWork] = []
        var timers: [Date] = []
        var logs: [String] = []
        var turnPending = false
        var useful: Bool?
        var drained = false
        private var nextSeq: Int64 = 1

        init(
            concurrency: Int = 2, apiKey: APIKey? = DeliveryMachineTests.key, hold: StoredDeliveryHold = StoredDeliveryHold(),
            retry: RetryPolicy = RetryPolicy(initialBackoff: 1, maxBackoff: 30, maxAge: 3600), failingAfter: Int = 3,
            unitRandom: @escaping () -> Double = { 1 }, adaptsConcurrency: Bool = false
        ) {
            var settings = DeliverySettings(apiKey: apiKey, concurrency: concurrency, retry: retry)
            settings.failingAfter = failingAfter
            settings.adaptsConcurrency = adaptsConcurrency
            machine = DeliveryMachine(settings: settings, hold: hold, unitRandom: unitRandom)
        }

        mutating func event(receivedAt: Date? = nil) -> ClaimedEvent {
            defer { nextSeq += 1 }
            return ClaimedEvent(
                seq: nextSeq, key: "k\(nextSeq)", contact: "c\(nextSeq)@example.com", body: Data("{}".utf8), attempts: 0,
                receivedAt: receivedAt ?? now)
        }

        /// Carries out the machine's actions; store work waits in `stored` for `finishStore`.
        mutating func collect() {
            for action in machine.takeActions() {
                switch action {
                case .send(let event, _): sent.append(event)
                case .store(let work): stored.append(work)
                case .runTurn: turnPending = true
                case .armTimer(let at): timers.append(at)
                case .log(_, let message, _): logs.append(message.description)
                case .newEventsUseful(let value): useful = value
                case .drained: drained = true
                case .cancelTimer, .counted, .stateChanged: break
                }
            }
        }

        /// Runs the pending turn, if any.
        mutating func turn() {
            machine.turn(now: now)
            turnPending = false
            collect()
        }

        /// The store answers the oldest transaction, claiming up to its limit of `available`.
        @discardableResult
        mutating func finishStore(available: inout [ClaimedEvent], nextDue: Date? = nil) -> StoreWork {
            let work = stored.removeFirst()
            let claimed = Array(available.prefix(work.claimLimit))
            available.removeFirst(claimed.count)
            machine.storeFinished(work, .success(ClaimResult(claimed: claimed, mayHaveMore: false, nextDue: nextDue)), now: now)
            finished.append(work)
            collect()
            return work
        }

        mutating func answer(_ event: ClaimedEvent, _ answer: PlunkAnswer) {
            machine.answered(answer, for: event, now: now)
            collect()
        }

        /// A commit's wake-up: a turn is asked for, then everything it leads to runs.
        mutating func wake(available: inout [ClaimedEvent]) {
            machine.requestTurn()
            collect()
            settle(available: &available)
        }

        /// The timer fires at `now`, then everything it leads to runs.
        mutating func fireTimer(available: inout [ClaimedEvent]) {
            machine.timerFired(now: now)
            collect()
            settle(available: &available)
        }

        /// Turns and store transactions until the machine asks for neither.
        mutating func settle(available: inout [ClaimedEvent]) {
            for _ in 0..<20 {
                if turnPending {
                    turn()
                } else if !stored.isEmpty {
                    finishStore(available: &available)
                } else {
                    return
                }
            }
            Issue.record("the machine kept asking for turns")
        }
    }

    static func status(_ status: Int, retryAfter: String? = nil, _ body: String = "{}") -> PlunkAnswer {
        .response(status: status, retryAfter: retryAfter, body: Data(body.utf8))
    }

    @Test("a turn claims the slots plus a reserve as large; an answer sends the next ready event at once, before any commit")
    func slotsAndReserve() {
        var drive = Drive(concurrency: 2)
        var available = (0..<10).map { _ in drive.event() }
        drive.machine.requestTurn()
        drive.collect()
        drive.turn()
        #expect(drive.stored.map(\.claimLimit) == [4])
        #expect(drive.useful == true)
        drive.finishStore(available: &available)
        #expect(drive.sent.map(\.seq) == [1, 2])
        #expect(drive.machine.ready.map(\.seq) == [3, 4])
        drive.answer(drive.sent[0], Self.status(200))
        #expect(drive.sent.map(\.seq) == [1, 2, 3], "the reserve leaves without waiting for the store")
        #expect(drive.machine.moves == [.delivered(seq: 1)])
        #expect(drive.machine.counters[.delivered] == 1)
    }

    @Test(
        "answers coming one by one wait for one transaction while the reserve keeps the slots full: until the batch window ends, or the reserve is down to a quarter"
    )
    func answersShareATransaction() {
        var drive = Drive(concurrency: 8)
        var available = (0..<40).map { _ in drive.event() }
        drive.wake(available: &available)
        #expect(drive.sent.count == 8 && drive.machine.ready.count == 8)
        let window = DeliveryMachine.storeBatchWindow
        func answer(_ index: Int) {
            drive.now = drive.now.addingTimeInterval(0.001)
            drive.answer(drive.sent[index], Self.status(200))
            if drive.turnPending { drive.turn() }
        }
        // Two answers, a millisecond apart: sent on from the reserve at once, recorded later.
        answer(0)
        answer(1)
        #expect(drive.sent.count == 10, "the reserve left without waiting for the store")
        #expect(drive.stored.isEmpty, "no transaction for each answer")
        #expect(drive.machine.moves.count == 2)
        #expect(
            drive.timers.last.map { abs($0.timeIntervalSince(DeliveryMachineTests.start) - window) < 1e-6 } == true,
            "\(drive.timers.map { $0.timeIntervalSince(DeliveryMachineTests.start) })")
        // The window ends: one transaction records both and tops the reserve up.
        drive.now = DeliveryMachineTests.start.addingTimeInterval(window)
        drive.fireTimer(available: &available)
        #expect(drive.finished.last?.moves == [.delivered(seq: 1), .delivered(seq: 2)])
        #expect(drive.finished.last?.claimLimit == 2)
        #expect(drive.machine.ready.count == 8)
        // Within the next window, the reserve falling to a quarter runs the transaction at once.
        for index in 2..<7 { answer(index) }
        #expect(drive.stored.isEmpty)
        answer(7)
        #expect(
            drive.stored.map(\.moves) == [(3...8).map { .delivered(seq: Int64($0)) }],
            "a thin reserve does not wait")
    }

    @Test("with every slot and the reserve full, new events are not worth a wake-up")
    func fullMeansNotUseful() {
        var drive = Drive(concurrency: 1)
        var available = (0..<5).map { _ in drive.event() }
        drive.wake(available: &available)
        #expect(drive.sent.count == 1 && drive.machine.ready.count == 1)
        drive.machine.requestTurn()
        drive.collect()
        drive.turn()
        #expect(drive.useful == false)
        #expect(drive.stored.isEmpty)
    }

    @Test(
        "a failure is logged once per run: a late 2xx to a request sent before it does not log the same failure again; a 2xx to one sent after it does"
    )
    func failureLoggedOncePerRun() throws {
        var drive = Drive(concurrency: 4, failingAfter: 8)
        var available = (0..<12).map { _ in drive.event() }
        drive.wake(available: &available)
        #expect(drive.sent.count == 4)
        let failures = { drive.logs.filter { $0.contains("delivery failed, retrying with backoff") }.count }
        drive.answer(drive.sent[1], Self.status(503))
        #expect(failures() == 1)
        // Sent before the failure, answered after it: old news.
        drive.answer(drive.sent[0], Self.status(200))
        drive.answer(drive.sent[2], Self.status(503))
        #expect(failures() == 1, "the same failure logged again after a stale 2xx: \(drive.logs)")
        // Sent after the failure: Plunk answered again, so the next failure is news.
        drive.answer(drive.sent[3], Self.status(200))
        drive.settle(available: &available)
        let next = try #require(drive.sent.dropFirst(4).first)
        drive.answer(next, Self.status(503))
        #expect(failures() == 2, "\(drive.logs)")
    }

    @Test("three transient failures in a row: one probe at a time, the reserve goes back in line, the next probe waits its backoff")
    func probing() {
        var drive = Drive(concurrency: 2)
        var available = (0..<10).map { _ in drive.event() }
        drive.wake(available: &available)
        drive.answer(drive.sent[0], Self.status(503))
        drive.answer(drive.sent[1], Self.status(503))
        #expect(!drive.machine.gate.isProbing)
        drive.settle(available: &available)
        #expect(drive.machine.ready.map(\.seq) == [5, 6], "the turn refilled the reserve")
        drive.answer(drive.sent[2], Self.status(503))
        #expect(drive.machine.gate.isProbing)
        #expect(drive.machine.ready.isEmpty)
        #expect(drive.machine.moves.contains(.release(seq: 5)) && drive.machine.moves.contains(.release(seq: 6)))
        #expect(drive.machine.state(now: drive.now) == .backingOff)
        let sentBefore = drive.sent.count
        drive.settle(available: &available)
        #expect(drive.sent.count == sentBefore, "nothing leaves before the probe's gap")
        #expect(drive.machine.claimLimit(now: drive.now) == 0)
        let gapEnds = try! #require(drive.machine.gate.blockedUntil)
        #expect(drive.timers.last == gapEnds)
        drive.now = gapEnds
        drive.fireTimer(available: &available)
        #expect(drive.machine.inFlight.count == 1, "one probe")
        #expect(drive.machine.ready.isEmpty, "no reserve while probing")
        let probe = drive.sent.last!
        drive.answer(probe, Self.status(200))
        drive.settle(available: &available)
        #expect(!drive.machine.gate.isProbing)
        #expect(drive.machine.inFlight.count == 2, "a success restores every slot")
    }

    @Test("a claim that comes back after probing began keeps no reserve: its events go back in line, not held behind the probe")
    func claimReturningWhileProbing() {
        var drive = Drive(concurrency: 2)
        var available = (0..<10).map { _ in drive.event() }
        drive.wake(available: &available)
        drive.answer(drive.sent[0], Self.status(503))
        drive.answer(drive.sent[1], Self.status(503))
        drive.turn()
        #expect(drive.stored.map(\.claimLimit) == [2], "a claim for the reserve is under way")
        drive.answer(drive.sent[2], Self.status(503))
        #expect(drive.machine.gate.isProbing)
        drive.now = try! #require(drive.machine.gate.blockedUntil)
        drive.finishStore(available: &available)
        #expect(drive.machine.inFlight.count == 1)
        #expect(drive.machine.ready.isEmpty)
        #expect(drive.machine.moves.contains(.release(seq: 5)) && drive.machine.moves.contains(.release(seq: 6)))
    }

    @Test("401 parks the event and holds delivery: nothing more is claimed or sent, new events are of no use, the hold is stored")
    func unauthorizedHolds() {
        var drive = Drive(concurrency: 2)
        var available = (0..<6).map { _ in drive.event() }
        drive.wake(available: &available)
        drive.answer(drive.sent[0], Self.status(401, "{\"error\":\"bad key\"}"))
        #expect(drive.machine.state(now: drive.now) == .authHeld)
        #expect(drive.machine.moves.first == .park(seq: 1, reason: .unauthorized, status: 401, error: "{\"error\":\"bad key\"}"))
        #expect(drive.machine.moves.contains(.release(seq: 3)) && drive.machine.moves.contains(.release(seq: 4)))
        let sentBefore = drive.sent.count
        drive.settle(available: &available)
        #expect(drive.sent.count == sentBefore)
        #expect(drive.useful == false)
        #expect(drive.stored.isEmpty)
        #expect(drive.machine.gate.hold.refusedKeyFingerprint == Self.key.fingerprint)
        #expect(drive.logs.contains { $0.contains("Plunk refused the API key") })
        #expect(!drive.logs.contains { $0.contains("pk_test") }, "the key never reaches the log")
        // A later hour changes nothing: the hold waits for a key or resume, not for time.
        drive.now = drive.now.addingTimeInterval(3600)
        drive.wake(available: &available)
        #expect(drive.sent.count == sentBefore)
        drive.machine.update(apiKey: APIKey("pk_test_another"), retry: nil)
        #expect(drive.machine.keyNoLongerRefused)
        drive.machine.liftAuthHold()
        drive.wake(available: &available)
        #expect(drive.sent.count > sentBefore)
    }

    @Test("402 pauses until the month rolls over: the timer is capped at a minute, time before the boundary sends nothing, the boundary lifts it")
    func quotaPause() {
        var drive = Drive(concurrency: 2)
        drive.now = ISO8601DateFormatter().date(from: "2026-12-31T23:58:00Z")!
        var available = (0..<6).map { _ in drive.event() }
        drive.wake(available: &available)
        drive.answer(drive.sent[0], Self.status(402))
        let boundary = ISO8601DateFormatter().date(from: "2027-01-01T00:00:00Z")!
        #expect(drive.machine.gate.hold.pausedUntil == boundary)
        #expect(drive.machine.moves.first == .retry(seq: 1, due: drive.now, countsAsAttempt: false, status: 402, error: "402: {}"))
        drive.settle(available: &available)
        #expect(drive.stored.isEmpty)
        #expect(drive.timers.last == drive.now.addingTimeInterval(60), "capped at a minute")
        let sentBefore = drive.sent.count
        drive.now = drive.now.addingTimeInterval(60)
        drive.fireTimer(available: &available)
        #expect(drive.sent.count == sentBefore, "a minute before the boundary: still paused")
        #expect(drive.machine.state(now: drive.now) == .quotaPaused)
        drive.now = boundary
        drive.fireTimer(available: &available)
        #expect(drive.logs.contains { $0.contains("quota pause over") })
        #expect(drive.sent.count > sentBefore)
    }

    @Test("429 blocks all of Plunk for Retry-After and the event's retry does not count as an attempt")
    func rateLimit() {
        var drive = Drive(concurrency: 2)
        var available = (0..<6).map { _ in drive.event() }
        drive.wake(available: &available)
        drive.answer(drive.sent[0], Self.status(429, retryAfter: "7"))
        #expect(drive.machine.gate.blockedUntil == drive.now.addingTimeInterval(7))
        #expect(drive.machine.state(now: drive.now) == .rateLimited)
        #expect(drive.machine.moves.first == .retry(seq: 1, due: drive.now.addingTimeInterval(7), countsAsAttempt: false, status: 429, error: "429: {}"))
        drive.settle(available: &available)
        #expect(drive.timers.last == drive.now.addingTimeInterval(7))
    }

    @Test("without a key nothing is claimed or sent, however long it waits; a key starts delivery")
    func noKey() {
        var drive = Drive(concurrency: 2, apiKey: nil)
        var available = (0..<3).map { _ in drive.event() }
        for hour in 0..<3 {
            drive.now = Self.start.addingTimeInterval(Double(hour) * 3600)
            drive.wake(available: &available)
        }
        #expect(drive.sent.isEmpty && drive.stored.isEmpty)
        #expect(drive.machine.state(now: drive.now) == .noAPIKey)
        #expect(drive.useful == false)
        drive.machine.update(apiKey: Self.key, retry: nil)
        drive.wake(available: &available)
        #expect(drive.sent.count == 2)
    }

    @Test("a store failure keeps every outcome for the next try, ahead of newer ones, and looks again in a second")
    func storeFailureRestores() {
        struct DiskFull: Error {}
        var drive = Drive(concurrency: 1)
        var available = (0..<3).map { _ in drive.event() }
        drive.wake(available: &available)
        drive.answer(drive.sent[0], Self.status(200))
        drive.turn()
        let work = drive.stored.removeFirst()
        #expect(work.moves.contains(.delivered(seq: 1)))
        drive.answer(drive.sent[1], Self.status(200))
        drive.machine.storeFinished(work, .failure(DiskFull()), now: drive.now)
        drive.collect()
        #expect(drive.machine.moves.prefix(work.moves.count) == work.moves[...])
        #expect(drive.machine.moves.last == .delivered(seq: 2))
        #expect(drive.machine.snapshot(now: drive.now).storageFailing)
        #expect(drive.timers.last == drive.now.addingTimeInterval(1))
        #expect(drive.logs.filter { $0.contains("cannot record") }.count == 1)
    }

    @Test("stop: nothing more leaves, ready events go back, and drained follows the last answer")
    func stop() {
        var drive = Drive(concurrency: 2)
        var available = (0..<6).map { _ in drive.event() }
        drive.wake(available: &available)
        drive.machine.stop()
        drive.collect()
        #expect(!drive.drained)
        drive.answer(drive.sent[0], Self.status(200))
        #expect(drive.sent.count == 2, "the reserve stays home")
        #expect(!drive.drained)
        drive.answer(drive.sent[1], Self.status(200))
        #expect(drive.drained)
        #expect(drive.machine.moves.contains(.release(seq: 3)))
        drive.machine.armTimer(at: drive.now.addingTimeInterval(5), now: drive.now)
        drive.collect()
        #expect(drive.timers.allSatisfy { $0 != drive.now.addingTimeInterval(5) }, "no timer after stop")
    }

    @Test("one timer: an earlier deadline replaces a later one, a later one never replaces an earlier")
    func oneTimer() {
        var drive = Drive()
        drive.machine.armTimer(at: drive.now.addingTimeInterval(30), now: drive.now)
        drive.machine.armTimer(at: drive.now.addingTimeInterval(40), now: drive.now)
        drive.machine.armTimer(at: drive.now.addingTimeInterval(10), now: drive.now)
        drive.collect()
        #expect(drive.timers == [drive.now.addingTimeInterval(30), drive.now.addingTimeInterval(10)])
        drive.machine.timerFired(now: drive.now.addingTimeInterval(10))
        drive.machine.armTimer(at: drive.now.addingTimeInterval(40), now: drive.now.addingTimeInterval(10))
        drive.collect()
        #expect(drive.timers.last == drive.now.addingTimeInterval(40))
    }
}
