import Foundation
import NIOCore
import NIOHTTP1
import NIOHTTP2
import NIOPosix
import NIOSSL

/// Every request to Plunk, on connections of plunkd's own, all on one event loop: over
/// `http://` or TLS, directly or through a proxy's CONNECT tunnel, as HTTP/2 streams of
/// one connection when TLS's ALPN agrees on h2 (`plunk.http_version: auto`), else over
/// keep-alive HTTP/1.1 connections, one request in flight on each.
///
/// Why not async-http-client, which did HTTP/2 and proxies here before: measured over
/// TLS against the same stand-in (docs/benchmarks.md), its path cost about twice the
/// CPU per delivered event of this one. Profiled with answers after 20 ms, its per-request
/// machinery (the request's validation and lowercased headers, the pool's state machine
/// behind a lock, the request bag's, the head and the body written and flushed apart)
/// was about a third of delivery's CPU. This path keeps one exchange per HTTP/1.1
/// connection or stream, writes each request in one flush, and answers on the loop that
/// read it, which is the sender's own. NIO still does the framing (`HTTPRequestEncoder`,
/// `HTTPResponseDecoder`, swift-nio-http2's `NIOHTTP2Handler`) and NIOSSL the TLS; over
/// HTTP/2 requests are frames on the connection (`PlunkHTTP2Streams`, which says why).
///
/// Failures are `PlunkTransportError`s or NIO's and NIOSSL's own errors, which
/// `TransportFailureText` words.
///
/// Unchecked `Sendable`: the state marked below is confined to `loop`, and every entry point hops
/// onto it.
final class PlunkConnections: @unchecked Sendable {
    struct Target: Sendable {
        var host: String
        var port: Int
        var tls: Bool
        /// The `Host` header's value (HTTP/2's `:authority`).
        var authority: String
        /// Offer h2 in ALPN (`auto`); HTTP/1.1 only otherwise.
        var offersHTTP2: Bool
        /// The proxy to tunnel through (`CONNECT`), with its `Proxy-Authorization`.
        var proxy: (host: String, port: Int, authorization: String?)?
    }

    private let loop: any EventLoop
    private let target: Target
    private let limit: Int
    private let connectTimeout: TimeAmount
    /// A connection with nothing in flight this long is closed (HTTP/1.1 and HTTP/2
    /// alike): a NAT or firewall that forgot it would otherwise swallow the next requests
    /// until each one's deadline.
    private let idleTimeout: TimeAmount

    // Confined to `loop`.
    private var tlsContext: Result<NIOSSLContext, any Error>?
    private var idle: [PlunkExchangeHandler] = []
    private var open = 0
    private var waiting = CircularBuffer<PlunkExchange>()
    private var all: [ObjectIdentifier: PlunkExchangeHandler] = [:]
    private var closed = false
    /// The HTTP/2 connection, once ALPN agreed on h2: every request is a stream of it.
    private var http2: PlunkHTTP2Streams?
    /// Streams in flight on every HTTP/2 connection, current or retired.
    private var streams = 0
    /// HTTP/2 connections replaced (new roots on SIGHUP, a GOAWAY), each closed once its
    /// own streams end, while the current one carries on.
    private var retired: [PlunkHTTP2Streams] = []
    /// A connection is being set up whose protocol is not known yet: requests wait for it
    /// rather than open more, which over h2 would be connections nobody needs.
    private var negotiating = false
    /// The last connection agreed on HTTP/1.1: the next ones are opened side by side.
    private var speaksHTTP1: Bool

    init(
        target: Target, limit: Int, connectTimeout: TimeAmount, loop: any EventLoop, tls: TLSConfiguration?,
        idleTimeout: TimeAmount = .seconds(60)
    ) {
        self.target = target
        self.idleTimeout = idleTimeout
        self.limit = max(1, limit)
        self.connectTimeout = connectTimeout
        self.loop = loop
        speaksHTTP1 = !(target.tls && target.offersHTTP2)
        if target.tls { tlsContext = Self.context(tls, offersHTTP2: target.offersHTTP2) }
    }

    /// The system's roots (or `configuration`'s), offering h2 in ALPN only for `auto`.
    private static func context(_ configuration: TLSConfiguration?, offersHTTP2: Bool) -> Result<NIOSSLContext, any Error> {
        var configuration = configuration ?? .makeClientConfiguration()
        configuration.applicationProtocols = offersHTTP2 ? ["h2", "http/1.1"] : ["http/1.1"]
        return Result { try NIOSSLContext(configuration: configuration) }
    }

    /// Sends `exchange` as a stream, on an idle connection, a new one, or the first that frees up.
    func send(_ exchange: PlunkExchange) {
        onLoop {
            guard !self.closed else {
                exchange.finish(.failure(PlunkTransportError.shutDown))
                return
            }
            exchange.armDeadline(on: self.loop)
            self.dispatch(exchange)
        }
    }

    private func dispatch(_ exchange: PlunkExchange) {
        if http2 != nil {
            if streams < limit { openStream(for: exchange) } else { waiting.append(exchange) }
        } else if let connection = takeIdle() {
            connection.start(exchange)
        } else if open < limit, !negotiating {
            connect(for: exchange)
        } else {
            waiting.append(exchange)
        }
    }

    /// New connections trust `configuration` (nil: the system's roots); idle ones close, so
    /// the next requests use it, and so does an HTTP/2 connection once its streams end. A
    /// request in flight ends on its own connection.
    func useTLS(_ configuration: TLSConfiguration?) {
        guard target.tls else { return }
        onLoop {
            self.tlsContext = Self.context(configuration, offersHTTP2: self.target.offersHTTP2)
            let idle = self.idle
            self.idle = []
            idle.forEach { $0.close() }
            if let http2 = self.http2 {
                self.http2 = nil
                self.retire(http2)
            }
        }
    }

