import Foundation
import GRDB
import PlunkdTestSupport
import Testing

@testable import PlunkdCore

#if canImport(Glibc)
    import Glibc
#endif

/// Reaching Plunk through an HTTP proxy: a real tinyproxy tunnelling TLS to a local
/// HTTPS Plunk, and a stand-in proxy that refuses CONNECT.
@Suite("Through a proxy", .serialized, .timeLimit(.minutes(2)), .watchdog)
struct ProxyTests {
    @Test("plunk.proxy with a user and password: TLS to Plunk goes through the proxy's CONNECT tunnel")
    func throughTinyproxy() async throws {
        let certificates = try TestCertificates()
        defer { certificates.remove() }
        let proxy = try TinyProxy()
        defer { proxy.stop() }
        let fake = try await FakePlunk(tls: try certificates.serverTLS(.trusted))
        let daemon = try DaemonProcess(
            environment: TLSDeliveryTests.environment(
                fake,
                [
                    "PLUNK_CA_FILE": certificates.caFile, "PLUNK_PROXY": proxy.url,
                ]))
        defer { daemon.cleanUp() }
        try daemon.waitUntilServing()
        let id = try DaemonDeliveryTests().submit(daemon.socketPath)
        #expect(try await DaemonDeliveryTests().waitForStoredCount(daemon.storagePath, 0))
        #expect(fake.requests.map(\.idempotencyKey) == [id])
        #expect(proxy.log.contains("CONNECT 127.0.0.1:\(fake.port)"))
        #expect(!daemon.log.contains(TinyProxy.password))
        #expect(daemon.log.contains("reaching Plunk through a proxy"))
        await fake.stop()
    }

