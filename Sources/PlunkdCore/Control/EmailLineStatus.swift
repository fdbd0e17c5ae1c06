import Foundation

/// The transactional-email line in `plunkd status`: its own state, queue, parked emails
/// and last error, since it has its own store, sender, pause and hold. The field names
/// are those of the track line's at the top of the report, and as stable.
public struct EmailLineStatus: Codable, Sendable, Equatable {
    public var state: ReportedState
    public var reason: String
    public var severity: StatusReport.Severity
    public var pending: Int?
    public var inFlight: Int?
    public var concurrencyLimit: Int?
    /// What Plunk's `RateLimit-Remaining` last said on `/v1/send` (the send bucket).
    public var rateLimitRemaining: Int?
    public var oldestPendingAgeSeconds: Double?
    public var deliveredTotal: Int?
    public var deliveredLastHour: Int?
    public var duplicatesSuppressedTotal: Int?
    public var parked: [String: Int]
    public var pausedUntil: Date?
    public var heldSince: Date?
    public var blockedUntil: Date?
    public var lastSuccess: Date?
    public var lastError: StatusReport.LastError?
    public var storageError: String?
    public var database: StatusReport.Database
    public var hint: String?

    enum CodingKeys: String, CodingKey {
        case state, reason, severity, pending
        case inFlight = "in_flight"
        case concurrencyLimit = "concurrency_limit"
        case rateLimitRemaining = "rate_limit_remaining"
        case oldestPendingAgeSeconds = "oldest_pending_age_seconds"
        case deliveredTotal = "delivered_total"
        case deliveredLastHour = "delivered_last_hour"
        case duplicatesSuppressedTotal = "duplicates_suppressed_total"
        case parked
        case pausedUntil = "paused_until"
        case heldSince = "held_since"
        case blockedUntil = "blocked_until"
        case lastSuccess = "last_success"
        case lastError = "last_error"
        case storageError = "storage_error"
        case database, hint
    }

    /// The line's part of a report assessed for the email line (`StatusContext.kind`).
    public init(_ report: StatusReport) {
        state = report.state
        reason = report.reason
        severity = report.severity
        pending = report.pending
        inFlight = report.inFlight
        concurrencyLimit = report.concurrencyLimit
        rateLimitRemaining = report.rateLimitRemaining
        oldestPendingAgeSeconds = report.oldestPendingAgeSeconds
        deliveredTotal = report.deliveredTotal
        deliveredLastHour = report.deliveredLastHour
        duplicatesSuppressedTotal = report.duplicatesSuppressedTotal
        parked = report.parked
        pausedUntil = report.pausedUntil
        heldSince = report.heldSince
        blockedUntil = report.blockedUntil
        lastSuccess = report.lastSuccess
        lastError = report.lastError
        storageError = report.storageError
        database = report.database
        hint = report.hint
    }

    /// Every optional field is written, as null when unknown, as in `StatusReport`.
    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(state, forKey: .state)
        try c.encode(reason, forKey: .reason)
        try c.encode(severity, forKey: .severity)
        try c.encode(pending, forKey: .pending)
        try c.encode(inFlight, forKey: .inFlight)
        try c.encode(concurrencyLimit, forKey: .concurrencyLimit)
        try c.encode(rateLimitRemaining, forKey: .rateLimitRemaining)
        try c.encode(oldestPendingAgeSeconds, forKey: .oldestPendingAgeSeconds)
        try c.encode(deliveredTotal, forKey: .deliveredTotal)
        try c.encode(deliveredLastHour, forKey: .deliveredLastHour)
        try c.encode(duplicatesSuppressedTotal, forKey: .duplicatesSuppressedTotal)
        try c.encode(parked, forKey: .parked)
        try c.encode(pausedUntil, forKey: .pausedUntil)
        try c.encode(heldSince, forKey: .heldSince)
        try c.encode(blockedUntil, forKey: .blockedUntil)
        try c.encode(lastSuccess, forKey: .lastSuccess)
        try c.encode(lastError, forKey: .lastError)
        try c.encode(storageError, forKey: .storageError)
        try c.encode(database, forKey: .database)
        try c.encode(hint, forKey: .hint)
    }
}

extension StatusReport {
    /// Adds another line (`report` was assessed for it: `StatusContext.kind`): its state
    /// joins the report's severity (the worse of the two) and, when not ok, its reason and
    /// hint, so `plunkd status`'s exit code and first line tell of a stuck line too.
    public mutating func add(line report: StatusReport, kind: EventKind = .email) {
        let line = EmailLineStatus(report)
        switch kind {
        case .email: email = line
        case .track: preconditionFailure("track's line is the report's top level")
        }
        guard line.severity != .ok else { return }
        reason += "; \(kind.rawValue): \(line.reason)"
        if severity <= line.severity {
            if severity < line.severity || hint == nil { hint = line.hint ?? hint }
            severity = line.severity
        }
    }
}
