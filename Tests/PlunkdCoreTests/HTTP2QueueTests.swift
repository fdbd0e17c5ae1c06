import Foundation
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL
import PlunkdTestSupport
import Synchronization
import Testing

@testable import PlunkdCore

/// Requests waiting for a stream of the one HTTP/2 connection, driven on
/// `PlunkConnections` directly against a TLS stand-in offering h2.
@Suite("HTTP/2 requests waiting for a stream", .serialized, .timeLimit(.minutes(2)), .watchdog)
struct HTTP2QueueTests {
    @Test(
        "a queued request whose deadline passed while it waited does not hold back the one behind it: when a stream ends, the next live request gets it"
    )
    func finishedWaiterSkipped() async throws {
        let certificates = try TestCertificates()
        defer { certificates.remove() }
        let fake = try await FakePlunk(tls: try certificates.serverTLS(.trusted), offersHTTP2: true) { request in
            let slow = String(decoding: request.body, as: UTF8.self) == "slow"
            return .answer(status: 200, body: #"{"success":true}"#, delay: slow ? .seconds(1) : .zero)
        }
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        var tls = TLSConfiguration.makeClientConfiguration()
        tls.additionalTrustRoots = [.file(certificates.caFile)]
        let connections = PlunkConnections(
            target: .init(
                host: "127.0.0.1", port: fake.port, tls: true, authority: "127.0.0.1:\(fake.port)", offersHTTP2: true, proxy: nil),
            limit: 1, connectTimeout: .seconds(5), loop: group.next(), tls: tls)

        /// An exchange whose result is kept; its deadline (15 s) is far past the test's waits.
        func exchange(_ body: String) -> (PlunkExchange, KeptResult) {
            let result = KeptResult()
            let head = HTTPRequestHead(version: .http1_1, method: .POST, uri: "/v1/track", headers: ["Content-Length": "\(body.utf8.count)"])
            let exchange = PlunkExchange(head: head, body: ByteBuffer(string: body), deadline: .now() + .seconds(15)) { answer in
                result.value.withLock { $0 = answer }
            }
            return (exchange, result)
        }
        func finished(_ result: KeptResult) async -> Bool {
            await Poll.until(timeout: 30) { result.value.withLock { $0 != nil } }
        }

        // The connection agrees on h2 first, so that requests queue for its one stream.
        let (warmUp, warmedUp) = exchange("warm-up")
        connections.send(warmUp)
        #expect(await finished(warmedUp))

        let (slow, slowResult) = exchange("slow")
        let (expired, expiredResult) = exchange("expired")
        let (behind, behindResult) = exchange("behind")
        for queued in [slow, expired, behind] { connections.send(queued) }
        #expect(await fake.waitFor { $0.contains { String(decoding: $0.body, as: UTF8.self) == "slow" } })
        // As its deadline would, while it waits behind the slow one.
        try await group.next().submit { expired.finish(.failure(PlunkTransportError.deadlineExceeded)) }.get()

        #expect(await finished(slowResult))
        #expect(await finished(behindResult))
        let behindAnswer = behindResult.value.withLock { try? $0?.get() }
        if case .response(let status, _, _, _) = behindAnswer {
            #expect(status == 200)
        } else {
            Issue.record("the request behind the expired one was not answered: \(String(describing: behindAnswer))")
        }
        #expect(expiredResult.value.withLock { $0.map { (try? $0.get()) == nil } } == true)
        #expect(!fake.requests.contains { String(decoding: $0.body, as: UTF8.self) == "expired" }, "an expired request is never sent")
        await connections.shutdown()
        try await group.shutdownGracefully()
        await fake.stop()
    }
}

extension HTTP2QueueTests {
    @Test(
        "a retired HTTP/2 connection (new roots, as on SIGHUP) closes once its own streams end, while a stream of the next connection is still in flight"
    )
    func retiredConnectionClosesOnItsOwn() async throws {
        let certificates = try TestCertificates()
        defer { certificates.remove() }
        let fake = try await FakePlunk(tls: try certificates.serverTLS(.trusted), offersHTTP2: true) { request in
            let body = String(decoding: request.body, as: UTF8.self)
            return .answer(status: 200, body: #"{"success":true}"#, delay: body == "long" ? .seconds(10) : .seconds(2))
        }
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        var tls = TLSConfiguration.makeClientConfiguration()
        tls.additionalTrustRoots = [.file(certificates.caFile)]
        let connections = PlunkConnections(
            target: .init(
                host: "127.0.0.1", port: fake.port, tls: true, authority: "127.0.0.1:\(fake.port)", offersHTTP2: true, proxy: nil),
            limit: 4, connectTimeout: .seconds(5), loop: group.next(), tls: tls)
        func send(_ body: String) -> KeptResult {
            let result = KeptResult()
            let head = HTTPRequestHead(version: .http1_1, method: .POST, uri: "/v1/track", headers: ["Content-Length": "\(body.utf8.count)"])
            connections.send(
                PlunkExchange(head: head, body: ByteBuffer(string: body), deadline: .now() + .seconds(30)) { answer in
                    result.value.withLock { $0 = answer }
                })
            return result
        }
        func arrived(_ body: String) async -> Bool {
            await fake.waitFor { $0.contains { String(decoding: $0.body, as: UTF8.self) == body } }
        }

        // The first connection carries a request answered in 2 s, and is retired meanwhile.
        let short = send("short")
        #expect(await arrived("short"))
        connections.useTLS(tls)
        // The next request opens the second connection and stays in flight for 10 s.
        let long = send("long")
        #expect(await arrived("long"))
        #expect(fake.connectionCount == 2 && fake.openConnectionCount == 2)

        #expect(await Poll.until(timeout: 30) { short.value.withLock { $0 != nil } })
        #expect(
            await Poll.until(timeout: 30) { fake.openConnectionCount == 1 || long.value.withLock { $0 != nil } })
        #expect(long.value.withLock { $0 == nil }, "the retired connection closed only when the other connection's stream ended")
        #expect(fake.openConnectionCount == 1)
        await connections.shutdown()
        try await group.shutdownGracefully()
        await fake.stop()
    }
}

/// What an exchange finished with, once it has.
final class KeptResult: Sendable {
    let value = Mutex<Result<PlunkAnswer, any Error>?>(nil)
}