    /// Fails what waits and what is in flight, and closes every connection.
    func shutdown() async {
        let done = loop.makePromise(of: Void.self)
        onLoop {
            self.closed = true
            while let exchange = self.waiting.popFirst() { exchange.finish(.failure(PlunkTransportError.shutDown)) }
            let connections = Array(self.all.values)
            self.idle = []
            for connection in connections {
                connection.fail(PlunkTransportError.shutDown)
                connection.close()
            }
            self.http2?.close()
            self.http2 = nil
            self.retired.forEach { $0.close() }
            self.retired = []
            done.succeed()
        }
        try? await done.futureResult.get()
    }

    private func onLoop(_ work: @escaping @Sendable () -> Void) {
        if loop.inEventLoop { work() } else { loop.execute(work) }
    }

    private func connect(for exchange: PlunkExchange) {
        open += 1
        negotiating = !speaksHTTP1
        let tls: NIOSSLContext?
        do {
            tls = try tlsContext?.get()
        } catch {
            connectFailed(exchange, error)
            return
        }
        let ready = loop.makePromise(of: ReadyConnection.self)
        let plan = PlunkConnectionSetup.Plan(
            tls: tls, serverHostname: Self.isIPAddress(target.host) ? nil : target.host,
            tunnel: target.proxy.map { (HostAndPort(host: target.host, port: target.port).description, $0.authorization) }, idleTimeout: idleTimeout,
            authority: target.authority)
        let setup = PlunkConnectionSetup(plan: plan, ready: ready)
        ClientBootstrap(group: loop)
            .connectTimeout(connectTimeout)
            .channelOption(.tcpOption(.tcp_nodelay), value: 1)
            .channelInitializer { channel in channel.eventLoop.makeCompletedFuture { try setup.begin(channel) } }
            .connect(host: target.proxy?.host ?? target.host, port: target.proxy?.port ?? target.port)
            .whenFailure { setup.fail(Self.connectFailure($0), nil) }
        ready.futureResult.assumeIsolated().whenComplete { result in
            switch result {
            case .success(.http1(let handler)): self.http1Ready(handler, for: exchange)
            case .success(.http2(let connection)): self.http2Ready(connection, for: exchange)
            case .failure(let error): self.connectFailed(exchange, error)
            }
        }
    }

    private func connectFailed(_ exchange: PlunkExchange, _ error: any Error) {
        open -= 1
        negotiating = false
        exchange.finish(.failure(error))
        // One that waited gets a try of its own rather than wait for a free slot.
        if !closed, let next = waiting.popFirst() { connect(for: next) }
    }

    private func http1Ready(_ handler: PlunkExchangeHandler, for exchange: PlunkExchange) {
        negotiating = false
        speaksHTTP1 = true
        handler.authority = target.authority
        handler.onIdle = { [weak self] in self?.becameIdle($0) }
        handler.onClose = { [weak self] in self?.connectionClosed($0) }
        guard !closed else {
            handler.close()
            return
        }
        all[ObjectIdentifier(handler)] = handler
        if exchange.isFinished {
            becameIdle(handler)
        } else {
            handler.start(exchange)
        }
        // Requests that waited for the protocol open connections of their own now.
        while open < limit, let next = waiting.popFirst() { connect(for: next) }
    }

    private func http2Ready(_ connection: PlunkHTTP2Streams, for exchange: PlunkExchange) {
        negotiating = false
        speaksHTTP1 = false
        guard !closed else {
            connection.close()
            return
        }
        connection.onGoAway = { [weak self] in self?.retireHTTP2($0) }
        connection.onStreamEnded = { [weak self] in self?.streamEnded(on: $0) }
        connection.onClose = { [weak self] in self?.http2Closed($0) }
        http2 = connection
        openStream(for: exchange)
        while streams < limit, let next = waiting.popFirst() { openStream(for: next) }
    }

    private func openStream(for exchange: PlunkExchange) {
        guard let http2, !exchange.isFinished else { return }
        streams += 1
        http2.start(exchange)
    }

    private func streamEnded(on connection: PlunkHTTP2Streams) {
        streams -= 1
        closeRetiredIfIdle()
        guard !closed else { return }
        // The first that still wants an answer: one whose deadline passed while it waited
        // must not hold back the ones behind it.
        while let next = waiting.popFirst() {
            guard next.isFinished else {
                dispatch(next)
                return
            }
        }
    }

    private func http2Closed(_ connection: PlunkHTTP2Streams) {
        open -= 1
        retired.removeAll { $0 === connection }
        if http2 === connection { http2 = nil }
        if !closed, let next = waiting.popFirst() { dispatch(next) }
    }

    private func retireHTTP2(_ connection: PlunkHTTP2Streams) {
        guard http2 === connection else { return }
        http2 = nil
        retire(connection)
    }

    /// An HTTP/2 connection that takes no new streams closes once its own streams end.
    private func retire(_ connection: PlunkHTTP2Streams) {
        retired.append(connection)
        closeRetiredIfIdle()
    }

    private func closeRetiredIfIdle() {
        retired.removeAll { connection in
            guard connection.inFlight == 0 else { return false }
            connection.close()
            return true
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
        if !closed, let next = waiting.popFirst() { dispatch(next) }
    }

    /// A connect that timed out is named as such, not as NIO's channel error.
    private static func connectFailure(_ error: any Error) -> any Error {
        if case ChannelError.connectTimeout = error { return PlunkTransportError.connectTimeout }
        return error
    }

    private static func isIPAddress(_ host: String) -> Bool {
        (try? SocketAddress(ipAddress: host, port: 0)) != nil
    }
}
