import CoreMetrics
import Foundation
import Prometheus

/// `GET /metrics`: the counters that ingest and delivery keep, plus gauges read at
/// scrape time from the senders and the stores, in Prometheus text format.
public final class MetricsExposition: Sendable {
    public let registry: PrometheusCollectorRegistry
    public let factory: PrometheusMetricsFactory
    private let track: LineGauges
    private let email: LineGauges

    public init() {
        registry = PrometheusCollectorRegistry()
        var factory = PrometheusMetricsFactory(registry: registry)
        factory.defaultDurationHistogramBuckets = [
            .milliseconds(10), .milliseconds(25), .milliseconds(50), .milliseconds(100), .milliseconds(250),
            .milliseconds(500), .seconds(1), .milliseconds(2500), .seconds(5), .seconds(10), .seconds(30),
        ]
        self.factory = factory
        track = LineGauges(prefix: EventKind.track.metricPrefix, factory: factory)
        email = LineGauges(prefix: EventKind.email.metricPrefix, factory: factory)
    }

    /// Sets the gauges from `report` (and its email line), then renders everything.
    public func render(_ report: StatusReport) -> String {
        track.record(
            pending: report.pending, inFlight: report.inFlight, concurrencyLimit: report.concurrencyLimit,
            oldestAge: report.oldestPendingAgeSeconds, storeBytes: report.database.sizeBytes, parked: report.parked,
            state: report.state)
        track.rateLimitRemaining.record(report.rateLimitRemaining ?? -1)
        if let line = report.email {
            email.record(
                pending: line.pending, inFlight: line.inFlight, concurrencyLimit: line.concurrencyLimit,
                oldestAge: line.oldestPendingAgeSeconds, storeBytes: line.database.sizeBytes, parked: line.parked,
                state: line.state)
            email.rateLimitRemaining.record(line.rateLimitRemaining ?? -1)
        } else {
            email.rateLimitRemaining.record(-1)
        }
        return MetricHelp.annotate(registry.emitToString())
    }
}

/// The gauges of one line, named with its prefix (`plunkd_`, `plunkd_email_`).
private struct LineGauges: Sendable {
    let pending: CoreMetrics.Gauge
    let inFlight: CoreMetrics.Gauge
    let concurrencyLimit: CoreMetrics.Gauge
    let rateLimitRemaining: CoreMetrics.Gauge
    let oldestAge: CoreMetrics.Gauge
    let storeBytes: CoreMetrics.Gauge
    let parked: [ParkReason: CoreMetrics.Gauge]
    /// One gauge per state of a running daemon, 1 for the current one.
    let state: [ReportedState: CoreMetrics.Gauge]

    init(prefix: String, factory: PrometheusMetricsFactory) {
        pending = CoreMetrics.Gauge(label: "\(prefix)pending_events", factory: factory)
        inFlight = CoreMetrics.Gauge(label: "\(prefix)in_flight_requests", factory: factory)
        concurrencyLimit = CoreMetrics.Gauge(label: "\(prefix)concurrency_limit", factory: factory)
        rateLimitRemaining = CoreMetrics.Gauge(label: "\(prefix)rate_limit_remaining", factory: factory)
        oldestAge = CoreMetrics.Gauge(label: "\(prefix)oldest_pending_age_seconds", factory: factory)
        storeBytes = CoreMetrics.Gauge(label: "\(prefix)store_bytes", factory: factory)
        parked = Dictionary(
            uniqueKeysWithValues: ParkReason.allCases.map {
                ($0, CoreMetrics.Gauge(label: "\(prefix)parked_events", dimensions: [("reason", $0.rawValue)], factory: factory))
            })
        state = Dictionary(
            uniqueKeysWithValues: ReportedState.whileRunning.map {
                ($0, CoreMetrics.Gauge(label: "\(prefix)delivery_state", dimensions: [("state", $0.rawValue)], factory: factory))
            })
    }

    func record(
        pending: Int?, inFlight: Int?, concurrencyLimit: Int?, oldestAge: Double?, storeBytes: Int64?, parked: [String: Int],
        state: ReportedState
    ) {
        self.pending.record(pending ?? 0)
        self.inFlight.record(inFlight ?? 0)
        self.concurrencyLimit.record(concurrencyLimit ?? 0)
        self.oldestAge.record(oldestAge ?? 0)
        self.storeBytes.record(storeBytes ?? 0)
        for (reason, gauge) in self.parked { gauge.record(parked[reason.rawValue] ?? 0) }
        for (name, gauge) in self.state { gauge.record(name == state ? 1 : 0) }
    }
}
