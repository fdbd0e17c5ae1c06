import Foundation
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOPosix
import PlunkdTestSupport
import Testing

@testable import PlunkdCore

/// plunkd's own HTTP/1.1 client against answers a well-behaved server never sends:
/// `Connection: close`, a long chunked error page, an answer read to the close, an answer
/// nobody asked for. Each must be read for what it says and leave the next request a
/// working connection.
@Suite("HTTP/1.1 client on the wire", .timeLimit(.minutes(2)), .watchdog)
struct HTTP1WireTests {
    @Test("answers marked Connection: close are read, and each next request gets a new connection")
    func connectionClose() async throws {
        let server = try await RawHTTPServer { _ in .init("HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok", close: true) }
        let client = server.client(concurrency: 2)
        for _ in 0..<5 {
            #expect(try await client.answer() == .response(status: 200, retryAfter: nil, body: Data("ok".utf8)))
        }
        #expect(server.connections == 5)
        await client.shutdown()
        try await server.stop()
    }

    @Test("a chunked error page past 4 KiB keeps its first 4 KiB, and the connection serves the next request")
    func longChunkedAnswer() async throws {
        let chunk = String(repeating: "x", count: 3000)
        let server = try await RawHTTPServer { index in
            if index == 0 {
                let chunks = (0..<3).map { _ in "\(String(3000, radix: 16))\r\n\(chunk)\r\n" }.joined()
                return .init("HTTP/1.1 500 Internal Server Error\r\nTransfer-Encoding: chunked\r\n\r\n\(chunks)0\r\n\r\n")
            }
            return .init("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        }
        let client = server.client(concurrency: 1)
        guard case .response(let status, _, _, let body) = try await client.answer() else {
            Issue.record("no answer")
            return
        }
        #expect(status == 500)
        #expect(body.count == PlunkAnswer.keptBodyBytes)
        #expect(try await client.answer() == .response(status: 200, retryAfter: nil, body: Data("ok".utf8)))
        #expect(server.connections == 1)
        await client.shutdown()
        try await server.stop()
    }

    @Test("a request past plunk.request_timeout says so, not that the stream ended; a garbled status line says the answer was not HTTP")
    func failuresInPlainWords() async throws {
        let server = try await RawHTTPServer { index in .init(index == 0 ? "" : "HELLO, THIS IS NOT HTTP\r\n\r\n") }
        let client = server.client(concurrency: 1, requestTimeout: 0.5)
        guard case .transportFailure(let late) = try await client.answer() else {
            Issue.record("an answer came")
            return
        }
        #expect(late.hasPrefix("no answer from 127.0.0.1 within 0.5 s"), "\(late)")
        guard case .transportFailure(let garbled) = try await client.answer() else {
            Issue.record("an answer came")
            return
        }
        #expect(garbled.hasPrefix("the answer from 127.0.0.1 was not HTTP/1.1"), "\(garbled)")
        await client.shutdown()
        try await server.stop()
    }

    @Test("an answer without a length is read to the close, and the next request opens a new connection")
    func answerReadToClose() async throws {
        let server = try await RawHTTPServer { _ in .init("HTTP/1.1 503 Service Unavailable\r\nRetry-After: 7\r\n\r\nbusy", close: true) }
        let client = server.client(concurrency: 1)
        for _ in 0..<3 {
            #expect(try await client.answer() == .response(status: 503, retryAfter: "7", body: Data("busy".utf8)))
        }
        #expect(server.connections == 3)
        await client.shutdown()
        try await server.stop()
    }

    @Test("an answer nobody asked for drops its connection; the next request still gets its own answer")
    func unaskedAnswer() async throws {
        let server = try await RawHTTPServer { index in
            let one = "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n"
            return index == 0 ? .init(one + "one" + "HTTP/1.1 409 Conflict\r\nContent-Length: 5\r\n\r\nextra") : .init(one + "two")
        }
        let client = server.client(concurrency: 1)
        #expect(try await client.answer() == .response(status: 200, retryAfter: nil, body: Data("one".utf8)))
        // The out-of-step connection closes; waiting for it keeps the next request off it.
        try await server.waitForClosedConnections(1)
        #expect(try await client.answer() == .response(status: 200, retryAfter: nil, body: Data("two".utf8)))
        #expect(server.connections == 2)
        await client.shutdown()
        try await server.stop()
    }
}

/// A `PlunkClient` on the HTTP/1.1 path, pointed at a `RawHTTPServer`.
private struct WireClient {
    let client: PlunkClient
    let group: MultiThreadedEventLoopGroup

    func answer() async throws -> PlunkAnswer {
        try await Deadline.callback("the HTTP/1.1 client's answer") { answered in
            client.post(body: Data("{}".utf8), idempotencyKey: "k", apiKey: APIKey("pk_test_wire"), completion: answered)
        }
    }

    func shutdown() async {
        await client.shutdown()
        try? await group.shutdownGracefully()
    }
}

/// A loopback server that decodes requests with NIO and answers each with bytes the test
/// writes by hand, so the client meets exactly what is scripted.
private final class RawHTTPServer: Sendable {
    struct Reply: Sendable {
        var bytes: String
        /// Close right after writing.
        var close = false

        init(_ bytes: String, close: Bool = false) {
            self.bytes = bytes
            self.close = close
        }
    }

    private let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
    private let channel: any Channel
    private let counts = NIOLockedValueBox((connections: 0, closed: 0, requests: 0))

    var connections: Int { counts.withLockedValue { $0.connections } }

    init(script: @escaping @Sendable (Int) -> Reply) async throws {
        let counts = counts
        channel = try await ServerBootstrap(group: group)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    counts.withLockedValue { $0.connections += 1 }
                    let operations = channel.pipeline.syncOperations
                    try operations.addHandler(ByteToMessageHandler(HTTPRequestDecoder()))
                    try operations.addHandler(RawReplyHandler(counts: counts, script: script))
                }
            }
            .bind(host: "127.0.0.1", port: 0).get()
    }

