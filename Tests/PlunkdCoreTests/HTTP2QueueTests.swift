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
    /// A stream's end can be reported twice: by its handler (answered, failed, closed) and
    /// by its creation's failure, when the connection refuses the stream after the
    /// handler was added. Counted twice, the pool would think a stream free that is not:
    /// more streams than `limit`, and a retired connection closed under a live stream.
    @Test("a stream's end, reported by its handler and by its creation's failure both, frees its slot once")
    func streamEndCountedOnce() {
        let ends = Mutex(0)
        let once = StreamEnded { ends.withLock { $0 += 1 } }
        once.call()
        once.call()
        once.call()
        #expect(ends.withLock { $0 } == 1)
    }

    @Test(
        "a queued request whose deadline passed while it waited does not hold back the one behind it: when a stream ends, the next live request gets it"
    )
    func finishedWaiterSkipped() async throws {
        let h2 = try await StreamFixture(streams: 1) { body in body == "slow" ? .seconds(1) : .zero }

        // The connection agrees on h2 first, so that requests queue for its one stream.
        let (warmUp, warmedUp) = h2.exchange("warm-up")
        h2.connections.send(warmUp)
        #expect(await warmedUp.finished())

        let (slow, slowResult) = h2.exchange("slow")
        let (expired, expiredResult) = h2.exchange("expired")
        let (behind, behindResult) = h2.exchange("behind")
        for queued in [slow, expired, behind] { h2.connections.send(queued) }
        #expect(await h2.arrived("slow"))
        // As its deadline would, while it waits behind the slow one.
        try await h2.group.next().submit { expired.finish(.failure(PlunkTransportError.deadlineExceeded)) }.get()

        #expect(await slowResult.finished())
        #expect(await behindResult.finished())
        let behindAnswer = behindResult.value.withLock { try? $0?.get() }
        if case .response(let status, _, _, _) = behindAnswer {
            #expect(status == 200)
        } else {
            Issue.record("the request behind the expired one was not answered: \(String(describing: behindAnswer))")
        }
        #expect(expiredResult.value.withLock { $0.map { (try? $0.get()) == nil } } == true)
        #expect(!h2.fake.requests.contains { String(decoding: $0.body, as: UTF8.self) == "expired" }, "an expired request is never sent")
        try await h2.stop()
    }

    @Test(
        "a retired HTTP/2 connection (new roots, as on SIGHUP) closes once its own streams end, while a stream of the next connection is still in flight"
    )
    func retiredConnectionClosesOnItsOwn() async throws {
        let h2 = try await StreamFixture(streams: 4) { body in body == "long" ? .seconds(10) : .seconds(2) }
        func send(_ body: String) -> KeptResult {
            let (exchange, result) = h2.exchange(body)
            h2.connections.send(exchange)
            return result
        }

        // The first connection carries a request answered in 2 s, and is retired meanwhile.
        let short = send("short")
        #expect(await h2.arrived("short"))
        h2.connections.useTLS(h2.tls)
        // The next request opens the second connection and stays in flight for 10 s.
        let long = send("long")
        #expect(await h2.arrived("long"))
        #expect(h2.fake.connectionCount == 2 && h2.fake.openConnectionCount == 2)

        #expect(await short.finished())
        #expect(await Poll.until(timeout: 30) { h2.fake.openConnectionCount == 1 || long.value.withLock { $0 != nil } })
        #expect(long.value.withLock { $0 == nil }, "the retired connection closed only when the other connection's stream ended")
        #expect(h2.fake.openConnectionCount == 1)
        try await h2.stop()
    }
}

/// A TLS stand-in offering h2 that answers 200 after the delay `delay(body)` gives, and
/// plunkd's connections to it with `streams` streams at once.
struct StreamFixture {
    let certificates: TestCertificates
    let fake: FakePlunk
    let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
    let tls: TLSConfiguration
    let connections: PlunkConnections

    init(streams: Int, delay: @escaping @Sendable (String) -> TimeAmount) async throws {
        certificates = try TestCertificates()
        fake = try await FakePlunk(tls: try certificates.serverTLS(.trusted), offersHTTP2: true) { request in
            .answer(status: 200, body: #"{"success":true}"#, delay: delay(String(decoding: request.body, as: UTF8.self)))
        }
        var tls = TLSConfiguration.makeClientConfiguration()
        tls.additionalTrustRoots = [.file(certificates.caFile)]
        self.tls = tls
        connections = PlunkConnections(
            target: .init(
                host: "127.0.0.1", port: fake.port, tls: true, authority: "127.0.0.1:\(fake.port)", offersHTTP2: true, proxy: nil),
            limit: streams, connectTimeout: .seconds(5), loop: group.next(), tls: tls)
    }

    /// An exchange whose result is kept; its deadline (20 s) is past the tests' waits for the answers they expect.
    func exchange(_ body: String) -> (PlunkExchange, KeptResult) {
        let result = KeptResult()
        let head = HTTPRequestHead(version: .http1_1, method: .POST, uri: "/v1/track", headers: ["Content-Length": "\(body.utf8.count)"])
        let exchange = PlunkExchange(head: head, body: ByteBuffer(string: body), deadline: .now() + .seconds(20)) { answer in
            result.value.withLock { $0 = answer }
        }
        return (exchange, result)
    }

    func arrived(_ body: String) async -> Bool {
        await fake.waitFor { $0.contains { String(decoding: $0.body, as: UTF8.self) == body } }
    }

    func stop() async throws {
        await connections.shutdown()
        try await group.shutdownGracefully()
        await fake.stop()
        certificates.remove()
    }
}

/// What an exchange finished with, once it has.
final class KeptResult: Sendable {
    let value = Mutex<Result<PlunkAnswer, any Error>?>(nil)

    func finished() async -> Bool {
        await Poll.until(timeout: 30) { value.withLock { $0 != nil } }
    }
}
