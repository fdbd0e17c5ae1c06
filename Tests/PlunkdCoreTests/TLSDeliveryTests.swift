import Foundation
import Logging
import NIOPosix
import PlunkdTestSupport
import Testing

@testable import PlunkdCore

#if canImport(Glibc)
    import Glibc
#endif

/// Delivery over real TLS: a local HTTPS Plunk with a certificate from a test CA.
@Suite("TLS to Plunk", .serialized, .timeLimit(.minutes(2)), .watchdog)
struct TLSDeliveryTests {
    static func environment(_ fake: FakePlunk, _ extra: [String: String] = [:]) -> [String: String] {
        var environment = [
            "PLUNK_BASE_URL": fake.baseURL.absoluteString, "PLUNK_API_KEY": "pk_tls_test_secret",
            "PLUNKD_RETRY_INITIAL_BACKOFF": "0.05", "PLUNKD_RETRY_MAX_BACKOFF": "0.5",
        ]
        environment.merge(extra) { _, new in new }
        return environment
    }

    static func statusJSON(_ daemon: DaemonProcess) throws -> (json: [String: Any], text: String) {
        let run = try DaemonProcess.command(["status", "--json", "--socket", daemon.socketPath])
        return ((try? JSONSerialization.jsonObject(with: Data(run.stdout.utf8)) as? [String: Any]) ?? [:], run.stdout + run.stderr)
    }

    static func lastError(_ daemon: DaemonProcess) throws -> String? {
        (try statusJSON(daemon).json["last_error"] as? [String: Any])?["message"] as? String
    }

