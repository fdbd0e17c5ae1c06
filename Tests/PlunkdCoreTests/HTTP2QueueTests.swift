import Foundation
import NIOCore
import PlunkdTestSupport
import Testing

@testable import PlunkdCore

/// Requests waiting for a stream of the one HTTP/2 connection, driven on
/// `PlunkConnections` directly against a TLS stand-in offering h2.
@Suite("HTTP/2 requests waiting for a stream", .serialized, .timeLimit(.minutes(2)), .watchdog)
struct HTTP2QueueTests {
    /// Without the multiplexer, giving the inbound windows back is plunkd's: HTTP/2
    /// opens 65,535 bytes for the connection and for each stream, and a Plunk whose
    /// answers add up to more would stall once they were used.
    @Test("answers adding up to more than HTTP/2's first windows, on one connection and on one stream, are all read")
    func answersPastTheWindows() async throws {
        let long = String(repeating: "x", count: 150_000)
        let h2 = try await StreamFixture(streams: 4) { body in
            .answer(status: 200, body: #"{"success":true,"pad":""# + (body == "long" ? long : String(repeating: "y", count: 8_000)) + #""}"#)
        }
        let bodies = (0..<40).map { "short \($0)" } + ["long"]
        var results: [KeptResult] = []
        for body in bodies {
            let (exchange, result) = h2.exchange(body)
            h2.connections.send(exchange)
            results.append(result)
        }
        for (body, result) in zip(bodies, results) {
            #expect(await result.finished(), "\(body): no answer")
            #expect(result.status == 200, "\(body): \(result.described)")
        }
        #expect(h2.fake.connectionCount == 1)
        try await h2.stop()
    }

    @Test("a request past its deadline resets its own stream: the stream in flight beside it and the next request are answered on the same connection")
    func deadlineResetsOneStream() async throws {
        let h2 = try await StreamFixture(streams: 4) { body in
            body == "hangs" ? .hang : .answer(status: 200, body: #"{"success":true}"#, delay: body == "slow" ? .seconds(2) : .zero)
        }
        let (hangs, hung) = h2.exchange("hangs", deadline: .now() + .seconds(1))
        let (slow, slowResult) = h2.exchange("slow")
        h2.connections.send(hangs)
        h2.connections.send(slow)
        #expect(await hung.finished())
        #expect(hung.value.withLock { $0.flatMap { try? $0.get() } == nil }, "\(hung.described)")
        #expect(hung.described.contains("no answer from 127.0.0.1 within"), "\(hung.described)")
        #expect(await slowResult.finished())
        #expect(slowResult.status == 200, "\(slowResult.described)")
        await h2.expectNextAnsweredOnTheOneConnection()
        try await h2.stop()
    }

    @Test("a stream Plunk resets fails in plain words, and the connection carries the next request")
    func plunkResetsAStream() async throws {
        let h2 = try await StreamFixture(streams: 4) { body in
            body == "reset" ? .reset : .answer(status: 200, body: #"{"success":true}"#)
        }
        let (reset, resetResult) = h2.exchange("reset")
        h2.connections.send(reset)
        #expect(await resetResult.finished())
        #expect(resetResult.described.contains("reset the request's HTTP/2 stream (error code"), "\(resetResult.described)")
        await h2.expectNextAnsweredOnTheOneConnection()
        try await h2.stop()
    }

    @Test("an HTTP/2 connection with nothing in flight for the idle timeout closes, and the next request opens another")
    func idleConnectionCloses() async throws {
        let h2 = try await StreamFixture(streams: 4, idleTimeout: .seconds(1)) { _ in .answer(status: 200, body: #"{"success":true}"#) }
        for attempt in 1...2 {
            let (exchange, result) = h2.exchange("request \(attempt)")
            h2.connections.send(exchange)
            #expect(await result.finished())
            #expect(result.status == 200, "\(result.described)")
            #expect(h2.fake.connectionCount == attempt)
            #expect(await Poll.until(timeout: 20) { h2.fake.openConnectionCount == 0 }, "the idle connection stayed open")
        }
        try await h2.stop()
    }

    @Test("a Plunk that breaks HTTP/2 fails the request at once in plain words, and the next request opens another connection")
    func brokenProtocol() async throws {
        let broken = try await BrokenProtocolFixture(streams: 4)
        for attempt in 1...2 {
            let result = broken.send()
            #expect(await result.finished())
            #expect(result.described.contains("broke HTTP/2"), "attempt \(attempt): \(result.described)")
            #expect(!result.described.contains(".swift"), "a build path: \(result.described)")
            #expect(broken.server.connectionCount == attempt)
        }
        try await broken.stop()
    }

    /// A connection error ends the streams in flight, and each freed slot hands the next
    /// queued request on: it must go to a new connection, not onto the broken one, where
    /// it would fail as "closed before an answer" without ever having been sent.
    @Test("a request queued behind one that a connection error ends goes out on a new connection")
    func queuedRequestLeavesBrokenConnection() async throws {
        let broken = try await BrokenProtocolFixture(streams: 1)
        let results = [broken.send(), broken.send()]
        for (index, result) in results.enumerated() {
            #expect(await result.finished())
            #expect(result.described.contains("broke HTTP/2"), "request \(index + 1): \(result.described)")
        }
        #expect(broken.server.connectionCount == 2)
        try await broken.stop()
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
