import Foundation
import GRDB
import PlunkdTestSupport
import Testing

@testable import PlunkdCore

/// The store's operator side: parked counts through their own index, the read-only view.
@Suite("Outbox for operators", .timeLimit(.minutes(2)), .watchdog)
struct OutboxOperatorTests {
    func parkAll(_ outbox: Outbox, reason: ParkReason) throws -> [ClaimedEvent] {
        let claimed = try outbox.recordAndClaim(moves: [], counters: [:], claimLimit: 100, now: Date()).claimed
        _ = try outbox.recordAndClaim(
            moves: claimed.map { .park(seq: $0.seq, reason: reason, status: 400, error: "no") }, counters: [:], claimLimit: 0, now: Date())
        return claimed
    }

    @Test("parked counts and lists read the parked index, not the backlog")
    func parkedIndex() throws {
        let store = try ScratchStore()
        defer { store.remove() }
        let outbox = try store.open()
        let plan = try outbox.pool.read { db in
            try Row.fetchAll(db, sql: "EXPLAIN QUERY PLAN SELECT park_reason, count(*) FROM event WHERE state = 'parked' GROUP BY park_reason")
                .map { $0["detail"] as String }
        }
        #expect(plan.joined().contains("event_parked"))
        try outbox.enqueue((0..<3).map { AcceptedEvent(contact: "c\($0)@x.io", body: Data("{}".utf8)) })
        _ = try parkAll(outbox, reason: .expired)
        try outbox.enqueue([AcceptedEvent(contact: "d@x.io", body: Data("{}".utf8))])
        let status = try outbox.storedStatus()
        #expect(status.parked == [.expired: 3])
        #expect(status.inLine == 1)
        #expect(status.fileBytes > 0)
    }

    @Test("the read-only view sees what the daemon stored, and never creates a file")
    func readOnlyView() throws {
        let store = try ScratchStore()
        defer { store.remove() }
        let path = store.path
        #expect(throws: OutboxError.self) { try OutboxReader(path: path) }
        #expect(!FileManager.default.fileExists(atPath: path))
        do {
            let outbox = try Outbox(path: path)
            try outbox.enqueue((0..<5).map { AcceptedEvent(contact: "c\($0)@x.io", body: Data("{\"n\":\($0)}".utf8)) })
            _ = try outbox.recordAndClaim(moves: [], counters: [.delivered: 7], claimLimit: 2, now: Date())
        }
        let reader = try OutboxReader(path: path)
        let status = try reader.storedStatus()
        #expect(status.inLine == 5)
        #expect(status.counters["delivered_total"] == 7)
        #expect(try reader.parkedEvents(.all, limit: 10).isEmpty)
    }

    @Test("a drop of several parked events without confirmation deletes nothing")
    func dropNeedsConfirmation() throws {
        let store = try ScratchStore()
        defer { store.remove() }
        let outbox = try store.open()
        try outbox.enqueue((0..<2).map { AcceptedEvent(contact: "c\($0)@x.io", body: Data("{}".utf8)) })
        _ = try parkAll(outbox, reason: .rejected)
        #expect(throws: Outbox.DropNeedsConfirmation(count: 2)) { try outbox.dropParked(.reason(.rejected), confirmed: false) }
        #expect(try outbox.stateCounts().parked[.rejected] == 2)
        #expect(try outbox.dropParked(.reason(.unauthorized), confirmed: false) == 0)
        #expect(try outbox.dropParked(.reason(.rejected), confirmed: true) == 2)
        #expect(try outbox.counterValues()["dropped_total"] == 2)
    }

    @Test("a head that is due later than its follower is still claimed (found by the crash-loop soak)")
    func headDueAfterFollower() throws {
        let store = try ScratchStore()
        defer { store.remove() }
        let outbox = try store.open()
        let t0 = Date(timeIntervalSince1970: 1_000_000)
        let first = AcceptedEvent(contact: "c@x.io", body: Data("{\"n\":1}".utf8))
        try outbox.enqueue([first], at: t0)
        let claimed = try outbox.recordAndClaim(moves: [], counters: [:], claimLimit: 1, now: t0).claimed
        #expect(claimed.map(\.id) == [first.id])
        // It fails and is due again at t0+5; meanwhile a second event of the contact arrives, due at t0+1.
        _ = try outbox.recordAndClaim(
            moves: [.retry(seq: claimed[0].seq, due: t0 + 5, countsAsAttempt: true, status: 503, error: "x")],
            counters: [:], claimLimit: 0, now: t0)
        let second = AcceptedEvent(contact: "c@x.io", body: Data("{\"n\":2}".utf8))
        try outbox.enqueue([second], at: t0 + 1)
        // Both are due; the follower comes first in due order. The head must be claimed, the follower set aside.
        let next = try outbox.recordAndClaim(moves: [], counters: [:], claimLimit: 5, now: t0 + 10).claimed
        #expect(next.map(\.id) == [first.id])
        let after = try outbox.recordAndClaim(moves: [.delivered(seq: next[0].seq)], counters: [:], claimLimit: 5, now: t0 + 11).claimed
        #expect(after.map(\.id) == [second.id])
    }

