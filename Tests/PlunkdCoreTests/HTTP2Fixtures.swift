import Foundation
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL
import NIOTLS
import PlunkdTestSupport
import Synchronization
import Testing

@testable import PlunkdCore

/// A TLS stand-in offering h2 that answers 200 after the delay `delay(body)` gives, and
/// plunkd's connections to it with `streams` streams at once.
struct StreamFixture {
    let certificates: TestCertificates
    let fake: FakePlunk
    let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
    let tls: TLSConfiguration
    let connections: PlunkConnections

    init(streams: Int, delay: @escaping @Sendable (String) -> TimeAmount) async throws {
        try await self.init(streams: streams) { body in .answer(status: 200, body: #"{"success":true}"#, delay: delay(body)) }
    }

    /// A stand-in whose reply to each request `reply(body)` gives.
    init(streams: Int, idleTimeout: TimeAmount = .seconds(60), reply: @escaping @Sendable (String) -> FakePlunk.Reply) async throws {
        certificates = try TestCertificates()
        fake = try await FakePlunk(tls: try certificates.serverTLS(.trusted), offersHTTP2: true) { request in
            reply(String(decoding: request.body, as: UTF8.self))
        }
        var tls = TLSConfiguration.makeClientConfiguration()
        tls.additionalTrustRoots = [.file(certificates.caFile)]
        self.tls = tls
        connections = PlunkConnections(
            target: .init(
                host: "127.0.0.1", port: fake.port, tls: true, authority: "127.0.0.1:\(fake.port)", offersHTTP2: true, proxy: nil),
            limit: streams, connectTimeout: .seconds(5), loop: group.next(), tls: tls, idleTimeout: idleTimeout)
    }

    func exchange(_ body: String, deadline: NIODeadline = .now() + .seconds(20)) -> (PlunkExchange, KeptResult) {
        KeptResult.exchange(body, deadline: deadline)
    }

    /// A request sent now is answered 200, and the stand-in has still seen one connection.
    func expectNextAnsweredOnTheOneConnection() async {
        let (next, nextResult) = exchange("next")
        connections.send(next)
        #expect(await nextResult.finished())
        #expect(nextResult.status == 200, "\(nextResult.described)")
        #expect(fake.connectionCount == 1, "\(fake.connectionCount) connections")
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

/// plunkd's connections to a `BrokenHTTP2Server`, with `streams` streams at once.
struct BrokenProtocolFixture {
    let certificates: TestCertificates
    let server: BrokenHTTP2Server
    let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
    let connections: PlunkConnections

    init(streams: Int) async throws {
        certificates = try TestCertificates()
        server = try await BrokenHTTP2Server(tls: try certificates.serverTLS(.trusted))
        var tls = TLSConfiguration.makeClientConfiguration()
        tls.additionalTrustRoots = [.file(certificates.caFile)]
        connections = PlunkConnections(
            target: .init(
                host: "127.0.0.1", port: server.port, tls: true, authority: "127.0.0.1:\(server.port)", offersHTTP2: true, proxy: nil),
            limit: streams, connectTimeout: .seconds(5), loop: group.next(), tls: tls)
    }

    /// Sends a request and gives what it will finish with.
    func send() -> KeptResult {
        let (exchange, result) = KeptResult.exchange("{}")
        connections.send(exchange)
        return result
    }

    func stop() async throws {
        await connections.shutdown()
        try await group.shutdownGracefully()
        try await server.stop()
        certificates.remove()
    }
}

/// What an exchange finished with, once it has.
final class KeptResult: Sendable {
    let value = Mutex<Result<PlunkAnswer, any Error>?>(nil)

    /// An exchange whose result is kept; its deadline (20 s) is past the tests' waits for the answers they expect.
    static func exchange(_ body: String, deadline: NIODeadline = .now() + .seconds(20)) -> (PlunkExchange, KeptResult) {
        let result = KeptResult()
        let head = HTTPRequestHead(version: .http1_1, method: .POST, uri: "/v1/track", headers: ["Content-Length": "\(body.utf8.count)"])
        let exchange = PlunkExchange(head: head, body: ByteBuffer(string: body), deadline: deadline) { answer in
            result.value.withLock { $0 = answer }
        }
        return (exchange, result)
    }

    func finished() async -> Bool {
        await Poll.until(timeout: 30) { value.withLock { $0 != nil } }
    }

    /// The answer's status, or nil for a failure (or none yet).
    var status: Int? {
        guard case .response(let status, _, _, _) = value.withLock({ try? $0?.get() }) else { return nil }
        return status
    }

    /// The answer, or the failure as the operator reads it.
    var described: String {
        switch value.withLock({ $0 }) {
        case .none: "no result"
        case .success(let answer): "\(answer)"
        case .failure(let error):
            TransportFailureText.describe(error, destination: .init(host: "127.0.0.1", port: 0), timeout: 1)
        }
    }
}

/// A TLS server that agrees on h2 and then breaks the protocol: instead of its SETTINGS,
/// a DATA frame on stream 0, which HTTP/2 makes a connection error.
final class BrokenHTTP2Server: Sendable {
    let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
    let port: Int
    private let channel: any Channel
    private let accepted = KeptCount()

    var connectionCount: Int { accepted.value.withLock { $0 } }

    init(tls: TLSConfiguration) async throws {
        var tls = tls
        tls.applicationProtocols = ["h2"]
        let context = try NIOSSLContext(configuration: tls)
        let accepted = self.accepted
        channel = try await ServerBootstrap(group: group)
            .childChannelInitializer { channel in
                accepted.value.withLock { $0 += 1 }
                return channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(NIOSSLServerHandler(context: context))
                    try channel.pipeline.syncOperations.addHandler(BreaksProtocol())
                }
            }
            .bind(host: "127.0.0.1", port: 0).get()
        port = channel.localAddress!.port!
    }

    func stop() async throws {
        try await channel.close()
        try await group.shutdownGracefully()
    }

    private final class KeptCount: Sendable {
        let value = Mutex(0)
    }

    private final class BreaksProtocol: ChannelInboundHandler, Sendable {
        typealias InboundIn = ByteBuffer

        func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
            if case .handshakeCompleted = event as? TLSUserEvent {
                // Length 4, type DATA, no flags, stream 0, then 4 bytes.
                let frame: [UInt8] = [0, 0, 4, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4]
                context.writeAndFlush(NIOAny(ByteBuffer(bytes: frame)), promise: nil)
            }
            context.fireUserInboundEventTriggered(event)
        }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {}
    }
}
