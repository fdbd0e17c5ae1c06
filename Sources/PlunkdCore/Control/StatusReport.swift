import Foundation

/// What `plunkd status --json` prints and `GET /status` answers. The field names are a
/// stable interface for monitoring scripts: fields may be added, never renamed or removed.
@dynamicMemberLookup
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

    /// Track's line, at the top level of the report (`report.pending` reads `line.pending`).
    public var line: LineStatus
    public var running: Bool
    public var socket: String
    /// The TCP listener's address (`ingest.listen`), nil when it is off.
    public var listen: String? = nil
    /// The transactional-email line (`/v1/send`); null when the daemon is not running.
    public var email: LineStatus? = nil
    public var version: String
    public var uptimeSeconds: Double?
    public var checkedAt: Date

    public subscript<Value>(dynamicMember field: WritableKeyPath<LineStatus, Value>) -> Value {
        get { line[keyPath: field] }
        set { line[keyPath: field] = newValue }
    }

    public init(
        state: ReportedState, reason: String, severity: Severity, running: Bool, parked: [String: Int], socket: String,
        database: Database, version: String, checkedAt: Date
    ) {
        line = LineStatus(state: state, reason: reason, severity: severity, parked: parked, database: database)
        self.running = running
        self.socket = socket
        self.version = version
        self.checkedAt = checkedAt
    }

    enum CodingKeys: String, CodingKey {
        case running, socket, listen, email, version
        case uptimeSeconds = "uptime_seconds"
        case checkedAt = "checked_at"
    }

    public init(from decoder: any Decoder) throws {
        line = try LineStatus(from: decoder)
        let c = try decoder.container(keyedBy: CodingKeys.self)
        running = try c.decode(Bool.self, forKey: .running)
        socket = try c.decode(String.self, forKey: .socket)
        listen = try c.decodeIfPresent(String.self, forKey: .listen)
        email = try c.decodeIfPresent(LineStatus.self, forKey: .email)
        version = try c.decode(String.self, forKey: .version)
        uptimeSeconds = try c.decodeIfPresent(Double.self, forKey: .uptimeSeconds)
        checkedAt = try c.decode(Date.self, forKey: .checkedAt)
    }

    /// Track's line and the daemon's own fields in one object; every optional field is
    /// written, as null when unknown, so a script can rely on the keys.
    public func encode(to encoder: any Encoder) throws {
        try line.encode(to: encoder)
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(running, forKey: .running)
        try c.encode(socket, forKey: .socket)
        try c.encode(listen, forKey: .listen)
        try c.encode(email, forKey: .email)
        try c.encode(version, forKey: .version)
        try c.encode(uptimeSeconds, forKey: .uptimeSeconds)
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
