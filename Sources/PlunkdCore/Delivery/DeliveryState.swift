import Foundation

/// What the sender is doing, in the words `plunkd status` uses.
public enum DeliveryState: String, Sendable, Equatable {
    case delivering
    case idle
    case backingOff = "backing_off"
    case rateLimited = "rate_limited"
    case quotaPaused = "quota_paused"
    case authHeld = "auth_held"
    case noAPIKey = "no_api_key"
}

/// A point-in-time view of the sender, for status and metrics.
public struct SenderSnapshot: Sendable {
    public var state: DeliveryState
    public var inFlight: Int
    public var pausedUntil: Date?
    public var heldSince: Date?
    public var blockedUntil: Date?
    public var consecutiveFailures: Int
    public var lastSuccess: Date?
    public var lastError: String?
    public var lastErrorStatus: Int?
    public var lastErrorAt: Date?
    public var deliveredLastHour: Int
    /// The store refused the sender's last write; it retries every second.
    public var storageFailing: Bool
    /// Requests allowed in flight while Plunk is healthy (learned, with `auto`).
    public var concurrencyLimit: Int
    /// `plunk.max_rate`, when set.
    public var maxRate: Double? = nil
    /// What Plunk's `RateLimit-Remaining` last said, while recent.
    public var rateLimitRemaining: Int? = nil
    /// The refill rate of Plunk's bucket measured from its answers (requests per second).
    public var rateLimitRefill: Double? = nil
}

extension APIKey {
    /// A stable, non-reversible tag of the key (FNV-1a, 64 bits), stored with an auth hold
    /// so a restart can tell whether the refused key is still the one configured.
    var fingerprint: String {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in value.utf8 {
            hash ^= UInt64(byte)
            hash &*= 0x0000_0100_0000_01B3
        }
        return String(hash, radix: 16)
    }
}
