import Foundation
import Testing

@testable import PlunkdCore

/// One table of states drives the JSON, the exit status, the metrics and systemd's
/// status line; the tables of docs/operations.md must say the same.
@Suite("Reported states", .timeLimit(.minutes(2)), .watchdog)
struct ReportedStateTests {
    static var readme: String {
        get throws {
            let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            return try String(contentsOf: root.appendingPathComponent("docs/operations.md"), encoding: .utf8)
        }
    }

    /// The backquoted words of the operations page's table row that starts with `prefix`.
    func row(_ prefix: String) throws -> [String] {
        let line = try #require(try Self.readme.split(separator: "\n").first { $0.hasPrefix(prefix) })
        return line.split(separator: "`").enumerated().filter { $0.offset % 2 == 1 }.map { String($0.element) }
    }

    @Test("the operations page's exit-status table names each state under its severity")
    func exitTable() throws {
        for (prefix, severity) in [("| 0 | OK", StatusReport.Severity.ok), ("| 1 | WARNING", .warning), ("| 2 | CRITICAL", .critical)] {
            // Park reasons (rejected, expired, uncertain) are named there too, as warnings.
            let reasons = Set(ParkReason.allCases.map(\.rawValue))
            let named = Set(try row(prefix).filter { !$0.contains(".") && !$0.contains(" ") && !reasons.contains($0) })
            let table = Set(ReportedState.allCases.filter { $0.severity == severity && $0 != .unknown }.map(\.rawValue))
            #expect(named == table, "\(prefix)")
        }
    }

    @Test("the operations page's --json table lists every state, and the JSON carries the raw strings")
    func jsonStrings() throws {
        #expect(Set(try row("| `state` |").dropFirst()) == Set(ReportedState.allCases.filter { $0 != .unknown }.map(\.rawValue)))
        let decoded = try JSONDecoder().decode([ReportedState].self, from: Data(#"["quota_paused","a_state_from_a_newer_daemon"]"#.utf8))
        #expect(decoded == [.quotaPaused, .unknown])
        #expect(String(decoding: try JSONEncoder().encode([ReportedState.storageError]), as: UTF8.self) == #"["storage_error"]"#)
    }

    @Test("every state of a running daemon has its metrics gauge; every delivery state maps to one of them")
    func metricsAndSender() throws {
        let metrics = MetricsExposition()
        var report = StatusAssessment.unknown("test", context: StatusContext(socketPath: "/s", databasePath: "/d", warnOldestAge: 900), now: Date())
        report.state = .rateLimited
        let text = metrics.render(report)
        for state in ReportedState.whileRunning {
            #expect(text.contains("plunkd_delivery_state{state=\"\(state.rawValue)\"} \(state == .rateLimited ? 1 : 0)"), "\(state)")
        }
        for delivery in [DeliveryState.delivering, .idle, .backingOff, .rateLimited, .quotaPaused, .authHeld, .noAPIKey] {
            #expect(ReportedState(delivery).rawValue == delivery.rawValue)
            #expect(!ReportedState(delivery).systemdStatus.isEmpty)
        }
    }
}
