import Foundation

/// What a status report needs beyond the sender and the store.
public struct StatusContext: Sendable {
    public var socketPath: String
    public var databasePath: String
    /// Pending events older than this make the status a warning (`status.warn_oldest_age`).
    public var warnOldestAge: TimeInterval
    public var startedAt: Date?
    /// `ingest.listen`, when the HTTP routes are also served over TCP.
    public var listen: String?
    /// The line reported on: track events, or the transactional emails of `/v1/send`.
    public var kind: EventKind = .track
    /// `storage.parked_max_age`, when set.
    public var parkedMaxAge: TimeInterval?

    /// The retention's cutoff a day from `now`: what is parked before it is deleted within
    /// the day. Nil when no retention is set.
    public func retentionHorizon(now: Date) -> Date? {
        parkedMaxAge.map { now.addingTimeInterval(RetentionStatus.outlookSeconds - $0) }
    }

    public init(
        socketPath: String, databasePath: String, warnOldestAge: TimeInterval, startedAt: Date? = nil, listen: String? = nil,
        kind: EventKind = .track, parkedMaxAge: TimeInterval? = nil
    ) {
        self.kind = kind
        self.parkedMaxAge = parkedMaxAge
        self.listen = listen
        self.socketPath = socketPath
        self.databasePath = databasePath
        self.warnOldestAge = warnOldestAge
        self.startedAt = startedAt
    }
}

/// Turns what the sender and the store say into one report: the state, why, how bad,
/// and the one step that would help.
public enum StatusAssessment {
    /// The running daemon's view. `stored` fails when the store cannot be read.
    public static func running(
        snapshot: SenderSnapshot, stored: Result<StoredStatus, any Error>, context: StatusContext, now: Date
    ) -> StatusReport {
        var report = base(context: context, now: now, running: true)
        report.inFlight = snapshot.inFlight
        report.concurrencyLimit = snapshot.concurrencyLimit
        report.maxRate = snapshot.maxRate
        report.rateLimitRemaining = snapshot.rateLimitRemaining
        report.rateLimitRefill = snapshot.rateLimitRefill
        report.deliveredLastHour = snapshot.deliveredLastHour
        report.pausedUntil = snapshot.pausedUntil
        report.heldSince = snapshot.heldSince
        report.blockedUntil = snapshot.blockedUntil.flatMap { $0 > now ? $0 : nil }
        report.lastSuccess = snapshot.lastSuccess
        report.lastError = snapshot.lastError.map {
            StatusReport.LastError(status: snapshot.lastErrorStatus, message: String($0.prefix(500)), at: snapshot.lastErrorAt)
        }
        report.uptimeSeconds = context.startedAt.map { now.timeIntervalSince($0) }
        report.state = ReportedState(snapshot.state)
        switch stored {
        case .success(let status):
            fill(&report, from: status, context: context, now: now)
            report.pending = max(0, status.inLine - snapshot.inFlight)
        case .failure(let error):
            report.storageError = "\(error)"
        }
        if snapshot.storageFailing && report.storageError == nil {
            report.storageError = "the store refuses delivery updates (see the log); retrying every second"
        }
        if report.storageError != nil { report.state = .storageError }
        return judged(report, snapshot: snapshot, context: context, now: now)
    }

    /// No daemon answered: what the store says, read-only. `unreachable` says why the
    /// socket did not answer. `email` is the email line's store, when there is one: the
    /// emails kept there are shown too, not just track's events.
    public static func notRunning(
        stored: Result<StoredStatus, any Error>, unreachable: String, context: StatusContext, now: Date,
        email: (stored: Result<StoredStatus, any Error>, databasePath: String)? = nil
    ) -> StatusReport {
        var report = lineNotRunning(stored: stored, unreachable: unreachable, context: context, now: now)
        if let email {
            var emailContext = context
            emailContext.databasePath = email.databasePath
            emailContext.kind = .email
            report.email = lineNotRunning(stored: email.stored, unreachable: unreachable, context: emailContext, now: now).line
        }
        return report
    }

