import CoreMetrics
import Foundation

/// Delivery's counters and the request-duration histogram, through swift-metrics so the
/// daemon can hand in a Prometheus factory and tests a no-op one.
public struct DeliveryMetrics: Sendable {
    let factory: any MetricsFactory
    let delivered: Counter
    let duplicatesSuppressed: Counter
    /// Events sent again under a derived key after v2 kept their key burned.
    let rekeyed: Counter
    /// Parked events `storage.parked_max_age` deleted (`ParkedRetention`).
    public let deletedByRetention: Counter
    let requestDuration: CoreMetrics.Timer
    private let parkedByReason: [ParkReason: Counter]
    private let attemptsByOutcome: [String: Counter]

    /// - Parameter kind: whose line: the email line's names start `plunkd_email_`.
    public init(factory: any MetricsFactory = NOOPMetricsHandler.instance, kind: EventKind = .track) {
        self.factory = factory
        let prefix = kind.metricPrefix
        delivered = Counter(label: prefix + OutboxCounter.delivered.name, factory: factory)
        duplicatesSuppressed = Counter(label: prefix + OutboxCounter.duplicatesSuppressed.name, factory: factory)
        rekeyed = Counter(label: prefix + OutboxCounter.rekeyed.name, factory: factory)
        deletedByRetention = Counter(label: prefix + OutboxCounter.deletedByRetention.name, factory: factory)
        requestDuration = CoreMetrics.Timer(label: "\(prefix)request_duration_seconds", factory: factory)
        parkedByReason = Dictionary(
            uniqueKeysWithValues: ParkReason.allCases.map {
                ($0, Counter(label: "\(prefix)parked_total", dimensions: [("reason", $0.rawValue)], factory: factory))
            })
        attemptsByOutcome = Dictionary(
            uniqueKeysWithValues: DeliveryOutcome.labels.map {
                ($0, Counter(label: "\(prefix)attempts_total", dimensions: [("outcome", $0)], factory: factory))
            })
    }

    func parked(_ reason: ParkReason) -> Counter? { parkedByReason[reason] }

    func attempt(_ outcome: String) -> Counter? { attemptsByOutcome[outcome] }

    /// The metric that mirrors one of the store's counters.
    func counter(for counter: OutboxCounter) -> Counter? {
        switch counter {
        case .delivered: delivered
        case .duplicatesSuppressed: duplicatesSuppressed
        case .rekeyed: rekeyed
        case .deletedByRetention: deletedByRetention
        // Counted by the operator's command in the store, never by delivery.
        case .dropped: nil
        case .parked(let reason): parked(reason)
        case .attempts(let outcome): attempt(outcome)
        }
    }
}

/// Events delivered in each of the last 60 minutes, for "delivered in the last hour".
struct RecentDeliveries {
    private var minutes = [Int](repeating: 0, count: 60)
    private var minuteOfSlot = [Int](repeating: -1, count: 60)

    mutating func record(_ count: Int, at date: Date) {
        let minute = Int(date.timeIntervalSince1970 / 60)
        let slot = minute % 60
        if minuteOfSlot[slot] != minute {
            minuteOfSlot[slot] = minute
            minutes[slot] = 0
        }
        minutes[slot] += count
    }

    func lastHour(now: Date) -> Int {
        let current = Int(now.timeIntervalSince1970 / 60)
        return zip(minutes, minuteOfSlot).reduce(0) { total, pair in
            current - pair.1 < 60 && pair.1 <= current ? total + pair.0 : total
        }
    }
}
