import Foundation

/// What `plunkd status` says of one line: its state, queue, parked events, counters and
/// last error, since every line has its own store, sender, pause and hold. Track's fields
/// are the report's top level (`StatusReport` reads and writes them through this type);
/// each other line is an object of its own under its kind (`"email"`), with the same names.
public struct LineStatus: Codable, Sendable, Equatable {
    public var state: ReportedState
    /// The state and why, in one sentence.
    public var reason: String
    public var severity: StatusReport.Severity
    public var pending: Int?
    public var inFlight: Int?
    /// Requests allowed in flight while Plunk is healthy: learned with `auto`, else the
    /// configured number. Null when the daemon is not running.
    public var concurrencyLimit: Int?
    /// `plunk.max_rate`; null when unset.
    public var maxRate: Double?
    /// What Plunk's `RateLimit-Remaining` last said on this line's route, and the refill
    /// rate measured from its answers: null unless a rate-limiting Plunk answered in the
    /// last minute.
    public var rateLimitRemaining: Int?
    public var rateLimitRefill: Double?
    public var oldestPendingAgeSeconds: Double?
    public var deliveredTotal: Int?
    /// Null when the daemon is not running (it is counted in memory).
    public var deliveredLastHour: Int?
    public var duplicatesSuppressedTotal: Int?
    /// Events sent again under a derived key after Plunk kept their first key burned.
    public var rekeyedTotal: Int?
    public var droppedTotal: Int?
    public var parked: [String: Int]
    /// What `storage.parked_max_age` deletes; null when no retention is set.
    public var retention: RetentionStatus?
    public var pausedUntil: Date?
    public var heldSince: Date?
    public var blockedUntil: Date?
    public var lastSuccess: Date?
    public var lastError: StatusReport.LastError?
    public var storageError: String?
    public var database: StatusReport.Database
    /// The one command or step that would help, if any.
    public var hint: String?

    init(state: ReportedState, reason: String, severity: StatusReport.Severity, parked: [String: Int], database: StatusReport.Database) {
        self.state = state
        self.reason = reason
        self.severity = severity
        self.parked = parked
        self.database = database
    }

    enum CodingKeys: String, CodingKey {
        case state, reason, severity, pending
        case inFlight = "in_flight"
        case concurrencyLimit = "concurrency_limit"
        case maxRate = "max_rate"
        case rateLimitRemaining = "rate_limit_remaining"
        case rateLimitRefill = "rate_limit_refill_per_second"
        case oldestPendingAgeSeconds = "oldest_pending_age_seconds"
        case deliveredTotal = "delivered_total"
        case deliveredLastHour = "delivered_last_hour"
        case duplicatesSuppressedTotal = "duplicates_suppressed_total"
        case rekeyedTotal = "rekeyed_total"
        case droppedTotal = "dropped_total"
        case parked, retention
        case pausedUntil = "paused_until"
        case heldSince = "held_since"
        case blockedUntil = "blocked_until"
        case lastSuccess = "last_success"
        case lastError = "last_error"
        case storageError = "storage_error"
        case database, hint
    }

    /// Every optional field is written, as null when unknown, so a script can rely on the keys.
    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(state, forKey: .state)
        try c.encode(reason, forKey: .reason)
        try c.encode(severity, forKey: .severity)
        try c.encode(pending, forKey: .pending)
        try c.encode(inFlight, forKey: .inFlight)
        try c.encode(concurrencyLimit, forKey: .concurrencyLimit)
        try c.encode(maxRate, forKey: .maxRate)
        try c.encode(rateLimitRemaining, forKey: .rateLimitRemaining)
        try c.encode(rateLimitRefill.map { ($0 * 10).rounded() / 10 }, forKey: .rateLimitRefill)
        try c.encode(oldestPendingAgeSeconds, forKey: .oldestPendingAgeSeconds)
        try c.encode(deliveredTotal, forKey: .deliveredTotal)
        try c.encode(deliveredLastHour, forKey: .deliveredLastHour)
        try c.encode(duplicatesSuppressedTotal, forKey: .duplicatesSuppressedTotal)
        try c.encode(rekeyedTotal, forKey: .rekeyedTotal)
        try c.encode(droppedTotal, forKey: .droppedTotal)
        try c.encode(parked, forKey: .parked)
        try c.encode(retention, forKey: .retention)
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

/// The retention of parked events (`storage.parked_max_age`) as status shows it.
public struct RetentionStatus: Codable, Sendable, Equatable {
    /// How far ahead `dueWithinDay` looks.
    static let outlookSeconds: TimeInterval = 86_400

    public var parkedMaxAgeSeconds: Double
    /// Parked events the retention deletes within the next 24 hours.
    public var dueWithinDay: Int
    /// When the next one goes (the oldest parking plus the age); null when none is parked.
    public var nextDeletionAt: Date?
    public var deletedTotal: Int

    enum CodingKeys: String, CodingKey {
        case parkedMaxAgeSeconds = "parked_max_age_seconds"
        case dueWithinDay = "due_within_24h"
        case nextDeletionAt = "next_deletion_at"
        case deletedTotal = "deleted_total"
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(parkedMaxAgeSeconds, forKey: .parkedMaxAgeSeconds)
        try c.encode(dueWithinDay, forKey: .dueWithinDay)
        try c.encode(nextDeletionAt, forKey: .nextDeletionAt)
        try c.encode(deletedTotal, forKey: .deletedTotal)
    }
}

extension StatusReport {
    /// Adds another line (`report` was assessed for it: `StatusContext.kind`): its state
    /// joins the report's severity (the worse of the two) and, when not ok, its reason and
    /// hint, so `plunkd status`'s exit code and first line tell of a stuck line too.
    public mutating func add(line report: StatusReport, kind: EventKind = .email) {
        let other = report.line
        switch kind {
        case .email: email = other
        case .track: preconditionFailure("track's line is the report's top level")
        }
        guard other.severity != .ok else { return }
        line.reason += "; \(kind.rawValue): \(other.reason)"
        if line.severity <= other.severity {
            if line.severity < other.severity || line.hint == nil { line.hint = other.hint ?? line.hint }
            line.severity = other.severity
        }
    }
}