    /// Polls status until `last_error` satisfies `condition`; bounded.
    static func waitForLastError(_ daemon: DaemonProcess, timeout: Double = 30, _ condition: (String) -> Bool) async throws -> String? {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            if let message = try lastError(daemon), condition(message) { return message }
            try await Task.sleep(for: .milliseconds(50))
        }
        return nil
    }

    /// One post through a real `PlunkClient`, for the words of a failure.
    static func answer(to fake: FakePlunk, trusting roots: String?) async throws -> PlunkAnswer {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let client = PlunkClient(
            baseURL: fake.baseURL, concurrency: 1, requestTimeout: 10, eventLoopGroup: group,
            extraTrustRoots: try roots.map(TrustedRoots.load))
        let answer = try await Deadline.callback("the TLS client's answer") { answered in
            client.post(
                body: Data(#"{"event":"e","email":"a@example.com"}"#.utf8), idempotencyKey: "k", apiKey: APIKey("pk_x"), completion: answered)
        }
        await client.shutdown()
        try await group.shutdownGracefully()
        return answer
    }

    @Test("plunk.ca_file trusts a private CA: events are delivered over TLS through the binary")
    func privateCA() async throws {
        let certificates = try TestCertificates()
        defer { certificates.remove() }
        let fake = try await FakePlunk(tls: try certificates.serverTLS(.trusted))
        let daemon = try DaemonProcess(environment: Self.environment(fake, ["PLUNK_CA_FILE": certificates.caFile]))
        defer { daemon.cleanUp() }
        try daemon.waitUntilServing()
        let id = try DaemonDeliveryTests().submit(daemon.socketPath)
        #expect(try await DaemonDeliveryTests().waitForStoredCount(daemon.storagePath, 0))
        #expect(fake.requests.map(\.idempotencyKey) == [id])
        #expect(fake.baseURL.scheme == "https")
        await fake.stop()
    }

    @Test("an untrusted certificate is reported in plain words well before the connect deadline, kept and retried, at warning")
    func untrustedAtOnce() async throws {
        let certificates = try TestCertificates()
        defer { certificates.remove() }
        let fake = try await FakePlunk(tls: try certificates.serverTLS(.selfSigned))
        // A long request timeout, which was also the connect deadline: the old behaviour
        // reported the failure only when it ran out.
        let daemon = try DaemonProcess(environment: Self.environment(fake, ["PLUNK_REQUEST_TIMEOUT": "60s"]))
        defer { daemon.cleanUp() }
        try daemon.waitUntilServing()
        let submitted = Date()
        _ = try DaemonDeliveryTests().submit(daemon.socketPath)
        let message = try #require(try await Self.waitForLastError(daemon, timeout: 45) { $0.contains("TLS") })
        // Half the timeout: a margin of tens of seconds either way.
        #expect(Date().timeIntervalSince(submitted) < 30)
        #expect(
            message
                == "TLS: the certificate of 127.0.0.1 is not trusted (CERTIFICATE_VERIFY_FAILED): it is expired, self-signed or signed by a CA this machine does not trust; for a private CA set plunk.ca_file"
        )
        let status = try Self.statusJSON(daemon)
        for leak in ["NIOSSL", "BoringSSL", ".build", "handshake.cc", "pk_tls_test_secret"] {
            #expect(!status.text.contains(leak))
            #expect(!daemon.log.contains(leak))
        }
        // Kept: waiting for its retry, or in flight again.
        #expect((status.json["pending"] as? Int ?? 0) + (status.json["in_flight"] as? Int ?? 0) == 1)
        #expect((status.json["parked"] as? [String: Int])?.values.reduce(0, +) == 0)
        #expect(daemon.waitForLog(containing: "warning", timeout: 10))
        #expect(daemon.log.contains("TLS: the certificate of 127.0.0.1 is not trusted"))
        await fake.stop()
    }

    @Test("an expired certificate and one for another name are named as such")
    func expiredAndOtherName() async throws {
        let certificates = try TestCertificates()
        defer { certificates.remove() }
        let expired = try await FakePlunk(tls: try certificates.serverTLS(.expired))
        guard case .transportFailure(let expiredText) = try await Self.answer(to: expired, trusting: certificates.caFile) else {
            Issue.record("an expired certificate was accepted")
            return
        }
        #expect(expiredText.hasPrefix("TLS: the certificate of 127.0.0.1 has expired (on 2020-01-02T00:00:00Z)"))
        await expired.stop()

        let other = try await FakePlunk(tls: try certificates.serverTLS(.otherName))
        guard case .transportFailure(let otherText) = try await Self.answer(to: other, trusting: certificates.caFile) else {
            Issue.record("a certificate for another name was accepted")
            return
        }
        #expect(otherText == "TLS: the certificate of 127.0.0.1 is for another name (it does not list 127.0.0.1)")
        await other.stop()

        // The same trusted server without the CA: untrusted; with it: an answer.
        let trusted = try await FakePlunk(tls: try certificates.serverTLS(.trusted))
        guard case .transportFailure(let untrusted) = try await Self.answer(to: trusted, trusting: nil) else {
            Issue.record("a private CA was trusted without plunk.ca_file")
            return
        }
        #expect(untrusted.contains("is not trusted (CERTIFICATE_VERIFY_FAILED)"))
        #expect(
            try await Self.answer(to: trusted, trusting: certificates.caFile)
                == .response(
                    status: 200, retryAfter: nil, body: Data(#"{"success":true,"contact":"c6a1","event":"e7b2","timestamp":"2026-11-29T00:00:00.000Z"}"#.utf8)))
        await trusted.stop()
    }

    @Test("plunk.ca_file is applied on SIGHUP: an event failing as untrusted is delivered after the reload")
    func caFileOnReload() async throws {
        let certificates = try TestCertificates()
        defer { certificates.remove() }
        let fake = try await FakePlunk(tls: try certificates.serverTLS(.trusted))
        let directory = try DaemonProcess.makeScratchDirectory()
        let configFile = "\(directory)/plunkd.yaml"
        try "plunk:\n  base_url: \(fake.baseURL.absoluteString)\n".write(toFile: configFile, atomically: true, encoding: .utf8)
        var environment = Self.environment(fake, ["PLUNKD_CONFIG": configFile])
        environment["PLUNK_BASE_URL"] = nil
        let daemon = try DaemonProcess(directory: directory, environment: environment)
        defer { daemon.cleanUp() }
        try daemon.waitUntilServing()
        _ = try DaemonDeliveryTests().submit(daemon.socketPath)
        #expect(try await Self.waitForLastError(daemon) { $0.contains("not trusted") } != nil)
        #expect(fake.requests.isEmpty)
        try "plunk:\n  base_url: \(fake.baseURL.absoluteString)\n  ca_file: \(certificates.caFile)\n"
            .write(toFile: configFile, atomically: true, encoding: .utf8)
        daemon.signal(SIGHUP)
        #expect(try await DaemonDeliveryTests().waitForStoredCount(daemon.storagePath, 0))
        #expect(fake.requests.count == 1)
        #expect(daemon.log.contains("trusted roots"))
        await fake.stop()
    }

    @Test("a ca_file that is not PEM refuses to start, naming the key and the file")
    func badCAFile() throws {
        let directory = try DaemonProcess.makeScratchDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        try "not a certificate".write(toFile: "\(directory)/ca.pem", atomically: true, encoding: .utf8)
        let run = try DaemonProcess.command(["check-config"], environment: ["PLUNK_CA_FILE": "\(directory)/ca.pem"])
        #expect(run.status != 0)
        #expect((run.stdout + run.stderr).contains("plunk.ca_file: \(directory)/ca.pem is not a PEM bundle of certificates"))
    }
}
