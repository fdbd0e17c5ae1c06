import Foundation
import PropertyBased
import Testing

@testable import PlunkdCore

/// Properties over many generated inputs (shrunk to a small example on failure): the
/// backoff bounds and the next-month arithmetic behind the 402 pause.
@Suite("Properties", .timeLimit(.minutes(2)), .watchdog)
struct PropertyTests {
    static var utc: Calendar {
        var calendar = Calendar(identifier: .gregorian)
        calendar.timeZone = TimeZone(identifier: "UTC")!
        return calendar
    }

    @Test("backoff: every wait lies in [0, ceiling]; the ceiling starts at the initial backoff, at most doubles, never shrinks, never passes the maximum")
    func backoffBounds() async {
        await propertyCheck(
            count: 500,
            input: Gen.double(in: 0.001...30), Gen.double(in: 0...3600), Gen.int(in: 1...400), Gen.double(in: 0..<1)
        ) { initial, extra, failures, unit in
            let policy = RetryPolicy(initialBackoff: initial, maxBackoff: initial + extra, maxAge: 86_400)
            let ceiling = policy.ceiling(afterFailures: failures)
            let delay = policy.delay(afterFailures: failures, unit: { unit })
            #expect(delay >= 0 && delay <= ceiling)
            #expect(ceiling <= policy.maxBackoff)
            #expect(ceiling >= min(policy.maxBackoff, initial) * (1 - 1e-12))
            #expect(policy.ceiling(afterFailures: 1) == initial)
            let next = policy.ceiling(afterFailures: failures + 1)
            #expect(next >= ceiling)
            #expect(next <= ceiling * 2 * (1 + 1e-12))
        }
    }

    @Test("a 402 pause ends at the first instant of the next UTC month: after the date, at midnight on the 1st, exactly one month boundary away")
    func nextMonth() async {
        await propertyCheck(count: 1000, input: Gen.dateTime(inYear: 1971...2399)) { date in
            let next = MonthBoundary.startOfNextMonth(after: date)
            let calendar = Self.utc
            let parts = calendar.dateComponents([.year, .month, .day, .hour, .minute, .second, .nanosecond], from: next)
            #expect(next > date)
            #expect(parts.day == 1 && parts.hour == 0 && parts.minute == 0 && parts.second == 0 && parts.nanosecond == 0)
            let from = calendar.dateComponents([.year, .month], from: date)
            #expect(parts.year! * 12 + parts.month! == from.year! * 12 + from.month! + 1)
            // Never more than a 31-day month away, and a day before it is still the same month as the date.
            #expect(next.timeIntervalSince(date) <= 31 * 86_400)
            let dayBefore = calendar.dateComponents([.year, .month], from: next.addingTimeInterval(-1))
            #expect(dayBefore.year == from.year && dayBefore.month == from.month)
        }
    }
}
