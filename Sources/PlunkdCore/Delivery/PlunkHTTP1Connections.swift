import AsyncHTTPClient
import Foundation
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL

/// Plunk's requests over keep-alive HTTP/1.1 connections of plunkd's own, all on one event
/// loop: for `http://` and for `plunk.http_version: http1`, without a proxy.
///
/// Why not async-http-client here: profiled with answers after 20 ms, its per-request
/// machinery (the request's validation and lowercased headers, the pool's state machine
/// behind a lock, the request bag's, the head and the body written and flushed apart,
/// two syscalls) was about a third of delivery's CPU. This path keeps one exchange per
/// connection, writes each request in one flush, and answers on the loop that read it,
/// which is the sender's own. NIO still does the framing (`HTTPRequestEncoder`,
/// `HTTPResponseDecoder`) and NIOSSL the TLS. HTTP/2 and proxies stay with
/// async-http-client (`PlunkClient`).
///
/// Failures carry async-http-client's and NIO's own error types, so `TransportFailureText`
/// words them the same either way.
final class PlunkHTTP1Connections: @unchecked Sendable {
    struct Target: Sendable {
        var host: String
        var port: Int
        var tls: Bool
        /// The `Host` header's value.
        var authority: String
    }

    private let loop: any EventLoop
    private let target: Target
    private let limit: Int
    private let connectTimeout: TimeAmount
    private let idleTimeout = TimeAmount.seconds(60)

    // Confined to `loop`.
    private var tlsContext: Result<NIOSSLContext, any Error>?
    private var idle: [PlunkExchangeHandler] = []
    private var open = 0
    private var waiting = CircularBuffer<PlunkExchange>()
    private var all: [ObjectIdentifier: PlunkExchangeHandler] = [:]
    private var closed = false

    init(target: Target, limit: Int, connectTimeout: TimeAmount, loop: any EventLoop, tls: TLSConfiguration?) {
        self.target = target
        self.limit = max(1, limit)
        self.connectTimeout = connectTimeout
        self.loop = loop
        if target.tls { tlsContext = Self.context(tls) }
    }

    /// The system's roots (or `configuration`'s), offering only HTTP/1.1 in ALPN.
    private static func context(_ configuration: TLSConfiguration?) -> Result<NIOSSLContext, any Error> {
        var configuration = configuration ?? .makeClientConfiguration()
        configuration.applicationProtocols = ["http/1.1"]
        return Result { try NIOSSLContext(configuration: configuration) }
    }

    /// Sends `exchange` on an idle connection, a new one, or the first that frees up.
    func send(_ exchange: PlunkExchange) {
        onLoop {
            guard !self.closed else {
                exchange.finish(.failure(HTTPClientError.alreadyShutdown))
                return
            }
            exchange.armDeadline(on: self.loop)
            if let connection = self.takeIdle() {
                connection.start(exchange)
            } else if self.open < self.limit {
                self.connect(for: exchange)
            } else {
                self.waiting.append(exchange)
            }
        }
    }

    /// New connections trust `configuration` (nil: the system's roots); idle ones close, so
    /// the next requests use it. A request in flight ends on its own connection.
    func useTLS(_ configuration: TLSConfiguration?) {
        guard target.tls else { return }
        onLoop {
            self.tlsContext = Self.context(configuration)
            let idle = self.idle
            self.idle = []
            idle.forEach { $0.close() }
        }
    }

    /// Fails what waits and what is in flight, and closes every connection.
    func shutdown() async {
        let done = loop.makePromise(of: Void.self)
        onLoop {
            self.closed = true
            while let exchange = self.waiting.popFirst() { exchange.finish(.failure(HTTPClientError.cancelled)) }
            let connections = Array(self.all.values)
            self.idle = []
            for connection in connections {
                connection.fail(HTTPClientError.cancelled)
                connection.close()
            }
            done.succeed()
        }
        try? await done.futureResult.get()
    }

    private func onLoop(_ work: @escaping @Sendable () -> Void) {
        if loop.inEventLoop { work() } else { loop.execute(work) }
    }

