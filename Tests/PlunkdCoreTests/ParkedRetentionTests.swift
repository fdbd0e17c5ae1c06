import CoreMetrics
import Foundation
import GRDB
import Logging
import PlunkdTestSupport
import Synchronization
import Testing

@testable import PlunkdCore

#if canImport(Glibc)
    import Glibc
#endif

/// `storage.parked_max_age`: parked events leave once parked for longer, counted from
/// their parking; nothing in line and nothing younger is touched.
@Suite("Retention of parked events", .serialized, .timeLimit(.minutes(2)), .watchdog)
struct ParkedRetentionTests {
    let start = Date(timeIntervalSince1970: 1_800_000_000)

    /// Claims everything in line and parks it `reason` at `at`.
    func parkAll(_ outbox: Outbox, reason: ParkReason, at: Date) throws -> [ClaimedEvent] {
        let claimed = try outbox.recordAndClaim(moves: [], counters: [:], claimLimit: 100, now: at).claimed
        _ = try outbox.recordAndClaim(
            moves: claimed.map { .park(seq: $0.seq, reason: reason, status: 400, error: "no") }, counters: [:], claimLimit: 0, now: at)
        return claimed
    }

    /// Stores `count` events and parks them all at `start`.
    func parkedEvents(_ count: Int, in outbox: Outbox, reason: ParkReason) throws -> [ClaimedEvent] {
        try outbox.enqueue(events(count))
        var parked: [ClaimedEvent] = []
        while parked.count < count { parked += try parkAll(outbox, reason: reason, at: start) }
        return parked
    }

    func events(_ count: Int, from: Int = 0) -> [AcceptedEvent] {
        (from..<(from + count)).map { AcceptedEvent(contact: "c\($0)@x.io", body: Data("{\"n\":\($0)}".utf8)) }
    }

    @Test("only events parked before the cutoff are deleted, oldest first, counted; events in line stay whatever their age")
    func deletesOnlyPastTheAge() throws {
        let store = try ScratchStore()
        defer { store.remove() }
        let outbox = try store.open()
        try outbox.enqueue(events(3))
        let old = try parkAll(outbox, reason: .rejected, at: start)
        try outbox.enqueue(events(2, from: 3))
        let young = try parkAll(outbox, reason: .expired, at: start.addingTimeInterval(3600))
        // In line since long ago, never parked: not the retention's business.
        try outbox.enqueue(events(1, from: 5))

        let outlook = try outbox.storedStatus(retentionHorizon: start.addingTimeInterval(1800)).retention
        #expect(outlook == ParkedRetentionOutlook(dueByHorizon: 3, oldestParkedAt: start))

        let first = try outbox.deleteParked(parkedBefore: start.addingTimeInterval(1800), limit: 2)
        #expect(first.map(\.id) == old.prefix(2).map(\.key))
        #expect(first.allSatisfy { $0.reason == "rejected" && $0.parkedAt == start })
        let second = try outbox.deleteParked(parkedBefore: start.addingTimeInterval(1800), limit: 2)
        #expect(second.map(\.id) == [old[2].key])
        #expect(try outbox.deleteParked(parkedBefore: start.addingTimeInterval(1800), limit: 2).isEmpty)

        let counts = try outbox.stateCounts()
        #expect(counts.parked == [.expired: 2])
        #expect(counts.pending == 1)
        #expect(try outbox.counterValues()["retention_deleted_total"] == 3)
        #expect(try outbox.parkedEvents(.all, limit: 10).map(\.id) == young.map(\.key))
    }

    @Test("a parked event put back in line and parked again counts from its new parking")
    func requeuedStartsOver() throws {
        let store = try ScratchStore()
        defer { store.remove() }
        let outbox = try store.open()
        try outbox.enqueue(events(1))
        _ = try parkAll(outbox, reason: .rejected, at: start)
        try outbox.requeueParked(.all, now: start.addingTimeInterval(7200))
        _ = try parkAll(outbox, reason: .rejected, at: start.addingTimeInterval(7200))
        #expect(try outbox.deleteParked(parkedBefore: start.addingTimeInterval(3600), limit: 10).isEmpty)
        #expect(try outbox.deleteParked(parkedBefore: start.addingTimeInterval(7201), limit: 10).count == 1)
    }