    @Test("a store written before v4 keeps every line, its order and its backoff")
    func migratesLegacyLines() throws {
        let store = try ScratchStore()
        defer { store.remove() }
        let path = store.path
        let now = Date()
        let waiting = OutboxSchema.legacyWaitingBehindHead
        do {
            // The v3 layout: a line of c@x.io (head in flight, two set aside), d@x.io backing
            // off for an hour, one parked event.
            let pool = try DatabasePool(path: path)
            try OutboxSchema.migrator.migrate(pool, upTo: "v3: parked index")
            try pool.write { db in
                let t = now.timeIntervalSince1970 - 60
                for (seq, contact, state, due, attempts) in [
                    (1, "c@x.io", "in_flight", t, 0), (2, "c@x.io", "pending", waiting, 0), (3, "d@x.io", "pending", t + 3660, 2),
                    (4, "c@x.io", "pending", waiting, 0), (5, "e@x.io", "parked", t, 1),
                ] as [(Int, String, String, Double, Int)] {
                    try db.execute(
                        sql: """
                            INSERT INTO event (seq, id, contact, body, state, received_at, due_at, attempts, park_reason)
                            VALUES (?, ?, ?, '{}', ?, ?, ?, ?, ?)
                            """, arguments: [seq, UUID().uuidString.lowercased(), contact, state, t, due, attempts, state == "parked" ? "rejected" : nil])
                }
            }
        }
        let outbox = try Outbox(path: path)
        try outbox.releaseInFlight(now: now)
        #expect(outbox.storedCount == 4)
        let first = try outbox.recordAndClaim(moves: [], counters: [:], claimLimit: 10, now: now).claimed
        #expect(first.map(\.seq) == [1])
        let second = try outbox.recordAndClaim(moves: [.delivered(seq: 1)], counters: [:], claimLimit: 10, now: now).claimed
        #expect(second.map(\.seq) == [2])
        let third = try outbox.recordAndClaim(moves: [.delivered(seq: 2)], counters: [:], claimLimit: 10, now: now).claimed
        #expect(third.map(\.seq) == [4])
        // d@x.io is still backing off; an hour later it is claimed.
        let later = try outbox.recordAndClaim(moves: [.delivered(seq: 4)], counters: [:], claimLimit: 10, now: now + 3700).claimed
        #expect(later.map(\.seq) == [3])
        #expect(try outbox.stateCounts().parked == [.rejected: 1])
        // Numbers are never reused, even after the last rows are gone.
        _ = try outbox.recordAndClaim(moves: [.delivered(seq: 3)], counters: [:], claimLimit: 0, now: now)
        #expect(try outbox.dropParked(.all, confirmed: true) == 1)
        try outbox.enqueue([AcceptedEvent(contact: "f@x.io", body: Data("{}".utf8))])
        #expect(try outbox.recordAndClaim(moves: [], counters: [:], claimLimit: 10, now: now).claimed.map(\.seq) == [6])
    }
}

/// Claims: bounded reading however long one contact's line is, and claimed events given back.
@Suite("Outbox claims", .timeLimit(.minutes(2)), .watchdog)
struct OutboxClaimTests {
    func events(_ count: Int, contact: String) -> [AcceptedEvent] {
        (0..<count).map { AcceptedEvent(contact: contact, body: Data("{\"n\":\($0)}".utf8)) }
    }

    @Test("a long line of one contact is read a bounded page per claim, and the others behind it still come through")
    func boundedReading() throws {
        let store = try ScratchStore()
        defer { store.remove() }
        let outbox = try store.open()
        let long = events(1000, contact: "a@x.io")
        let others = ["b", "c", "d", "e", "f"].flatMap { events(1, contact: "\($0)@x.io") }
        try outbox.enqueue(long)
        try outbox.enqueue(others)
        let now = Date()
        let first = try outbox.recordAndClaim(moves: [], counters: [:], claimLimit: 8, now: now)
        #expect(first.claimed.map(\.id) == [long[0].id])
        #expect(first.mayHaveMore, "the claim stopped at its reading bound and must say so")
        var claimed: [UUID] = []
        var turns = 0
        while claimed.count < others.count && turns < 10 {
            let result = try outbox.recordAndClaim(moves: [], counters: [:], claimLimit: 8, now: now)
            #expect(result.claimed.count <= 8)
            claimed += result.claimed.map(\.id)
            turns += 1
        }
        // 1,000 rows at no more than 256 per claim: the five others arrive within four more turns.
        #expect(claimed == others.map(\.id))
        #expect(turns <= 4)
        let last = try outbox.recordAndClaim(moves: [], counters: [:], claimLimit: 8, now: now)
        #expect(last.claimed.isEmpty && !last.mayHaveMore)
    }

    @Test("a claimed event given back unsent goes back to the head of its line, before the ones behind it")
    func releaseKeepsOrder() throws {
        let store = try ScratchStore()
        defer { store.remove() }
        let outbox = try store.open()
        let line = events(3, contact: "a@x.io")
        try outbox.enqueue(line)
        let now = Date()
        let first = try outbox.recordAndClaim(moves: [], counters: [:], claimLimit: 8, now: now).claimed
        #expect(first.map(\.id) == [line[0].id])
        let again = try outbox.recordAndClaim(moves: [.release(seq: first[0].seq)], counters: [:], claimLimit: 8, now: now).claimed
        #expect(again.map(\.id) == [line[0].id])
        #expect(try outbox.stateCounts().inFlight == 1)
        let next = try outbox.recordAndClaim(moves: [.delivered(seq: again[0].seq)], counters: [:], claimLimit: 8, now: now).claimed
        #expect(next.map(\.id) == [line[1].id])
        #expect(outbox.storedCount == 2)
    }
}
