import Foundation

/// What a v2 Plunk that limits its project's rate says about the bucket in every answer:
/// `RateLimit-Limit`, `RateLimit-Remaining` and `RateLimit-Reset` (also read under their
/// older `X-RateLimit-` names). Only `Remaining` is relied on: the meaning of `Limit`
/// (the burst, or the rate per window) and of `Reset` (until one token, or until full)
/// differs between limiters. Self-hosted Plunk's sends the burst and the seconds until
/// full; the hosted service promises no headers at all (a 429 with `Retry-After` alone,
/// which pacing handles without them). Measuring the refill from `Remaining` serves both.
public struct RateLimitHeaders: Sendable, Equatable {
    /// Requests the bucket would take now, after this one.
    public var remaining: Int
    public var limit: Int?
    /// Seconds until the limiter says the bucket is refilled.
    public var reset: Double?

    public init(remaining: Int, limit: Int? = nil, reset: Double? = nil) {
        self.remaining = remaining
        self.limit = limit
        self.reset = reset
    }

    /// Reads the headers by name (`value(name)` looks one up, any case); nil without a
    /// readable `Remaining`.
    public static func read(_ value: (String) -> String?) -> RateLimitHeaders? {
        // Literal names: this runs on every answer, most of which carry none of the headers.
        func field(_ name: String, _ older: String) -> String? {
            (value(name) ?? value(older))?.trimmingCharacters(in: .whitespaces)
        }
        guard let remaining = field("RateLimit-Remaining", "X-RateLimit-Remaining").flatMap(Self.count) else { return nil }
        // A delta in seconds; a larger number is an epoch time (GitHub's style), not read.
        let reset = field("RateLimit-Reset", "X-RateLimit-Reset").flatMap(Double.init).flatMap { $0.isFinite && $0 >= 0 && $0 < 86_400 ? $0 : nil }
        return RateLimitHeaders(remaining: remaining, limit: field("RateLimit-Limit", "X-RateLimit-Limit").flatMap(Self.count), reset: reset)
    }

    /// A count, or the first number of a list (`100, 100;w=1`); nil for anything else.
    private static func count(_ text: String) -> Int? {
        let first = text.prefix { $0 != "," && $0 != ";" }.trimmingCharacters(in: .whitespaces)
        guard let n = Int(first), n >= 0 else { return nil }
        return n
    }
}
