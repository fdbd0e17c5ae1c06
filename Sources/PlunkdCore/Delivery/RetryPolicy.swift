import Foundation

/// Backoff with full jitter: after the n-th consecutive failure, wait a uniformly random
/// time between 0 and min(max, initial × 2^(n-1)). Jitter spreads a crowd of retries
/// out instead of sending them back together (the retry storm).
public struct RetryPolicy: Sendable {
    public let initialBackoff: Double
    public let maxBackoff: Double
    public let maxAge: Double

    public init(initialBackoff: Double, maxBackoff: Double, maxAge: Double) {
        self.initialBackoff = initialBackoff
        self.maxBackoff = maxBackoff
        self.maxAge = maxAge
    }

    /// The upper bound of the wait after `failures` consecutive failures (1 or more).
    public func ceiling(afterFailures failures: Int) -> Double {
        let exponent = Double(max(0, min(failures - 1, 62)))
        return min(maxBackoff, initialBackoff * pow(2, exponent))
    }

    /// A wait after `failures` consecutive failures; `unit` draws from [0, 1).
    public func delay(afterFailures failures: Int, unit: () -> Double) -> Double {
        ceiling(afterFailures: failures) * min(max(unit(), 0), 1)
    }
}

/// The monthly quota window is the calendar month in UTC: a 402 means nothing more is
/// accepted until 00:00 UTC on the first day of the next month.
public enum MonthBoundary {
    public static func startOfNextMonth(after date: Date) -> Date {
        var calendar = Calendar(identifier: .gregorian)
        calendar.timeZone = TimeZone(identifier: "UTC")!
        let parts = calendar.dateComponents([.year, .month], from: date)
        var next = DateComponents()
        next.year = parts.month == 12 ? parts.year! + 1 : parts.year!
        next.month = parts.month == 12 ? 1 : parts.month! + 1
        next.day = 1
        return calendar.date(from: next)!
    }
}
