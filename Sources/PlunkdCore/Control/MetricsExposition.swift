import CoreMetrics
import Foundation
import Prometheus

/// `GET /metrics`: the counters that ingest and delivery keep, plus gauges read at
/// scrape time from the sender and the store, in Prometheus text format.
public final class MetricsExposition: Sendable {
    public let registry: PrometheusCollectorRegistry
    public let factory: PrometheusMetricsFactory
    private let pending: CoreMetrics.Gauge
    private let inFlight: CoreMetrics.Gauge
    private let concurrencyLimit: CoreMetrics.Gauge
    private let rateLimitRemaining: CoreMetrics.Gauge
    private let oldestAge: CoreMetrics.Gauge
    private let storeBytes: CoreMetrics.Gauge
    private let parked: [ParkReason: CoreMetrics.Gauge]
    /// One gauge per state of a running daemon, 1 for the current one.
    private let state: [ReportedState: CoreMetrics.Gauge]

    public init() {
        registry = PrometheusCollectorRegistry()
        var factory = PrometheusMetricsFactory(registry: registry)
        factory.defaultDurationHistogramBuckets = [
            .milliseconds(10), .milliseconds(25), .milliseconds(50), .milliseconds(100), .milliseconds(250),
            .milliseconds(500), .seconds(1), .milliseconds(2500), .seconds(5), .seconds(10), .seconds(30),
        ]
        self.factory = factory
        pending = CoreMetrics.Gauge(label: "plunkd_pending_events", factory: factory)
        inFlight = CoreMetrics.Gauge(label: "plunkd_in_flight_requests", factory: factory)
        concurrencyLimit = CoreMetrics.Gauge(label: "plunkd_concurrency_limit", factory: factory)
        rateLimitRemaining = CoreMetrics.Gauge(label: "plunkd_rate_limit_remaining", factory: factory)
        oldestAge = CoreMetrics.Gauge(label: "plunkd_oldest_pending_age_seconds", factory: factory)
        storeBytes = CoreMetrics.Gauge(label: "plunkd_store_bytes", factory: factory)
        parked = Dictionary(
            uniqueKeysWithValues: ParkReason.allCases.map {
                ($0, CoreMetrics.Gauge(label: "plunkd_parked_events", dimensions: [("reason", $0.rawValue)], factory: factory))
            })
        state = Dictionary(
            uniqueKeysWithValues: ReportedState.whileRunning.map {
                ($0, CoreMetrics.Gauge(label: "plunkd_delivery_state", dimensions: [("state", $0.rawValue)], factory: factory))
            })
    }

    /// Sets the gauges from `report`, then renders everything.
    public func render(_ report: StatusReport) -> String {
        pending.record(report.pending ?? 0)
        inFlight.record(report.inFlight ?? 0)
        concurrencyLimit.record(report.concurrencyLimit ?? 0)
        rateLimitRemaining.record(report.rateLimitRemaining ?? -1)
        oldestAge.record(report.oldestPendingAgeSeconds ?? 0)
        storeBytes.record(report.database.sizeBytes ?? 0)
        for (reason, gauge) in parked { gauge.record(report.parked[reason.rawValue] ?? 0) }
        for (name, gauge) in state { gauge.record(name == report.state ? 1 : 0) }
        return MetricHelp.annotate(registry.emitToString())
    }
}
