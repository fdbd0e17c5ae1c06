import Foundation
import NIOCore
import PlunkdTestSupport
import Synchronization

/// A partial outage as a user sees it (issue 36): events arrive through the socket from
/// 16 producers while Plunk answers 30 % of requests 500 at once and the rest 200 after
/// 20 ms, and the time runs from the first event written to the last one Plunk accepted.
/// The same run against a healthy Plunk (every answer 200 after 20 ms) gives the ratio.
/// plunkd runs on its defaults (`plunk.concurrency: auto`, backoff from 1 s).
enum PartialOutage {
    struct Run {
        let events: Int
        let seconds: Double
        let requests: Int
        var rate: Double { Double(events) / seconds }
    }

    static let accepted = #"{"success":true,"contact":"c","event":"e","timestamp":"2026-12-06T00:00:00Z"}"#

    static func run(events: Int, failing percent: UInt64) async throws -> Run {
        let delivered = Atomic(0)
        let stand = try await FakePlunk(keepsRequests: false) { request in
            // A hash of the request's number: every run fails the same requests.
            if ((UInt64(request.index) &* 0x9E37_79B9_7F4A_7C15) >> 32) % 100 < percent { return FakePlunk.htmlPage(500) }
            return .answer(status: 200, body: accepted, delay: .milliseconds(20), whenSent: { delivered.add(1, ordering: .relaxed) })
        }
        defer { Task { await stand.stop() } }
        let daemon = try DaemonProcess(environment: [
            "PLUNK_BASE_URL": stand.baseURL.absoluteString, "PLUNK_API_KEY": "pk_bench_key", "PLUNKD_LOG_LEVEL": "warning",
        ])
        defer { daemon.cleanUp() }
        try daemon.waitUntilServing(timeout: 60)
        let start = BenchmarkSupport.now()
        SyslogNGComparison.produce(socketPath: daemon.socketPath, events: events, readsAcks: true)
        while delivered.load(ordering: .relaxed) < events && BenchmarkSupport.now() - start < 600 { usleep(2_000) }
        return Run(events: delivered.load(ordering: .relaxed), seconds: BenchmarkSupport.now() - start, requests: stand.requestCount)
    }

    static func compare(events: Int, rounds: Int) async throws {
        var ratios: [Double] = []
        var healthyRates: [Double] = []
        var flakyRates: [Double] = []
        for _ in 0..<rounds {
            let healthy = try await run(events: events, failing: 0)
            let flaky = try await run(events: events, failing: 30)
            healthyRates.append(healthy.rate)
            flakyRates.append(flaky.rate)
            ratios.append(flaky.rate / healthy.rate)
            BenchmarkSupport.show(
                "partial outage through the socket, \(events) events",
                String(
                    format: "healthy %5.0f/s (%.1f s); 30 %% answered 500 %5.0f/s (%.1f s, %d requests): %.2f× the healthy rate",
                    healthy.rate, healthy.seconds, flaky.rate, flaky.seconds, flaky.requests, flaky.rate / healthy.rate))
        }
        let median = { (values: [Double]) in values.sorted()[values.count / 2] }
        BenchmarkSupport.show(
            "partial outage, medians of \(rounds)",
            String(format: "healthy %5.0f/s, 30 %% failing %5.0f/s: %.2f×", median(healthyRates), median(flakyRates), median(ratios)))
    }
}
