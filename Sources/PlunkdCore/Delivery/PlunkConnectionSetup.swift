import Foundation
import NIOCore
import NIOHTTP1
import NIOHTTP2
import NIOSSL
import NIOTLS

/// A new connection to Plunk, ready for requests: HTTP/1.1 (one exchange at a time) or
/// HTTP/2 (a stream per request), as TLS's ALPN settled it.
enum ReadyConnection {
    case http1(PlunkExchangeHandler)
    case http2(PlunkHTTP2Streams)
}

/// How a connection is set up, step by step, on its own event loop: through the proxy's
/// CONNECT tunnel when there is one, then TLS when Plunk is `https://`, then the protocol
/// the handshake agreed. Each step's handler fails the attempt with what went wrong
/// (the proxy's refusal, the certificate, a close) in the error types
/// `TransportFailureText` words.
///
/// Unchecked `Sendable`: `finished` and `ready` are touched only on the connection's loop, where
/// every step runs.
final class PlunkConnectionSetup: @unchecked Sendable {
    struct Plan {
        /// The TLS context for Plunk, nil for `http://`.
        var tls: NIOSSLContext?
        var serverHostname: String?
        /// The tunnel to open first: Plunk's `host:port` and the proxy's credentials.
        var tunnel: (authority: String, authorization: String?)?
        var idleTimeout: TimeAmount
        /// Plunk's `host[:port]`, HTTP/2's `:authority`.
        var authority: String
    }

    let plan: Plan
    // Confined to the connection's loop.
    private let ready: EventLoopPromise<ReadyConnection>
    private var finished = false

    init(plan: Plan, ready: EventLoopPromise<ReadyConnection>) {
        self.plan = plan
        self.ready = ready
    }

    /// The first handlers, added when the channel is made.
    func begin(_ channel: any Channel) throws {
        if let tunnel = plan.tunnel {
            let operations = channel.pipeline.syncOperations
            let encoder = HTTPRequestEncoder()
            let decoder = ByteToMessageHandler(HTTPResponseDecoder(leftOverBytesStrategy: .forwardBytes))
            try operations.addHandler(encoder)
            try operations.addHandler(decoder)
            try operations.addHandler(
                ProxyTunnelHandler(
                    authority: tunnel.authority, authorization: tunnel.authorization, setup: self, removing: [encoder, decoder]))
        } else {
            try transportReady(channel)
        }
    }

    /// The bytes reach Plunk now (directly, or through the tunnel): TLS, or plain HTTP/1.1.
    func transportReady(_ channel: any Channel) throws {
        if let tls = plan.tls {
            try channel.pipeline.syncOperations.addHandler(NIOSSLClientHandler(context: tls, serverHostname: plan.serverHostname))
            try channel.pipeline.syncOperations.addHandler(ProtocolAgreement(setup: self))
        } else {
            try speak(http2: false, channel)
        }
    }

    /// Adds the handlers for the protocol agreed and hands the connection over.
    func speak(http2: Bool, _ channel: any Channel) throws {
        let operations = channel.pipeline.syncOperations
        if http2 {
            // No multiplexer: requests are written as frames (`PlunkHTTP2Streams`). Push
            // is turned off, so Plunk opens no streams of its own.
            let settings = nioDefaultSettings + [HTTP2Setting(parameter: .enablePush, value: 0)]
            try operations.addHandler(NIOHTTP2Handler(mode: .client, initialSettings: settings))
            let streams = PlunkHTTP2Streams(authority: plan.authority, tls: plan.tls != nil, idleTimeout: plan.idleTimeout)
            try operations.addHandler(streams)
            succeed(.http2(streams))
        } else {
            try operations.addHTTPClientHandlers()
            let handler = PlunkExchangeHandler(idleTimeout: plan.idleTimeout)
            try operations.addHandler(handler)
            succeed(.http1(handler))
        }
    }