    private func connect(for exchange: PlunkExchange) {
        open += 1
        let tls: NIOSSLContext?
        do {
            tls = try tlsContext?.get()
        } catch {
            open -= 1
            exchange.finish(.failure(error))
            return
        }
        let handler = PlunkExchangeHandler(idleTimeout: idleTimeout)
        handler.onIdle = { [weak self] in self?.becameIdle($0) }
        handler.onClose = { [weak self] in self?.connectionClosed($0) }
        let serverHostname = Self.isIPAddress(target.host) ? nil : target.host
        let authority = target.authority
        ClientBootstrap(group: loop)
            .connectTimeout(connectTimeout)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    let operations = channel.pipeline.syncOperations
                    if let tls { try operations.addHandler(NIOSSLClientHandler(context: tls, serverHostname: serverHostname)) }
                    try operations.addHTTPClientHandlers()
                    try operations.addHandler(handler)
                }
            }
            .connect(host: target.host, port: target.port)
            .assumeIsolated()
            .whenComplete { result in
                switch result {
                case .success:
                    self.all[ObjectIdentifier(handler)] = handler
                    handler.authority = authority
                    if exchange.isFinished {
                        self.becameIdle(handler)
                    } else {
                        handler.start(exchange)
                    }
                case .failure(let error):
                    self.open -= 1
                    exchange.finish(.failure(Self.connectFailure(error)))
                    // One that waited gets a try of its own rather than wait for a free slot.
                    if let next = self.waiting.popFirst() { self.connect(for: next) }
                }
            }
    }

    /// The most recently used idle connection still open; closed ones are dropped, and
    /// their slots free when their close is seen.
    private func takeIdle() -> PlunkExchangeHandler? {
        while let connection = idle.popLast() {
            if !connection.isClosed { return connection }
        }
        return nil
    }

    private func becameIdle(_ connection: PlunkExchangeHandler) {
        while let next = waiting.popFirst() {
            guard next.isFinished else {
                connection.start(next)
                return
            }
        }
        idle.append(connection)
    }

    private func connectionClosed(_ connection: PlunkExchangeHandler) {
        guard all.removeValue(forKey: ObjectIdentifier(connection)) != nil else { return }
        open -= 1
        idle.removeAll { $0 === connection }
        if !closed, let next = waiting.popFirst() { connect(for: next) }
    }

    /// A connect that timed out reads as async-http-client's does.
    private static func connectFailure(_ error: any Error) -> any Error {
        if case ChannelError.connectTimeout = error { return HTTPClientError.connectTimeout }
        return error
    }

    private static func isIPAddress(_ host: String) -> Bool {
        (try? SocketAddress(ipAddress: host, port: 0)) != nil
    }
}

/// One request and its answer's completion, finished exactly once: by the answer, a
/// failure, or its deadline.
final class PlunkExchange: @unchecked Sendable {
    let head: HTTPRequestHead
    let body: ByteBuffer
    private let deadline: NIODeadline
    private let completion: @Sendable (Result<PlunkAnswer, any Error>) -> Void
    private var deadlineTask: Scheduled<Void>?
    /// Called when the deadline passes while a connection carries the request: that
    /// connection closes, so a late answer cannot be read as the next request's.
    var onDeadline: (() -> Void)?
    private(set) var isFinished = false

    init(
        head: HTTPRequestHead, body: ByteBuffer, deadline: NIODeadline,
        completion: @escaping @Sendable (Result<PlunkAnswer, any Error>) -> Void
    ) {
        self.head = head
        self.body = body
        self.deadline = deadline
        self.completion = completion
    }

    func armDeadline(on loop: any EventLoop) {
        deadlineTask = loop.assumeIsolated().scheduleTask(deadline: deadline) {
            // Finished first: closing the connection makes its decoder report the stream
            // cut short, which would otherwise be the failure the operator reads.
            let closeConnection = self.onDeadline
            self.finish(.failure(HTTPClientError.deadlineExceeded))
            closeConnection?()
        }
    }

    func finish(_ result: Result<PlunkAnswer, any Error>) {
        guard !isFinished else { return }
        isFinished = true
        deadlineTask?.cancel()
        deadlineTask = nil
        onDeadline = nil
        completion(result)
    }
}
