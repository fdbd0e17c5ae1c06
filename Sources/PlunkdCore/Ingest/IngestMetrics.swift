import CoreMetrics

/// Ingest's counters: events stored, and events refused at the door by reason.
public struct IngestMetrics: Sendable {
    let received: Counter
    let refusedInvalid: Counter
    let refusedTooLarge: Counter
    let refusedQueueFull: Counter
    let refusedStorage: Counter
    let refusedShuttingDown: Counter
    let refusedPeer: Counter
    let refusedToken: Counter
    /// Repeats of a client's `Idempotency-Key`, answered with the first event's id.
    let repeated: Counter
    /// Events whose `Idempotency-Key` another line holds (`ClientKeyScope`).
    let refusedKeyElsewhere: Counter

    /// - Parameter kind: the email line's committer counts as `plunkd_email_events_…`.
    public init(factory: any MetricsFactory = NOOPMetricsHandler.instance, kind: EventKind = .track) {
        let prefix = kind.metricPrefix
        received = Counter(label: "\(prefix)events_received_total", factory: factory)
        func refused(_ reason: String) -> Counter {
            Counter(label: "\(prefix)events_refused_total", dimensions: [("reason", reason)], factory: factory)
        }
        refusedInvalid = refused("invalid")
        refusedTooLarge = refused("too_large")
        refusedQueueFull = refused("queue_full")
        refusedStorage = refused("storage")
        refusedShuttingDown = refused("shutting_down")
        refusedPeer = refused("peer_not_allowed")
        refusedToken = refused("token")
        refusedKeyElsewhere = refused("key_used_elsewhere")
        repeated = Counter(label: "\(prefix)events_repeated_total", factory: factory)
    }

    func count(_ refusal: IngestRefusal, events: Int) {
        switch refusal {
        case .queueFull: refusedQueueFull.increment(by: events)
        case .storageFull, .storageFailed: refusedStorage.increment(by: events)
        case .shuttingDown: refusedShuttingDown.increment(by: events)
        }
    }
}
