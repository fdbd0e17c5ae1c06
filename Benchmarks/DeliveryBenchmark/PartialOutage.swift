import Foundation
import NIOCore
import PlunkdTestSupport
import Synchronization

/// A partial outage as a user sees it (issue 36): events arrive through the socket from
/// 16 producers while Plunk answers 30 % of requests 500 at once and the rest 200 after
/// 20 ms, and the time runs from the first event written until Plunk accepted 99 % of them.
/// The same run against a healthy Plunk (every answer 200 after 20 ms) gives the ratio.
/// plunkd runs on its defaults (`plunk.concurrency: auto`, backoff from 1 s).
enum PartialOutage {
    struct Run {
        let events: Int
        /// Seconds from the first event written until 99 % of them were accepted.
        let to99: Double
        let requests: Int
        /// The rate a user sees: 99 % of the events over the time they took. The last
        /// 1 % are the unlucky ones a 30 % failure rate fails five times and more, each
        /// waiting out a backoff that doubles up to `retry.max_backoff`: that tail is the
        /// cost of never hammering a failing Plunk, and it would dominate a rate taken
        /// at the very last event.
        var rate: Double { Double(events) * 0.99 / to99 }
    }

    static let accepted = #"{"success":true,"contact":"c","event":"e","timestamp":"2026-12-06T00:00:00Z"}"#

    /// Requests the stand-in accepted.
    final class AcceptedCount: Sendable {
        let count = Atomic(0)
        func load() -> Int { count.load(ordering: .relaxed) }
    }

    /// A stand-in failing `percent` % of requests at once (a hash of the request's number:
    /// every run fails the same ones) and accepting the rest after 20 ms, counting them in
    /// `delivered`, and plunkd on its defaults in front of it.
    static func outage(failing percent: UInt64, delivered: AcceptedCount) async throws -> (FakePlunk, DaemonProcess) {
        let stand = try await FakePlunk(keepsRequests: false) { request in
            if ((UInt64(request.index) &* 0x9E37_79B9_7F4A_7C15) >> 32) % 100 < percent { return FakePlunk.htmlPage(500) }
            return .answer(status: 200, body: accepted, delay: .milliseconds(20), whenSent: { delivered.count.add(1, ordering: .relaxed) })
        }
        let daemon = try DaemonProcess(environment: [
            "PLUNK_BASE_URL": stand.baseURL.absoluteString, "PLUNK_API_KEY": "pk_bench_key", "PLUNKD_LOG_LEVEL": "warning",
        ])
        try daemon.waitUntilServing(timeout: 60)
        return (stand, daemon)
    }

    static func run(events: Int, failing percent: UInt64) async throws -> Run {
        let delivered = AcceptedCount()
        let (stand, daemon) = try await outage(failing: percent, delivered: delivered)
        defer {
            daemon.cleanUp()
            Task { await stand.stop() }
        }
        let start = BenchmarkSupport.now()
        SyslogNGComparison.produce(socketPath: daemon.socketPath, events: events, readsAcks: true)
        while Double(delivered.load()) < Double(events) * 0.99 && BenchmarkSupport.now() - start < 120 { usleep(2_000) }
        return Run(events: events, to99: BenchmarkSupport.now() - start, requests: stand.requestCount)
    }

    /// Events offered at `rate` a second (blocks of a tenth of it every 100 ms, acks read)
    /// for `seconds`: how many Plunk accepted by the end of the window, and 5 s later.
    static func paced(rate: Int, seconds: Int, failing percent: UInt64) async throws -> (inWindow: Int, after5s: Int, offered: Int) {
        let delivered = AcceptedCount()
        let (stand, daemon) = try await outage(failing: percent, delivered: delivered)
        defer {
            daemon.cleanUp()
            Task { await stand.stop() }
        }
        let client = try BlockingUnixSocket(path: daemon.socketPath)
        let block = max(1, rate / 10)
        let start = BenchmarkSupport.now()
        var offered = 0
        for tick in 0..<(seconds * 10) {
            let text = (0..<block).map { n in #"{"event":"paced","email":"user\#((offered + n) % 1000)@example.com"}"# + "\n" }.joined()
            try client.write(text)
            for _ in 0..<block { _ = try client.readLine() }
            offered += block
            let next = start + Double(tick + 1) / 10
            let wait = next - BenchmarkSupport.now()
            if wait > 0 { usleep(UInt32(wait * 1_000_000)) }
        }
        let inWindow = delivered.load()
        usleep(5_000_000)
        return (inWindow, delivered.load(), offered)
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
                    format: "healthy %5.0f/s (99 %% in %.1f s); 30 %% answered 500: %5.0f/s (99 %% in %.1f s, %d requests): %.2f× the healthy rate",
                    healthy.rate, healthy.to99, flaky.rate, flaky.to99, flaky.requests, flaky.rate / healthy.rate))
        }
        var pacedRatios: [Double] = []
        for _ in 0..<rounds {
            let healthy = try await paced(rate: 1000, seconds: 15, failing: 0)
            let flaky = try await paced(rate: 1000, seconds: 15, failing: 30)
            pacedRatios.append(Double(flaky.inWindow) / Double(healthy.inWindow))
            BenchmarkSupport.show(
                "1,000 events/s offered for 15 s",
                String(
                    format: "healthy: %d of %d accepted within the 15 s (%d 5 s later); 30 %% answered 500: %d (%d 5 s later): %.2f× within the window",
                    healthy.inWindow, healthy.offered, healthy.after5s, flaky.inWindow, flaky.after5s, Double(flaky.inWindow) / Double(healthy.inWindow)))
        }
        let median = { (values: [Double]) in values.sorted()[values.count / 2] }
        BenchmarkSupport.show("offered 1,000/s, medians of \(rounds)", String(format: "%.2f× the healthy deliveries within the window", median(pacedRatios)))
        BenchmarkSupport.show(
            "partial outage, medians of \(rounds)",
            String(format: "healthy %5.0f/s, 30 %% failing %5.0f/s: %.2f×", median(healthyRates), median(flakyRates), median(ratios)))
    }
}
