import Foundation

/// `plunk.max_rate`: at most `rate` requests per second on average, `burst` at once, so
/// a fleet of hosts can share one project's budget without each of them meeting its 429s.
struct TokenBucket: Equatable {
    let rate: Double
    let burst: Double
    private var tokens: Double
    private var updatedAt: Date?

    init(rate: Double, burst: Double) {
        self.rate = rate
        self.burst = max(1, burst)
        tokens = self.burst
    }

    func available(now: Date) -> Double {
        guard let updatedAt else { return tokens }
        // A clock stepped back refills nothing, and takes nothing away.
        return min(burst, tokens + max(0, now.timeIntervalSince(updatedAt)) * rate)
    }

    func allows(now: Date) -> Bool { available(now: now) >= 1 }

    /// When the next request may leave.
    func nextAllowed(now: Date) -> Date {
        let missing = 1 - available(now: now)
        return missing <= 0 ? now : now.addingTimeInterval(missing / rate)
    }

    mutating func take(now: Date) {
        tokens = available(now: now) - 1
        updatedAt = now
    }
}