    @Test("a store from before v9: its parked events count from the upgrade, never from their arrival")
    func upgradeCountsFromNow() throws {
        let store = try ScratchStore()
        defer { store.remove() }
        do {
            let queue = try DatabaseQueue(path: store.path)
            try OutboxSchema.migrator.migrate(queue, upTo: "v8: deadlines")
            try queue.write { db in
                try db.execute(
                    sql: """
                        INSERT INTO event (id, contact, body, state, received_at, due_at, park_reason)
                        VALUES ('00000000-0000-0000-0000-000000000001', 'a@x.io', x'7b7d', 'parked', 1000, 1000, 'rejected')
                        """)
            }
        }
        let before = Date()
        let outbox = try store.open()
        #expect(try outbox.deleteParked(parkedBefore: before.addingTimeInterval(-60), limit: 10).isEmpty)
        let outlook = try #require(try outbox.storedStatus(retentionHorizon: before).retention)
        #expect(outlook.oldestParkedAt.map { $0 >= before.addingTimeInterval(-1) } == true)
    }

    @Test("a pass deletes in batches until nothing is due, logs each id, and counts in the store and the metric")
    func passLogsAndCounts() throws {
        let store = try ScratchStore()
        defer { store.remove() }
        let outbox = try store.open()
        let total = ParkedRetention.batch + 3
        let parked = try parkedEvents(total, in: outbox, reason: .expired)
        let log = RecordedLog()
        let metrics = RecordedCounter()
        let queue = DispatchQueue(label: "test.retention")
        let retention = ParkedRetention(
            outbox: outbox, maxAge: 3600, queue: queue, logger: log.logger,
            deleted: Counter(label: "retention_deleted_total", factory: metrics))
        /// The timer's pass at `now`: a first batch, then the ones it queued.
        func pass(at now: Date) throws -> Int {
            let before = try outbox.stateCounts().parked[.expired] ?? 0
            queue.sync { retention.step(cutoff: now.addingTimeInterval(-3600)) }
            queue.sync {}
            return before - (try outbox.stateCounts().parked[.expired] ?? 0)
        }
        #expect(try pass(at: start.addingTimeInterval(3599)) == 0)
        #expect(try pass(at: start.addingTimeInterval(3601)) == total)
        #expect(try outbox.stateCounts().parked.isEmpty)
        #expect(try outbox.counterValues()["retention_deleted_total"] == total)
        #expect(metrics.value == total)
        let lines = log.messages.filter { $0.message == "parked event deleted by retention" }
        #expect(Set(lines.compactMap { $0.metadata["id"] }) == Set(parked.map(\.key)))
        #expect(lines.allSatisfy { $0.metadata["reason"] == "expired" && $0.metadata["parked_max_age_seconds"] == "3600" })
    }

    @Test("on its timer a pass deletes one batch at a time, each next batch queued behind the line's other store work")
    func batchesInterleave() throws {
        let store = try ScratchStore()
        defer { store.remove() }
        let outbox = try store.open()
        let total = ParkedRetention.batch + 3
        _ = try parkedEvents(total, in: outbox, reason: .rejected)
        let queue = DispatchQueue(label: "test.retention")
        let retention = ParkedRetention(
            outbox: outbox, maxAge: 60, queue: queue, logger: RecordedLog().logger,
            deleted: Counter(label: "retention_deleted_total", factory: RecordedCounter()), clock: { self.start.addingTimeInterval(3600) })
        let afterOneStep = try queue.sync {
            retention.step(cutoff: start.addingTimeInterval(1))
            return try outbox.stateCounts().parked[.rejected] ?? 0
        }
        #expect(afterOneStep == 3, "one batch, the rest queued")
        queue.sync {}
        #expect(try outbox.stateCounts().parked.isEmpty)
    }

