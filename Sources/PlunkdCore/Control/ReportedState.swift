/// The one state `plunkd status` reports: the sender's, or what overrides it (the store
/// failing, no daemon). Its raw values are the stable strings of `--json`, of the
/// metrics' `state` label and of scripts that read them; each state's severity and
/// systemd status line are written here once.
public enum ReportedState: String, Sendable, Codable, CaseIterable {
    case delivering
    case idle
    case backingOff = "backing_off"
    case rateLimited = "rate_limited"
    case quotaPaused = "quota_paused"
    case authHeld = "auth_held"
    case noAPIKey = "no_api_key"
    case storageError = "storage_error"
    case notRunning = "not_running"
    case unknown

    public init(_ delivery: DeliveryState) {
        switch delivery {
        case .delivering: self = .delivering
        case .idle: self = .idle
        case .backingOff: self = .backingOff
        case .rateLimited: self = .rateLimited
        case .quotaPaused: self = .quotaPaused
        case .authHeld: self = .authHeld
        case .noAPIKey: self = .noAPIKey
        }
    }

    /// A state this build does not know (from a newer daemon) reads as `unknown`.
    public init(from decoder: any Decoder) throws {
        self = Self(rawValue: try decoder.singleValueContainer().decode(String.self)) ?? .unknown
    }

    /// The states of a running daemon: one `plunkd_delivery_state` gauge each.
    public static var whileRunning: [ReportedState] { allCases.filter { $0 != .notRunning && $0 != .unknown } }

    /// The severity before anything else is weighed (old or parked events can raise an ok).
    public var severity: StatusReport.Severity {
        switch self {
        case .storageError, .quotaPaused, .authHeld, .noAPIKey, .notRunning: .critical
        case .rateLimited, .backingOff: .warning
        case .delivering, .idle: .ok
        case .unknown: .unknown
        }
    }

    /// systemd's `STATUS=` line (`systemctl status plunkd`).
    public var systemdStatus: String {
        switch self {
        case .delivering: "delivering"
        case .idle: "idle: everything stored has been handed to Plunk or waits for its retry"
        case .backingOff: "backing off: Plunk is failing; retrying with backoff (plunkd status)"
        case .rateLimited: "rate limited by Plunk (429); waiting"
        case .quotaPaused: "paused: Plunk's monthly quota is spent; after a plan upgrade run plunkd resume"
        case .authHeld: "held: Plunk refused the API key; fix the key, then systemctl reload plunkd"
        case .noAPIKey: "no API key configured: events are kept, nothing is sent"
        case .storageError: "storage error: the store cannot be read or written (plunkd status)"
        case .notRunning: "not running"
        case .unknown: "unknown"
        }
    }
}
