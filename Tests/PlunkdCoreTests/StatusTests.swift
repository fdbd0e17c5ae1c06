import Foundation
import Testing

@testable import PlunkdCore

/// The status report: state, severity (the exit status), reason and hint for every state,
/// and the JSON shape monitoring scripts rely on.
@Suite("Status report", .timeLimit(.minutes(2)), .watchdog)
struct StatusTests {
    let now = Date(timeIntervalSince1970: 1_800_000_000)
    let context = StatusContext(
        socketPath: "/run/plunkd/plunkd.sock", databasePath: "/var/lib/plunkd/outbox.sqlite",
        warnOldestAge: 600, startedAt: Date(timeIntervalSince1970: 1_799_999_000))

    func snapshot(_ state: DeliveryState, inFlight: Int = 0, failures: Int = 0) -> SenderSnapshot {
        SenderSnapshot(
            state: state, inFlight: inFlight,
            pausedUntil: state == .quotaPaused ? Date(timeIntervalSince1970: 1_801_000_000) : nil,
            heldSince: state == .authHeld ? now.addingTimeInterval(-60) : nil,
            blockedUntil: [.rateLimited, .backingOff].contains(state) ? now.addingTimeInterval(30) : nil,
            consecutiveFailures: failures, lastSuccess: now.addingTimeInterval(-5),
            lastError: state == .idle ? nil : "503 Service Unavailable: <html>upstream</html>",
            lastErrorStatus: state == .idle ? nil : 503, lastErrorAt: now.addingTimeInterval(-2),
            deliveredLastHour: 42, storageFailing: false, concurrencyLimit: 8)
    }

    func stored(inLine: Int = 10, parked: [ParkReason: Int] = [:], oldestAge: Double? = 3) -> StoredStatus {
        StoredStatus(
            inLine: inLine, parked: parked, oldestInLineReceivedAt: oldestAge.map { now.addingTimeInterval(-$0) },
            counters: ["delivered_total": 1234, "duplicates_suppressed_total": 2, "dropped_total": 1],
            hold: StoredDeliveryHold(), fileBytes: 65_536)
    }

    func running(_ state: DeliveryState, inFlight: Int = 0, stored: StoredStatus? = nil) -> StatusReport {
        StatusAssessment.running(
            snapshot: snapshot(state, inFlight: inFlight, failures: state == .backingOff ? 4 : 0),
            stored: .success(stored ?? self.stored()), context: context, now: now)
    }

