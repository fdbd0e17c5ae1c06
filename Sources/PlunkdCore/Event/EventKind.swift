/// What a stored event is for Plunk: a track event (`/v1/track`, the public key) or a
/// transactional email (`/v1/send`, the secret key). Each kind has its own store, its
/// own sender and its own pause, hold and rate limit: a line of its own, so a paused or
/// slow email line never holds up track events, nor the reverse.
public enum EventKind: String, Sendable, CaseIterable, Codable {
    case track
    case email

    /// The path under `plunk.base_url` it is posted to.
    public var plunkPath: String {
        switch self {
        case .track: "/track"
        case .email: "/send"
        }
    }

    /// What one of it is called in logs and status.
    public var noun: String {
        switch self {
        case .track: "event"
        case .email: "email"
        }
    }

    /// Prefix of its metrics' names: track's keep the names they always had.
    public var metricPrefix: String {
        switch self {
        case .track: "plunkd_"
        case .email: "plunkd_email_"
        }
    }
}