    @Test("a proxy refusing the password is reported in plain words; the password appears in neither status nor log")
    func wrongPassword() async throws {
        let certificates = try TestCertificates()
        defer { certificates.remove() }
        let proxy = try TinyProxy()
        defer { proxy.stop() }
        let fake = try await FakePlunk(tls: try certificates.serverTLS(.trusted))
        let wrong = "wr0ng-pa55word"
        let daemon = try DaemonProcess(
            environment: TLSDeliveryTests.environment(
                fake,
                [
                    "PLUNK_CA_FILE": certificates.caFile, "PLUNK_PROXY": "http://\(TinyProxy.user):\(wrong)@127.0.0.1:\(proxy.port)",
                ]))
        defer { daemon.cleanUp() }
        try daemon.waitUntilServing()
        _ = try DaemonDeliveryTests().submit(daemon.socketPath)
        let message = try #require(try await TLSDeliveryTests.waitForLastError(daemon) { $0.contains("proxy") })
        // tinyproxy refuses bad credentials on CONNECT with 401, not 407.
        #expect(
            message == "proxy 127.0.0.1:\(proxy.port): refused the tunnel to 127.0.0.1:\(fake.port) (its answer to CONNECT was not 200, for example 403 or 502)"
        )
        let status = try TLSDeliveryTests.statusJSON(daemon)
        #expect(!status.text.contains(wrong))
        #expect(!daemon.log.contains(wrong))
        #expect(fake.requests.isEmpty)
        await fake.stop()
    }

    @Test("a proxy answering CONNECT with 407 or 502 is named, and the event is kept", arguments: [407, 502])
    func refusingProxy(status: Int) async throws {
        // FakePlunk as the proxy: it sees the CONNECT and answers it.
        let refusing = try await FakePlunk { _ in .answer(status: status, body: "no") }
        let daemon = try DaemonProcess(environment: [
            "PLUNK_BASE_URL": "https://plunk.example.test/v1", "PLUNK_API_KEY": "pk_proxy_test",
            "PLUNK_PROXY": "http://127.0.0.1:\(refusing.port)",
        ])
        defer { daemon.cleanUp() }
        try daemon.waitUntilServing()
        _ = try DaemonDeliveryTests().submit(daemon.socketPath)
        let message = try #require(try await TLSDeliveryTests.waitForLastError(daemon) { $0.contains("proxy") })
        #expect(refusing.requests.first?.path == "plunk.example.test:443")
        if status == 407 {
            #expect(message.contains("proxy authentication required (407)"))
        } else {
            #expect(message.contains("refused the tunnel to plunk.example.test:443"))
        }
        // Kept, and kept waiting: a proxy's refusal is the network's fault, not the event's.
        #expect(try DaemonDeliveryTests().storedCount(daemon.storagePath) == 1)
        let parked = try await DatabaseQueue(path: daemon.storagePath).read {
            try Int.fetchOne($0, sql: "SELECT count(*) FROM event WHERE state = 'parked'")
        }
        #expect(parked == 0, "a proxy's refusal parked the event")
        await refusing.stop()
    }

    @Test("HTTPS_PROXY is honoured when plunk.proxy is not set, and NO_PROXY bypasses it")
    func environmentProxy() async throws {
        let certificates = try TestCertificates()
        defer { certificates.remove() }
        let proxy = try TinyProxy()
        defer { proxy.stop() }
        let fake = try await FakePlunk(tls: try certificates.serverTLS(.trusted))
        let viaProxy = try DaemonProcess(
            environment: TLSDeliveryTests.environment(
                fake,
                [
                    "PLUNK_CA_FILE": certificates.caFile, "HTTPS_PROXY": proxy.url,
                ]))
        defer { viaProxy.cleanUp() }
        try viaProxy.waitUntilServing()
        _ = try DaemonDeliveryTests().submit(viaProxy.socketPath)
        #expect(try await DaemonDeliveryTests().waitForStoredCount(viaProxy.storagePath, 0))
        #expect(proxy.log.contains("CONNECT 127.0.0.1:\(fake.port)"))
        viaProxy.signal(SIGTERM)
        _ = viaProxy.waitForExit(timeout: 30)

        // A proxy nobody listens on, bypassed for 127.0.0.1.
        let direct = try DaemonProcess(
            environment: TLSDeliveryTests.environment(
                fake,
                [
                    "PLUNK_CA_FILE": certificates.caFile, "https_proxy": "http://127.0.0.1:9", "NO_PROXY": "localhost,127.0.0.1",
                ]))
        defer { direct.cleanUp() }
        try direct.waitUntilServing()
        _ = try DaemonDeliveryTests().submit(direct.socketPath)
        #expect(try await DaemonDeliveryTests().waitForStoredCount(direct.storagePath, 0))
        #expect(fake.requests.count == 2)
        await fake.stop()
    }

    @Test("proxy settings are read like curl's, and a bad one is refused without repeating its password")
    func parsing() throws {
        #expect(ProxyEndpoint.parse("http://u:p%40ss@proxy.example:3128") == ProxyEndpoint(host: "proxy.example", port: 3128, username: "u", password: "p@ss"))
        #expect(ProxyEndpoint.parse("proxy.example:8080") == ProxyEndpoint(host: "proxy.example", port: 8080))
        #expect(ProxyEndpoint.parse("http://proxy.example") == ProxyEndpoint(host: "proxy.example", port: 80))
        #expect(ProxyEndpoint.parse("https://proxy.example:443") == nil)
        #expect(ProxyEndpoint.parse("socks5://proxy.example:1080") == nil)
        #expect(ProxyEndpoint(host: "p", port: 1, username: "u", password: "secret").description == "http://<credentials>@p:1")
        let noProxy = NoProxyList(" example.com, .internal ,127.0.0.1")
        #expect(noProxy.excludes(host: "example.com"))
        #expect(noProxy.excludes(host: "api.example.com"))
        #expect(noProxy.excludes(host: "plunk.internal"))
        #expect(noProxy.excludes(host: "127.0.0.1"))
        #expect(!noProxy.excludes(host: "notexample.com"))
        #expect(NoProxyList("*").excludes(host: "anything"))

        let run = try DaemonProcess.command(["check-config"], environment: ["PLUNK_PROXY": "ftp://user:hunter2@proxy:21"])
        #expect(run.status != 0)
        #expect((run.stdout + run.stderr).contains("plunk.proxy: expected an http:// proxy URL"))
        #expect(!(run.stdout + run.stderr).contains("hunter2"))
        let fromEnvironment = try DaemonProcess.command(["check-config"], environment: ["HTTPS_PROXY": "ftp://user:hunter2@proxy:21"])
        #expect(fromEnvironment.status != 0)
        #expect((fromEnvironment.stdout + fromEnvironment.stderr).contains("environment variable HTTPS_PROXY"))
        #expect(!(fromEnvironment.stdout + fromEnvironment.stderr).contains("hunter2"))
    }
}