    private static func lineNotRunning(
        stored: Result<StoredStatus, any Error>, unreachable: String, context: StatusContext, now: Date
    ) -> StatusReport {
        var report = base(context: context, now: now, running: false)
        report.state = .notRunning
        switch stored {
        case .success(let status):
            fill(&report, from: status, context: context, now: now)
            report.pending = status.inLine
            report.inFlight = 0
            report.pausedUntil = status.hold.pausedUntil
            report.heldSince = status.hold.refusedKeyFingerprint != nil ? status.hold.heldSince : nil
        case .failure(let error as OutboxError) where error.kind == .missing:
            report.reason = "plunkd is not running (\(unreachable)), and there is no store at \(context.databasePath) yet"
        case .failure(let error as OutboxError) where error.kind == .failed:
            // Cannot look (permissions, a busy lock): that says nothing about the store itself.
            report.reason = "plunkd is not running (\(unreachable)); its store cannot be read from here: \(error.detail)"
        case .failure(let error):
            report.storageError = "\(error)"
            report.state = .storageError
        }
        if report.reason.isEmpty {
            report.reason =
                report.storageError.map { "plunkd is not running and its store cannot be read: \($0)" }
                ?? "plunkd is not running (\(unreachable))"
        }
        report.severity = report.state.severity
        report.hint =
            report.storageError != nil
            ? "check the database file and the disk (df -h \(directory(of: context.databasePath))); journalctl -u plunkd says why it stopped"
            : "systemctl start plunkd (or: plunkd run); journalctl -u plunkd says why it stopped"
        return report
    }

    /// Something answered on the socket that could not be understood.
    public static func unknown(_ why: String, context: StatusContext, now: Date) -> StatusReport {
        var report = base(context: context, now: now, running: false)
        report.state = .unknown
        report.reason = "cannot tell: \(why)"
        report.severity = report.state.severity
        return report
    }

    private static func base(context: StatusContext, now: Date, running: Bool) -> StatusReport {
        var report = StatusReport(
            state: .unknown, reason: "", severity: .unknown, running: running,
            parked: Dictionary(uniqueKeysWithValues: ParkReason.allCases.map { ($0.rawValue, 0) }),
            socket: context.socketPath, database: .init(path: context.databasePath, sizeBytes: nil),
            version: PlunkdVersion.string, checkedAt: now)
        report.listen = context.listen
        return report
    }

    private static func fill(_ report: inout StatusReport, from status: StoredStatus, context: StatusContext, now: Date) {
        if let maxAge = context.parkedMaxAge {
            report.retention = RetentionStatus(
                parkedMaxAgeSeconds: maxAge, dueWithinDay: status.retention?.dueByHorizon ?? 0,
                nextDeletionAt: status.retention?.oldestParkedAt.map { max(now, $0.addingTimeInterval(maxAge)) },
                deletedTotal: status.counters[OutboxCounter.deletedByRetention.name] ?? 0)
        }
        report.oldestPendingAgeSeconds = status.oldestInLineReceivedAt.map { max(0, now.timeIntervalSince($0)) }
        report.deliveredTotal = status.counters[OutboxCounter.delivered.name] ?? 0
        report.duplicatesSuppressedTotal = status.counters[OutboxCounter.duplicatesSuppressed.name] ?? 0
        report.rekeyedTotal = status.counters[OutboxCounter.rekeyed.name] ?? 0
        report.droppedTotal = status.counters[OutboxCounter.dropped.name] ?? 0
        for (reason, count) in status.parked { report.parked[reason.rawValue] = count }
        report.database.sizeBytes = status.fileBytes
    }

