import Foundation

/// `plunkd status` for people: one screen, the state and why first, the help last.
public enum StatusText {
    public static func render(_ report: StatusReport, now: Date = Date()) -> String {
        let mark: String
        switch report.severity {
        case .ok: mark = "●"
        case .warning: mark = "▲"
        case .critical, .unknown: mark = "✖"
        }
        var lines = ["\(mark) plunkd: \(report.state.rawValue) (\(report.severity.rawValue.uppercased()))"]
        func row(_ label: String, _ value: String) {
            lines.append(label.padding(toLength: 14, withPad: " ", startingAt: 0) + value)
        }
        row("State:", report.reason)
        if let until = report.pausedUntil { row("Paused until:", "\(StatusAssessment.iso(until)) (\(span(until.timeIntervalSince(now))) from now)") }
        if let since = report.heldSince { row("Held since:", "\(StatusAssessment.iso(since)) (\(span(now.timeIntervalSince(since))) ago)") }
        if let pending = report.pending {
            var text = "\(pending) pending, \(report.inFlight ?? 0) in flight"
            if let limit = report.concurrencyLimit { text += " (up to \(limit))" }
            if let age = report.oldestPendingAgeSeconds { text += "; oldest \(span(age)) old" }
            row("Queue:", text)
        }
        var pacing: [String] = []
        if let remaining = report.rateLimitRemaining {
            pacing.append("Plunk's rate limit has \(remaining) left" + (report.rateLimitRefill.map { String(format: ", refilling %.1f/s", $0) } ?? ""))
        }
        if let rate = report.maxRate { pacing.append("plunk.max_rate " + (rate == rate.rounded() ? "\(Int(rate))" : "\(rate)") + "/s") }
        if !pacing.isEmpty { row("Pacing:", pacing.joined(separator: "; ")) }
        if let total = report.deliveredTotal {
            var text = "\(total) total"
            if let hour = report.deliveredLastHour { text += ", \(hour) in the last hour" }
            if let duplicates = report.duplicatesSuppressedTotal, duplicates > 0 { text += " (\(duplicates) duplicates suppressed by Plunk)" }
            if let rekeyed = report.rekeyedTotal, rekeyed > 0 { text += "; \(rekeyed) sent again under a new key after Plunk kept a failed attempt's key" }
            row("Delivered:", text)
        }
        row("Parked:", ParkReason.allCases.map { "\($0.rawValue) \(report.parked[$0.rawValue] ?? 0)" }.joined(separator: ", "))
        if let retention = report.retention { row("Retention:", retentionText(retention, now: now)) }
        if report.running {
            row("Last success:", report.lastSuccess.map { "\(StatusAssessment.iso($0)) (\(span(now.timeIntervalSince($0))) ago)" } ?? "none since start")
        }
        if let error = report.lastError {
            let status = error.status.map { "\($0) " } ?? ""
            let at = error.at.map { " (\(span(now.timeIntervalSince($0))) ago)" } ?? ""
            row("Last error:", "\(status)\(oneLine(error.message, limit: 160))\(at)")
        }
        if let storage = report.storageError { row("Storage:", oneLine(storage, limit: 300)) }
        if let email = report.email { emailRows(email, now: now).forEach { row($0.0, $0.1) } }
        row("Socket:", report.socket)
        if let listen = report.listen { row("TCP:", "\(listen) (HTTP routes only, bearer token required)") }
        row("Database:", report.database.path + (report.database.sizeBytes.map { " (\(bytes($0)))" } ?? ""))
        row("Version:", report.version + (report.uptimeSeconds.map { ", up \(span($0))" } ?? ""))
        if let hint = report.hint { row("Help:", hint) }
        return lines.joined(separator: "\n")
    }

    /// The email line, shorter than track's: its state, queue, parked and last error.
    private static func emailRows(_ email: LineStatus, now: Date) -> [(String, String)] {
        var rows: [(String, String)] = [("Email:", "\(email.state.rawValue): \(email.reason)")]
        var queue = "\(email.pending ?? 0) pending, \(email.inFlight ?? 0) in flight"
        if let age = email.oldestPendingAgeSeconds { queue += "; oldest \(span(age)) old" }
        queue += "; \(email.deliveredTotal ?? 0) delivered"
        if let hour = email.deliveredLastHour { queue += ", \(hour) in the last hour" }
        rows.append(("", queue))
        rows.append(("", "parked: " + ParkReason.allCases.map { "\($0.rawValue) \(email.parked[$0.rawValue] ?? 0)" }.joined(separator: ", ")))
        if let retention = email.retention { rows.append(("", "retention: " + retentionText(retention, now: now))) }
        if let until = email.pausedUntil { rows.append(("", "paused until \(StatusAssessment.iso(until)) (\(span(until.timeIntervalSince(now))) from now)")) }
        if let error = email.lastError {
            let status = error.status.map { "\($0) " } ?? ""
            rows.append(("", "last error: \(status)\(oneLine(error.message, limit: 150))"))
        }
        return rows
    }

    /// `storage.parked_max_age` and what it will delete next.
    static func retentionText(_ retention: RetentionStatus, now: Date) -> String {
        var text = "parked items are deleted \(span(retention.parkedMaxAgeSeconds)) after parking; \(retention.dueWithinDay) due within 24 h"
        if let next = retention.nextDeletionAt {
            text += ", the next at \(StatusAssessment.iso(next))" + (next > now ? " (in \(span(next.timeIntervalSince(now))))" : " (now)")
        }
        return text + "; \(retention.deletedTotal) deleted so far"
    }

    static func span(_ seconds: Double) -> String {
        let s = Int(max(0, seconds).rounded())
        switch s {
        case ..<120: return "\(s) s"
        case ..<7200: return "\(s / 60) min"
        case ..<172_800: return "\(s / 3600) h \(s % 3600 / 60) min"
        default: return "\(s / 86_400) days"
        }
    }

    static func bytes(_ count: Int64) -> String {
        let units = ["B", "KiB", "MiB", "GiB", "TiB"]
        var value = Double(count)
        var unit = 0
        while value >= 1024 && unit < units.count - 1 {
            value /= 1024
            unit += 1
        }
        return unit == 0 ? "\(count) B" : String(format: "%.1f %@", value, units[unit])
    }

    private static func oneLine(_ text: String, limit: Int) -> String {
        let flat = text.replacingOccurrences(of: "\n", with: " ").replacingOccurrences(of: "\r", with: " ")
        return flat.count > limit ? String(flat.prefix(limit)) + "…" : flat
    }
}
