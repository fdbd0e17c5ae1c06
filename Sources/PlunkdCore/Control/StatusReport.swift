import Foundation

/// What `plunkd status --json` prints and `GET /status` answers. The field names are a
/// stable interface for monitoring scripts: fields may be added, never renamed or removed.
public struct StatusReport: Codable, Sendable, Equatable {
    /// Severity in the monitoring-plugins sense; the exit status of `plunkd status`.
    public enum Severity: String, Codable, Sendable, Comparable {
        case ok, warning, critical, unknown

        public var exitCode: Int32 {
            switch self {
            case .ok: 0
            case .warning: 1
            case .critical: 2
            case .unknown: 3
            }
        }

        private var rank: Int { Int(exitCode) }
        public static func < (a: Self, b: Self) -> Bool { a.rank < b.rank }
    }

    public struct LastError: Codable, Sendable, Equatable {
        public var status: Int?
        public var message: String
        public var at: Date?
    }

    public struct Database: Codable, Sendable, Equatable {
        public var path: String
        public var sizeBytes: Int64?

        enum CodingKeys: String, CodingKey {
            case path
            case sizeBytes = "size_bytes"
        }
    }

    public var state: ReportedState
    /// The state and why, in one sentence.
    public var reason: String
    public var severity: Severity
    public var running: Bool
    public var pending: Int?
    public var inFlight: Int?
    /// Requests allowed in flight while Plunk is healthy: learned with `auto`, else the
    /// configured number. Null when the daemon is not running.
    public var concurrencyLimit: Int?
    /// `plunk.max_rate`; null when unset.
    public var maxRate: Double?
    /// What Plunk's `RateLimit-Remaining` last said, and the refill rate measured from its
    /// answers: null unless a rate-limiting Plunk answered in the last minute.
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
    public var pausedUntil: Date?
    public var heldSince: Date?
    public var blockedUntil: Date?
    public var lastSuccess: Date?
    public var lastError: LastError?
    public var storageError: String?
    public var socket: String
    /// The TCP listener's address (`ingest.listen`), nil when it is off.
    public var listen: String? = nil
    /// The transactional-email line (`/v1/send`); null when the daemon is not running.
    public var email: EmailLineStatus? = nil
    public var database: Database
    public var version: String
    public var uptimeSeconds: Double?
    /// The one command or step that would help, if any.
    public var hint: String?
    public var checkedAt: Date

    enum CodingKeys: String, CodingKey {
        case state, reason, severity, running, pending
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
        case parked
        case pausedUntil = "paused_until"
        case heldSince = "held_since"
        case blockedUntil = "blocked_until"
        case lastSuccess = "last_success"
        case lastError = "last_error"
        case storageError = "storage_error"
        case socket, listen, email, database, version
        case uptimeSeconds = "uptime_seconds"
        case hint
        case checkedAt = "checked_at"
    }

    /// Every optional field is written, as null when unknown, so a script can rely on the keys.
    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(state, forKey: .state)
        try c.encode(reason, forKey: .reason)
        try c.encode(severity, forKey: .severity)
        try c.encode(running, forKey: .running)
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
        try c.encode(pausedUntil, forKey: .pausedUntil)
        try c.encode(heldSince, forKey: .heldSince)
        try c.encode(blockedUntil, forKey: .blockedUntil)
        try c.encode(lastSuccess, forKey: .lastSuccess)
        try c.encode(lastError, forKey: .lastError)
        try c.encode(storageError, forKey: .storageError)
        try c.encode(socket, forKey: .socket)
        try c.encode(listen, forKey: .listen)
        try c.encode(email, forKey: .email)
        try c.encode(database, forKey: .database)
        try c.encode(version, forKey: .version)
        try c.encode(uptimeSeconds, forKey: .uptimeSeconds)
        try c.encode(hint, forKey: .hint)
        try c.encode(checkedAt, forKey: .checkedAt)
    }

    public static func encoder() -> JSONEncoder {
        let encoder = JSONEncoder()
        encoder.dateEncodingStrategy = .iso8601
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return encoder
    }

    public static func decoder() -> JSONDecoder {
        let decoder = JSONDecoder()
        decoder.dateDecodingStrategy = .iso8601
        return decoder
    }

    public func json(pretty: Bool = false) -> String {
        let encoder = Self.encoder()
        if pretty { encoder.outputFormatting.insert(.prettyPrinted) }
        return (try? encoder.encode(self)).map { String(decoding: $0, as: UTF8.self) } ?? "{}"
    }
}