    @Test("the binary: rejected events parked under storage.parked_max_age 2s are deleted, each logged by id, and counted in status")
    func daemonDeletesAndReports() async throws {
        let fake = try await FakePlunk { _ in FakePlunk.legacyError(400, "bad event") }
        defer { Task { await fake.stop() } }
        var environment = DaemonDeliveryTests().environment(fake)
        environment["PLUNKD_STORAGE_PARKED_MAX_AGE"] = "2s"
        let daemon = try DaemonProcess(environment: environment)
        defer { daemon.cleanUp() }
        try daemon.waitUntilServing()
        let ids = try (0..<3).map { _ in try DaemonDeliveryTests().submit(daemon.socketPath) }
        #expect(await fake.waitFor { $0.count >= 3 })
        #expect(daemon.waitForLog(containing: "parked event deleted by retention"), "\(daemon.log)")
        let deadline = Date().addingTimeInterval(30)
        var report: [String: Any] = [:]
        while Date() < deadline {
            let run = try DaemonProcess.command(["status", "--json", "--socket", daemon.socketPath])
            report = (try? JSONSerialization.jsonObject(with: Data(run.stdout.utf8)) as? [String: Any]) ?? [:]
            if (report["retention"] as? [String: Any])?["deleted_total"] as? Int == 3 { break }
            try await Task.sleep(for: .milliseconds(100))
        }
        let retention = try #require(report["retention"] as? [String: Any], "\(report)")
        #expect(retention["deleted_total"] as? Int == 3)
        #expect(retention["parked_max_age_seconds"] as? Double == 2)
        #expect(retention["due_within_24h"] as? Int == 0)
        #expect((report["parked"] as? [String: Int])?["rejected"] == 0)
        let deletions = daemon.log.split(separator: "\n").filter { $0.contains("parked event deleted by retention") }
        for id in ids {
            #expect(deletions.contains { $0.contains(id) }, "\(deletions)")
        }
        let text = try DaemonProcess.command(["status", "--socket", daemon.socketPath])
        #expect(text.stdout.contains("Retention:"), "\(text.stdout)")
        #expect(text.stdout.contains("3 deleted so far"), "\(text.stdout)")
    }
}

/// Log records kept in memory, for tests that assert what was logged.
final class RecordedLog: Sendable {
    struct Entry: Sendable {
        let message: String
        let metadata: [String: String]
    }

    private let entries = Mutex<[Entry]>([])
    var messages: [Entry] { entries.withLock { $0 } }

    var logger: Logger {
        Logger(label: "test") { _ in Handler(log: self) }
    }

    fileprivate func append(_ entry: Entry) { entries.withLock { $0.append(entry) } }

    private struct Handler: LogHandler {
        let log: RecordedLog
        var metadata: Logger.Metadata = [:]
        var logLevel: Logger.Level = .trace
        subscript(metadataKey key: String) -> Logger.Metadata.Value? {
            get { metadata[key] }
            set { metadata[key] = newValue }
        }

        func log(event: LogEvent) {
            let all = metadata.merging(event.metadata ?? [:]) { _, new in new }
            log.append(Entry(message: "\(event.message)", metadata: all.mapValues { "\($0)" }))
        }
    }
}

/// A metrics factory whose every counter adds to one total.
final class RecordedCounter: MetricsFactory, Sendable {
    private let total = Mutex(0)
    var value: Int { total.withLock { $0 } }

    func makeCounter(label: String, dimensions: [(String, String)]) -> any CounterHandler { Handler(owner: self) }
    func makeFloatingPointCounter(label: String, dimensions: [(String, String)]) -> any FloatingPointCounterHandler {
        NOOPMetricsHandler.instance
    }
    func makeRecorder(label: String, dimensions: [(String, String)], aggregate: Bool) -> any RecorderHandler {
        NOOPMetricsHandler.instance
    }
    func makeTimer(label: String, dimensions: [(String, String)]) -> any TimerHandler { NOOPMetricsHandler.instance }
    func destroyCounter(_ handler: any CounterHandler) {}
    func destroyFloatingPointCounter(_ handler: any FloatingPointCounterHandler) {}
    func destroyRecorder(_ handler: any RecorderHandler) {}
    func destroyTimer(_ handler: any TimerHandler) {}

    private final class Handler: CounterHandler, Sendable {
        let owner: RecordedCounter
        init(owner: RecordedCounter) { self.owner = owner }
        func increment(by amount: Int64) { owner.total.withLock { $0 += Int(amount) } }
        func reset() {}
    }
}