    func client(concurrency: Int, requestTimeout: Double = 10) -> WireClient {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let url = URL(string: "http://127.0.0.1:\(channel.localAddress?.port ?? 0)/v1")!
        return WireClient(
            client: PlunkClient(baseURL: url, concurrency: concurrency, requestTimeout: requestTimeout, eventLoopGroup: group), group: group)
    }

    /// Waits (up to 10 s) until `count` connections have closed on the server's side.
    func waitForClosedConnections(_ count: Int) async throws {
        let deadline = ContinuousClock.now + .seconds(10)
        while counts.withLockedValue({ $0.closed }) < count {
            guard ContinuousClock.now < deadline else { throw CancellationError() }
            try await Task.sleep(for: .milliseconds(5))
        }
    }

    func stop() async throws {
        try await channel.close().get()
        try await group.shutdownGracefully()
    }
}

private final class RawReplyHandler: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = ByteBuffer

    private let counts: NIOLockedValueBox<(connections: Int, closed: Int, requests: Int)>
    private let script: @Sendable (Int) -> RawHTTPServer.Reply

    init(counts: NIOLockedValueBox<(connections: Int, closed: Int, requests: Int)>, script: @escaping @Sendable (Int) -> RawHTTPServer.Reply) {
        self.counts = counts
        self.script = script
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard case .end = unwrapInboundIn(data) else { return }
        let index = counts.withLockedValue { counts in
            defer { counts.requests += 1 }
            return counts.requests
        }
        let reply = script(index)
        let written = context.writeAndFlush(wrapOutboundOut(ByteBuffer(string: reply.bytes)))
        if reply.close {
            let channel = context.channel
            written.whenComplete { _ in channel.close(promise: nil) }
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        counts.withLockedValue { $0.closed += 1 }
        context.fireChannelInactive()
    }
}
