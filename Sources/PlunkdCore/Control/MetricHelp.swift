/// `# HELP` lines for every metric, as the Prometheus text format expects. swift-metrics
/// has no place for a help text and swift-prometheus's factory registers every metric
/// with an empty one (so it writes no `# HELP`), so they are added to the rendered text
/// before each metric's `# TYPE` line.
enum MetricHelp {
    static let texts: [String: String] = [
        "plunkd_events_received_total": "Events acknowledged to clients (committed to the outbox).",
        "plunkd_events_refused_total": "Events refused at the door, by reason.",
        "plunkd_events_repeated_total":
            "Events that repeated a client's Idempotency-Key within ingest.idempotency_window, answered with the first event's id and not stored.",
        "plunkd_" + OutboxCounter.delivered.name: "Events Plunk accepted (a 2xx, or a 409 whose first attempt was stored).",
        "plunkd_" + OutboxCounter.duplicatesSuppressed.name: "Events counted as delivered on a 409 IDEMPOTENCY_KEY_REUSED.",
        "plunkd_" + OutboxCounter.rekeyed.name:
            "Events sent again under a derived Idempotency-Key after Plunk kept a failed attempt's key.",
        "plunkd_parked_total": "Events parked since the process started, by reason.",
        "plunkd_attempts_total": "Requests to Plunk, by what their answer meant.",
        "plunkd_request_duration_seconds": "Time from sending a request to Plunk to its answer or failure.",
        "plunkd_pending_events": "Events in line to be delivered (pending and waiting).",
        "plunkd_in_flight_requests": "Requests to Plunk in flight now.",
        "plunkd_rate_limit_remaining": "What Plunk's RateLimit-Remaining header last said; -1 when no answer in the last minute carried it.",
        "plunkd_concurrency_limit": "Requests allowed in flight while Plunk is healthy (learned when plunk.concurrency is auto).",
        "plunkd_oldest_pending_age_seconds": "Age of the oldest event still in line.",
        "plunkd_store_bytes": "Size of the outbox file and its write-ahead log.",
        "plunkd_" + OutboxCounter.deletedByRetention.name:
            "Parked events deleted by storage.parked_max_age since the process started (the store's lifetime count is in plunkd status).",
        "plunkd_parked_events": "Events parked now, by reason (replay with plunkd parked retry).",
        "plunkd_delivery_state": "1 for the delivery state plunkd status reports, 0 for the others.",
    ]

    /// The email line's metrics say what track's say, of emails.
    static func help(for name: String) -> String? {
        if let help = texts[name] { return help }
        let email = EventKind.email.metricPrefix
        guard name.hasPrefix(email), let track = texts[EventKind.track.metricPrefix + name.dropFirst(email.count)] else { return nil }
        return "Transactional emails (/v1/send), their own line: " + track
    }

    static func annotate(_ text: String) -> String {
        var lines: [Substring] = []
        for line in text.split(separator: "\n", omittingEmptySubsequences: false) {
            if line.hasPrefix("# TYPE ") {
                let name = line.dropFirst(7).split(separator: " ").first.map(String.init) ?? ""
                if let help = help(for: name) { lines.append("# HELP \(name) \(help)") }
            }
            if !line.hasPrefix("# HELP ") { lines.append(line) }
        }
        return lines.joined(separator: "\n")
    }
}