    @Test(
        "every running state has its severity and exit status",
        arguments: [
            (DeliveryState.delivering, StatusReport.Severity.ok, Int32(0)),
            (.idle, .ok, 0),
            (.backingOff, .warning, 1),
            (.rateLimited, .warning, 1),
            (.quotaPaused, .critical, 2),
            (.authHeld, .critical, 2),
            (.noAPIKey, .critical, 2),
        ])
    func severities(state: DeliveryState, severity: StatusReport.Severity, exit: Int32) {
        let report = running(state, inFlight: state == .delivering ? 3 : 0)
        #expect(report.state.rawValue == state.rawValue)
        #expect(report.severity == severity)
        #expect(report.severity.exitCode == exit)
        #expect(!report.reason.isEmpty)
        #expect(report.running)
        if severity != .ok { #expect(report.hint != nil) }
    }

    @Test("pending excludes requests in flight; counters come from the store")
    func counts() {
        let report = running(.delivering, inFlight: 3)
        #expect(report.pending == 7)
        #expect(report.inFlight == 3)
        #expect(report.deliveredTotal == 1234)
        #expect(report.deliveredLastHour == 42)
        #expect(report.duplicatesSuppressedTotal == 2)
        #expect(report.droppedTotal == 1)
        #expect(report.oldestPendingAgeSeconds == 3)
        #expect(report.database.sizeBytes == 65_536)
        #expect(report.uptimeSeconds == 1000)
    }

    @Test("the hint names the command that helps")
    func hints() {
        #expect(running(.quotaPaused).hint?.contains("plunkd resume") == true)
        #expect(running(.quotaPaused).pausedUntil != nil)
        #expect(running(.authHeld).hint?.contains("systemctl reload plunkd") == true)
        #expect(running(.authHeld).heldSince != nil)
        #expect(running(.noAPIKey).hint?.contains("api_key") == true)
    }

    @Test("an old pending event or a rejected/expired parked event makes a healthy state a warning")
    func warnings() {
        let old = running(.idle, stored: stored(oldestAge: 601))
        #expect(old.severity == .warning)
        #expect(old.reason.contains("601"))
        let young = running(.idle, stored: stored(oldestAge: 599))
        #expect(young.severity == .ok)
        let rejected = running(.idle, stored: stored(parked: [.rejected: 2]))
        #expect(rejected.severity == .warning)
        #expect(rejected.hint?.contains("plunkd parked list") == true)
        let expired = running(.delivering, stored: stored(parked: [.expired: 1]))
        #expect(expired.severity == .warning)
        // Unauthorized events come back by themselves once the key is fixed: not a warning on their own.
        let unauthorized = running(.idle, stored: stored(parked: [.unauthorized: 5]))
        #expect(unauthorized.severity == .ok)
        #expect(unauthorized.parked["unauthorized"] == 5)
        // A critical state stays critical whatever else is true.
        #expect(running(.quotaPaused, stored: stored(parked: [.rejected: 1], oldestAge: 9999)).severity == .critical)
    }

    @Test("a store that cannot be read is a storage error, critical")
    func storageError() {
        struct Broken: Error, CustomStringConvertible { var description: String { "disk I/O error" } }
        let report = StatusAssessment.running(snapshot: snapshot(.idle), stored: .failure(Broken()), context: context, now: now)
        #expect(report.state.rawValue == "storage_error")
        #expect(report.severity == .critical)
        #expect(report.storageError?.contains("disk I/O error") == true)
        var failing = snapshot(.idle)
        failing.storageFailing = true
        let refusing = StatusAssessment.running(snapshot: failing, stored: .success(stored()), context: context, now: now)
        #expect(refusing.state.rawValue == "storage_error")
        #expect(refusing.severity == .critical)
    }

    @Test("not running: critical, with the stored counts, pause and hint")
    func notRunning() {
        var status = stored(inLine: 4)
        status.hold.pausedUntil = Date(timeIntervalSince1970: 1_801_000_000)
        let report = StatusAssessment.notRunning(stored: .success(status), unreachable: "nothing answers", context: context, now: now)
        #expect(report.state.rawValue == "not_running")
        #expect(report.severity == .critical)
        #expect(!report.running)
        #expect(report.pending == 4)
        #expect(report.pausedUntil == status.hold.pausedUntil)
        #expect(report.deliveredLastHour == nil)
        #expect(report.hint?.contains("systemctl start plunkd") == true)

        let missing = StatusAssessment.notRunning(
            stored: .failure(OutboxError(.missing, path: "/x", detail: "none")), unreachable: "nothing", context: context, now: now)
        #expect(missing.state.rawValue == "not_running")
        #expect(missing.storageError == nil)
        let unreadable = StatusAssessment.notRunning(
            stored: .failure(OutboxError(.failed, path: "/x", detail: "/var/lib/plunkd: Permission denied")), unreachable: "nothing", context: context, now: now
        )
        #expect(unreadable.state.rawValue == "not_running")
        #expect(unreadable.reason.contains("Permission denied"))
        let damaged = StatusAssessment.notRunning(
            stored: .failure(OutboxError(.unusable, path: "/x", detail: "file is not a database")), unreachable: "nothing", context: context, now: now)
        #expect(damaged.state.rawValue == "storage_error")
        #expect(damaged.severity == .critical)
    }

    @Test("JSON: every documented key is present (null when unknown), dates in ISO 8601, and it decodes back")
    func json() throws {
        let report = running(.quotaPaused)
        let object = try #require(try JSONSerialization.jsonObject(with: Data(report.json().utf8)) as? [String: Any])
        for key in [
            "state", "reason", "severity", "running", "pending", "in_flight", "oldest_pending_age_seconds",
            "delivered_total", "delivered_last_hour", "parked", "paused_until", "held_since", "last_error",
            "last_success", "storage_error", "socket", "listen", "database", "version", "uptime_seconds", "hint", "checked_at",
        ] {
            #expect(object.keys.contains(key), "missing \(key)")
        }
        #expect(object["held_since"] is NSNull)
        #expect(object["paused_until"] as? String == "2027-01-26T21:46:40Z")
        let lastError = try #require(object["last_error"] as? [String: Any])
        #expect(lastError["status"] as? Int == 503)
        #expect((object["parked"] as? [String: Int])?.keys.sorted() == ["expired", "rejected", "unauthorized", "uncertain"])
        let decoded = try StatusReport.decoder().decode(StatusReport.self, from: Data(report.json().utf8))
        #expect(decoded == report)
    }

    @Test("the text fits one screen and carries the state, the reason and the help")
    func text() {
        let text = StatusText.render(running(.quotaPaused), now: now)
        let lines = text.split(separator: "\n")
        #expect(lines.count <= 20)
        #expect(lines.allSatisfy { $0.count <= 200 })
        #expect(text.contains("quota_paused (CRITICAL)"))
        #expect(text.contains("Paused until:"))
        #expect(text.contains("plunkd resume"))
        #expect(text.contains("503"))
    }

    @Test("delivered in the last hour counts only the last 60 minutes")
    func recentDeliveries() {
        var recent = RecentDeliveries()
        let start = Date(timeIntervalSince1970: 6_000_000)
        recent.record(5, at: start)
        recent.record(3, at: start.addingTimeInterval(30 * 60))
        #expect(recent.lastHour(now: start.addingTimeInterval(59 * 60)) == 8)
        #expect(recent.lastHour(now: start.addingTimeInterval(61 * 60)) == 3)
        #expect(recent.lastHour(now: start.addingTimeInterval(3 * 3600)) == 0)
        recent.record(1, at: start.addingTimeInterval(3 * 3600))
        #expect(recent.lastHour(now: start.addingTimeInterval(3 * 3600)) == 1)
    }
}
