import Foundation
import NIOCore
import PlunkdTestSupport
import Testing

@testable import PlunkdCore

/// `plunk.http_version` through the binary, against a local TLS Plunk (a test CA) that
/// offers `h2` in ALPN, or only HTTP/1.1.
@Suite("HTTP/2 to Plunk", .serialized, .timeLimit(.minutes(3)), .watchdog)
struct HTTP2DeliveryTests {
    /// Answers after 30 ms, so that 16 requests are in flight together.
    static func slowSuccess(_ request: FakePlunk.Request) -> FakePlunk.Reply {
        .answer(
            status: 200, body: #"{"success":true,"data":{"contact":"c","event":"e","timestamp":"2026-12-03T00:00:00.000Z"}}"#,
            delay: .milliseconds(30))
    }

    static func deliver(
        _ count: Int, to fake: FakePlunk, certificates: TestCertificates, _ extra: [String: String] = [:]
    ) async throws -> [FakePlunk.Request] {
        var environment = ["PLUNK_CA_FILE": certificates.caFile, "PLUNK_CONCURRENCY": "16"]
        environment.merge(extra) { _, new in new }
        let daemon = try DaemonProcess(environment: TLSDeliveryTests.environment(fake, environment))
        defer { daemon.cleanUp() }
        try daemon.waitUntilServing()
        let client = try BlockingUnixSocket(path: daemon.socketPath)
        try client.write((0..<count).map { #"{"event":"h2","email":"user\#($0 % 50)@example.com","data":{"n":\#($0)}}"# + "\n" }.joined())
        for _ in 0..<count { #expect(try client.readLine()?.contains(#""ok":true"#) == true) }
        #expect(await fake.waitFor(timeout: 60) { $0.count >= count }, "\(fake.requests.count) of \(count) arrived")
        #expect(try await DaemonDeliveryTests().waitForStoredCount(daemon.storagePath, 0))
        return fake.requests
    }

    @Test("auto against a Plunk that offers h2: every request is an HTTP/2 stream, 16 in flight share one connection, all delivered in order")
    func http2WhenOffered() async throws {
        let certificates = try TestCertificates()
        defer { certificates.remove() }
        let fake = try await FakePlunk(tls: try certificates.serverTLS(.trusted), offersHTTP2: true, responder: Self.slowSuccess)
        let requests = try await Self.deliver(200, to: fake, certificates: certificates)
        #expect(Set(requests.map(\.httpVersion)) == ["HTTP/2.0"])
        #expect(fake.maxInFlight >= 8, "at most \(fake.maxInFlight) in flight")
        #expect(fake.connectionCount == 1, "\(fake.connectionCount) connections")
        // Order per contact holds over streams as it does over connections.
        var last: [String: Int] = [:]
        for request in requests {
            let body = try #require(try JSONSerialization.jsonObject(with: request.body) as? [String: Any])
            let email = try #require(body["email"] as? String)
            let n = try #require((body["data"] as? [String: Any])?["n"] as? Int)
            #expect(n > last[email, default: -1], "\(email): \(n) after \(last[email, default: -1])")
            #expect(request.headers["authorization"] == "Bearer pk_tls_test_secret")
            #expect(request.idempotencyKey != nil)
            last[email] = n
        }
        #expect(last.count == 50)
        await fake.stop()
    }

    @Test("a Plunk that sends GOAWAY and keeps the connection open: later requests go out on a new connection, every event delivered")
    func goAwayOpensAnotherConnection() async throws {
        let certificates = try TestCertificates()
        defer { certificates.remove() }
        let fake = try await FakePlunk(tls: try certificates.serverTLS(.trusted), offersHTTP2: true, responder: Self.slowSuccess)
        fake.sendGoAway(afterRequests: 20)
        let requests = try await Self.deliver(100, to: fake, certificates: certificates)
        #expect(Set(requests.map(\.httpVersion)) == ["HTTP/2.0"])
        #expect(fake.connectionCount >= 2, "\(fake.connectionCount) connections")
        await fake.stop()
    }

    @Test("plunk.http_version http1 against the same Plunk: HTTP/1.1 only, one connection per request in flight")
    func http1WhenPinned() async throws {
        let certificates = try TestCertificates()
        defer { certificates.remove() }
        let fake = try await FakePlunk(tls: try certificates.serverTLS(.trusted), offersHTTP2: true, responder: Self.slowSuccess)
        let requests = try await Self.deliver(200, to: fake, certificates: certificates, ["PLUNK_HTTP_VERSION": "http1"])
        #expect(Set(requests.map(\.httpVersion)) == ["HTTP/1.1"])
        #expect(fake.connectionCount > 1, "\(fake.connectionCount) connections")
        await fake.stop()
    }

    @Test("auto against a Plunk that offers only HTTP/1.1 over TLS: it falls back and delivers")
    func http1WhenNotOffered() async throws {
        let certificates = try TestCertificates()
        defer { certificates.remove() }
        let fake = try await FakePlunk(tls: try certificates.serverTLS(.trusted), responder: Self.slowSuccess)
        let requests = try await Self.deliver(50, to: fake, certificates: certificates)
        #expect(Set(requests.map(\.httpVersion)) == ["HTTP/1.1"])
        await fake.stop()
    }

    @Test("over HTTP/2, Plunk's answers mean what they do over HTTP/1.1: a 429's Retry-After, RateLimit headers, a 401 parks")
    func answersOverHTTP2() async throws {
        let certificates = try TestCertificates()
        defer { certificates.remove() }
        let fake = try await FakePlunk(tls: try certificates.serverTLS(.trusted), offersHTTP2: true) { request in
            if request.email == "refused@example.com" { return FakePlunk.v2Error(401, "UNAUTHORIZED", "Invalid API key") }
            if request.index == 0 {
                return FakePlunk.v2Error(429, "RATE_LIMIT_EXCEEDED", "Too many requests", headers: [("Retry-After", "1")])
            }
            return .answer(
                status: 200, body: #"{"success":true,"data":{"contact":"c","event":"e","timestamp":"2026-12-03T00:00:00.000Z"}}"#,
                headers: [("RateLimit-Limit", "100"), ("RateLimit-Remaining", "77"), ("RateLimit-Reset", "1")])
        }
        // retry.max_backoff caps Retry-After: above it here, so the 1 s is honoured.
        let daemon = try DaemonProcess(
            environment: TLSDeliveryTests.environment(fake, ["PLUNK_CA_FILE": certificates.caFile, "PLUNKD_RETRY_MAX_BACKOFF": "5"]))
        defer { daemon.cleanUp() }
        try daemon.waitUntilServing()
        try PacingProcessTests.submit(1, to: daemon)
        #expect(await fake.waitFor(timeout: 30) { $0.count >= 2 })
        let requests = fake.requests
        #expect(requests.map(\.httpVersion).allSatisfy { $0 == "HTTP/2.0" })
        // The retry waited out Retry-After (1 s), with room for a slow machine below it.
        #expect(requests[1].at.timeIntervalSince(requests[0].at) >= 0.9)
        #expect(requests[1].idempotencyKey == requests[0].idempotencyKey)
        let remaining = await Poll.until(timeout: 10) {
            (try? TLSDeliveryTests.statusJSON(daemon).json["rate_limit_remaining"] as? Int) != nil
        }
        #expect(remaining, "rate_limit_remaining never appeared in status")

        let client = try BlockingUnixSocket(path: daemon.socketPath)
        try client.write(#"{"event":"e","email":"refused@example.com"}"# + "\n")
        #expect(try client.readLine()?.contains(#""ok":true"#) == true)
        let parked = await Poll.until(timeout: 30) {
            ((try? TLSDeliveryTests.statusJSON(daemon).json["parked"] as? [String: Int])?.values.reduce(0, +) ?? 0) == 1
        }
        #expect(parked, "the 401 over HTTP/2 did not park the event")
        #expect(try TLSDeliveryTests.statusJSON(daemon).json["state"] as? String == "auth_held")
        await fake.stop()
    }
}
