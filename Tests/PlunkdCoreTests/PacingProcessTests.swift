import Foundation
import PlunkdTestSupport
import Testing

@testable import PlunkdCore

/// Pacing through the real `plunkd` binary: against a stand-in whose project is
/// rate-limited, and under `plunk.max_rate`.
@Suite("Pacing by the plunkd process", .serialized, .timeLimit(.minutes(3)), .watchdog)
struct PacingProcessTests {
    /// Submits `count` events over one connection and returns once every one is acknowledged.
    static func submit(_ count: Int, to daemon: DaemonProcess) throws {
        let client = try BlockingUnixSocket(path: daemon.socketPath)
        try client.write((0..<count).map { #"{"event":"paced","email":"user\#($0 % 50)@example.com"}"# + "\n" }.joined())
        for _ in 0..<count {
            let line = try #require(try client.readLine())
            #expect(line.contains(#""ok":true"#), "\(line)")
        }
    }

    @Test(
        "a rate-limited Plunk (40/s, burst 20) behind 16 requests in flight: all 300 events delivered, at most 1 % of requests answered 429, and status shows the bucket"
    )
    func rateLimitedPlunk() async throws {
        let limiter = RateLimitedPlunk(rate: 40, burst: 20)
        let fake = try await FakePlunk(keepsRequests: false) { _ in limiter.answer(delay: .milliseconds(5)) }
        let daemon = try DaemonProcess(environment: TLSDeliveryTests.environment(fake, ["PLUNK_CONCURRENCY": "16"]))
        defer { daemon.cleanUp() }
        try daemon.waitUntilServing()
        try Self.submit(300, to: daemon)
        #expect(await Poll.until(timeout: 60, every: .milliseconds(50)) { limiter.accepted >= 100 })
        let status = try TLSDeliveryTests.statusJSON(daemon)
        #expect(status.json["rate_limit_remaining"] is Int, "\(status.text)")
        #expect((status.json["rate_limit_refill_per_second"] as? Double).map { $0 > 20 && $0 < 60 } == true, "\(status.text)")
        let text = try DaemonProcess.command(["status", "--socket", daemon.socketPath]).stdout
        #expect(text.contains("Pacing:") && text.contains("Plunk's rate limit has"), "\(text)")
        let scrape = try BlockingUnixSocket(path: daemon.socketPath)
        try scrape.write("GET /metrics HTTP/1.1\r\nHost: plunkd\r\n\r\n")
        let metrics = try #require(try scrape.readHTTPResponse())
        let gauge = metrics.body.split(separator: "\n").first { $0.hasPrefix("plunkd_rate_limit_remaining ") }
        #expect(gauge.flatMap { Double($0.split(separator: " ").last ?? "") }.map { $0 >= 0 } == true, "\(gauge ?? "no gauge")")
        let delivered = await Poll.until(timeout: 90, every: .milliseconds(100)) { limiter.accepted >= 300 }
        #expect(delivered, "accepted \(limiter.accepted), refused \(limiter.refused)")
        #expect(Double(limiter.refused) <= 0.01 * Double(limiter.accepted + limiter.refused), "accepted \(limiter.accepted), refused \(limiter.refused)")
        await fake.stop()
    }

    @Test("PLUNK_MAX_RATE=20 with a burst of 5: in no second do more than 25 requests arrive, against a Plunk that would take them all")
    func maxRate() async throws {
        let fake = try await FakePlunk { _ in FakePlunk.v2Success() }
        let daemon = try DaemonProcess(
            environment: TLSDeliveryTests.environment(fake, ["PLUNK_CONCURRENCY": "16", "PLUNK_MAX_RATE": "20", "PLUNK_MAX_RATE_BURST": "5"]))
        defer { daemon.cleanUp() }
        try daemon.waitUntilServing()
        try Self.submit(60, to: daemon)
        #expect(await fake.waitFor(timeout: 60) { $0.count >= 60 })
        let arrivals = fake.requests.map(\.at).sorted()
        for (index, first) in arrivals.enumerated() {
            let within = arrivals[index...].prefix { $0.timeIntervalSince(first) < 1 }.count
            // 5 at once plus 20 refilled in that second, and one for timer slack.
            #expect(within <= 26, "\(within) requests in the second from \(index)")
        }
        let status = try TLSDeliveryTests.statusJSON(daemon)
        #expect(status.json["max_rate"] as? Double == 20, "\(status.text)")
        let text = try DaemonProcess.command(["status", "--socket", daemon.socketPath]).stdout
        #expect(text.contains("Pacing:") && text.contains("plunk.max_rate 20/s"), "\(text)")
        await fake.stop()
    }
}