    private static func judged(_ report: StatusReport, snapshot: SenderSnapshot, context: StatusContext, now: Date) -> StatusReport {
        var report = report
        let pending = report.pending ?? 0
        let when = { (date: Date?) in date.map(iso) ?? "unknown" }
        report.severity = report.state.severity
        let things = context.kind == .track ? "events" : "emails"
        let key = context.kind == .track ? "API key" : "secret key"
        let keyPlaces =
            context.kind == .track
            ? "plunk.api_key_file (or PLUNK_API_KEY, or the plunk-api-key credential)"
            : "plunk.secret_key_file (or PLUNK_SECRET_KEY, or the plunk-secret-key credential)"
        switch report.state {
        case .storageError:
            report.reason = "storage error: \(report.storageError ?? "unknown")"
            report.hint = "check the disk and the file (df -h \(directory(of: context.databasePath))); \(things) already stored are kept"
        case .quotaPaused:
            let why = context.kind == .track ? "Plunk's monthly quota is spent (402)" : "Plunk's monthly email limit is reached"
            report.reason = "paused until \(when(report.pausedUntil)): \(why); \(pending) \(things) wait"
            report.hint = "after upgrading the Plunk plan: plunkd resume"
        case .authHeld:
            report.reason = "held since \(when(report.heldSince)): Plunk refused the \(key); \(pending) \(things) wait"
            report.hint = "put a valid key in place (\(keyPlaces)), then: systemctl reload plunkd"
        case .noAPIKey where context.kind == .email && pending == 0:
            // Most hosts send no email through plunkd: a missing secret key is news only
            // once an email waits for it.
            report.severity = .ok
            report.reason = "no secret key configured: an email sent to /v1/send would be kept, not sent; none waits"
        case .noAPIKey:
            report.reason = "no \(key) configured: \(pending) \(things) are kept, nothing is sent"
            report.hint = "set \(keyPlaces), then: systemctl reload plunkd"
        case .rateLimited:
            report.reason = "rate limited by Plunk (429) until \(when(report.blockedUntil)); \(pending) \(things) wait"
            report.hint = "nothing to do: delivery resumes by itself"
        case .backingOff:
            let next = report.blockedUntil.map { "; next attempt at \(iso($0))" } ?? ""
            report.reason = "backing off: \(snapshot.consecutiveFailures) failed attempts in a row\(next)"
            report.hint = "delivery retries by itself; last_error says what Plunk answered"
        case .delivering:
            report.reason = "delivering: \(snapshot.inFlight) requests in flight, \(pending) pending"
        case .idle, .notRunning, .unknown:
            report.reason = pending == 0 ? "idle: nothing to send" : "idle: \(pending) pending \(things) wait for their next attempt"
        }
        guard report.severity == .ok else { return report }
        let troubled = (report.parked[ParkReason.rejected.rawValue] ?? 0) + (report.parked[ParkReason.expired.rawValue] ?? 0)
        if let age = report.oldestPendingAgeSeconds, age > context.warnOldestAge {
            report.severity = .warning
            report.reason += "; the oldest pending \(context.kind.noun) is \(Int(age)) s old (over status.warn_oldest_age)"
            report.hint = "last_error says why delivery is slow"
        }
        let line = context.kind == .track ? "" : " --email"
        if troubled > 0 {
            report.severity = .warning
            report.reason += "; \(troubled) \(things) parked as rejected or expired"
            report.hint = "plunkd parked list\(line), then plunkd parked retry\(line) or plunkd parked drop\(line)"
        }
        // Said last, and its hint wins: the one case where a resend may reach a customer twice.
        let uncertain = report.parked[ParkReason.uncertain.rawValue] ?? 0
        if uncertain > 0 {
            report.severity = .warning
            report.reason += "; \(uncertain) \(things) parked uncertain: Plunk's send failed part-way, some recipients may have them already"
            report.hint =
                "plunkd parked list\(line) --reason uncertain; send one again only if its recipients did not get it: plunkd parked retry\(line) --new-key ID (it may reach some twice), or plunkd parked drop\(line) ID"
        }
        return report
    }

    static func iso(_ date: Date) -> String {
        date.formatted(.iso8601)
    }

    private static func directory(of path: String) -> String {
        (path as NSString).deletingLastPathComponent
    }
}