    func succeed(_ connection: ReadyConnection) {
        guard !finished else { return }
        finished = true
        ready.succeed(connection)
    }

    /// Fails the attempt (once) and closes the connection, if there is one.
    func fail(_ error: any Error, _ channel: (any Channel)?) {
        guard !finished else { return }
        finished = true
        ready.fail(error)
        channel?.close(promise: nil)
    }
}

/// Opens the proxy's tunnel: `CONNECT host:port`, then, on a 200, steps aside (with the
/// HTTP/1.1 codec it spoke to the proxy through) for TLS to Plunk.
private final class ProxyTunnelHandler: ConnectionSetupStep {
    typealias InboundIn = HTTPClientResponsePart
    typealias OutboundOut = HTTPClientRequestPart

    private let authority: String
    private let authorization: String?
    let setup: PlunkConnectionSetup
    private let removing: [any RemovableChannelHandler]
    private var status: HTTPResponseStatus?

    init(authority: String, authorization: String?, setup: PlunkConnectionSetup, removing: [any RemovableChannelHandler]) {
        self.authority = authority
        self.authorization = authorization
        self.setup = setup
        self.removing = removing
    }

    func handlerAdded(context: ChannelHandlerContext) {
        if context.channel.isActive { sendConnect(context) }
    }

    func channelActive(context: ChannelHandlerContext) {
        sendConnect(context)
        context.fireChannelActive()
    }

    private func sendConnect(_ context: ChannelHandlerContext) {
        var headers = HTTPHeaders()
        headers.add(name: "Host", value: authority)
        if let authorization { headers.add(name: "Proxy-Authorization", value: authorization) }
        let head = HTTPRequestHead(version: .http1_1, method: .CONNECT, uri: authority, headers: headers)
        context.write(wrapOutboundOut(.head(head)), promise: nil)
        context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head):
            status = head.status
        case .body:
            break
        case .end:
            guard status == .ok else {
                setup.fail(
                    status == .proxyAuthenticationRequired
                        ? PlunkTransportError.proxyAuthenticationRequired : PlunkTransportError.proxyRefusedTunnel, context.channel)
                return
            }
            // TLS starts once the proxy's codec is gone: the response decoder, whose read
            // this is, leaves only after it, and it would take TLS's bytes for requests.
            let channel = context.channel
            let setup = setup
            let removed = removing.map { channel.pipeline.syncOperations.removeHandler($0) }
            context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
            EventLoopFuture.andAllSucceed(removed, on: channel.eventLoop).assumeIsolated().whenComplete { result in
                do {
                    try result.get()
                    try setup.transportReady(channel)
                } catch {
                    setup.fail(error, channel)
                }
            }
        }
    }
}

/// Waits for TLS's handshake and the protocol ALPN agreed ("h2", else HTTP/1.1); a failed
/// handshake (an untrusted certificate, another name) fails the attempt with its error.
private final class ProtocolAgreement: ConnectionSetupStep {
    typealias InboundIn = ByteBuffer

    let setup: PlunkConnectionSetup

    init(setup: PlunkConnectionSetup) {
        self.setup = setup
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        guard case .handshakeCompleted(let agreed) = event as? TLSUserEvent else {
            context.fireUserInboundEventTriggered(event)
            return
        }
        let channel = context.channel
        context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
        do {
            try setup.speak(http2: agreed == "h2", channel)
        } catch {
            setup.fail(error, channel)
        }
    }
}

/// A handler that sets a connection up: an error or a close before it is done fails the
/// attempt (once), with the error, or as closed before an answer.
private protocol ConnectionSetupStep: ChannelInboundHandler, RemovableChannelHandler {
    var setup: PlunkConnectionSetup { get }
}

extension ConnectionSetupStep {
    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        setup.fail(error, context.channel)
    }

    func channelInactive(context: ChannelHandlerContext) {
        setup.fail(PlunkTransportError.closedBeforeAnswer, context.channel)
        context.fireChannelInactive()
    }
}
