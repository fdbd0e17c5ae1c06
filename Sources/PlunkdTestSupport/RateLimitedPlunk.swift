import Foundation
import NIOConcurrencyHelpers
import NIOCore

/// A stand-in for a v2 Plunk whose project is rate-limited: a token bucket of `rate` per
/// second holding `burst`, checked as each request arrives. A request it takes is
/// answered 200; one it refuses is answered 429 `RATE_LIMIT_EXCEEDED` with `Retry-After`
/// in whole seconds, at least 1. Both carry `RateLimit-Limit` (the burst),
/// `RateLimit-Remaining` and `RateLimit-Reset` (seconds until full), as
/// `shared/plunk-api.md` describes.
public final class RateLimitedPlunk: Sendable {
    private struct Bucket {
        var tokens: Double
        var updatedAt: Date
        var accepted = 0
        var refused = 0
        var acceptedAt: [Date] = []
    }

    public let rate: Double
    public let burst: Double
    private let bucket: NIOLockedValueBox<Bucket>

    public init(rate: Double, burst: Double) {
        self.rate = rate
        self.burst = burst
        bucket = NIOLockedValueBox(Bucket(tokens: burst, updatedAt: Date()))
    }

    public var accepted: Int { bucket.withLockedValue { $0.accepted } }
    public var refused: Int { bucket.withLockedValue { $0.refused } }
    /// When each accepted request arrived.
    public var acceptedAt: [Date] { bucket.withLockedValue { $0.acceptedAt } }

    /// The answer to one request arriving now; `delay` before it is written.
    public func answer(delay: TimeAmount = .zero) -> FakePlunk.Reply {
        let now = Date()
        let (took, tokens) = bucket.withLockedValue { bucket in
            bucket.tokens = min(burst, bucket.tokens + max(0, now.timeIntervalSince(bucket.updatedAt)) * rate)
            bucket.updatedAt = now
            let took = bucket.tokens >= 1
            if took {
                bucket.tokens -= 1
                bucket.accepted += 1
                bucket.acceptedAt.append(now)
            } else {
                bucket.refused += 1
            }
            return (took, bucket.tokens)
        }
        let headers = [
            ("RateLimit-Limit", "\(Int(burst))"), ("RateLimit-Remaining", "\(Int(tokens))"),
            ("RateLimit-Reset", "\(Int(((burst - tokens) / rate).rounded(.up)))"),
        ]
        if took {
            return .answer(
                status: 200, body: #"{"success":true,"data":{"contact":"c","event":"e","timestamp":"2026-12-03T00:00:00Z"}}"#,
                headers: headers, delay: delay)
        }
        let retryAfter = max(1, Int(((1 - tokens) / rate).rounded(.up)))
        return FakePlunk.v2Error(
            429, "RATE_LIMIT_EXCEEDED", "Too many requests", headers: headers + [("Retry-After", "\(retryAfter)")])
    }
}
