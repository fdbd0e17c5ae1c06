import NIOCore
import NIOHTTP1

/// Tells NDJSON from HTTP by the first byte a client sends, then gets out of the way.
///
/// An HTTP request starts with a method name (capital letters); an NDJSON line starts
/// with `{` or whitespace. Anything else goes to the NDJSON handler, which answers each
/// garbage line with an error reply, so a confused client learns what went wrong.
final class FramingSniffer: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private let committer: GroupCommitter
    private let validator: EventValidator
    private let control: (any ControlResponder)?
    private let routes: [IngestRoute]
    /// Set when the peer may not use the socket: the first request is answered with this
    /// in its own framing, then the connection is closed.
    private let peerRefusal: String?

    init(
        committer: GroupCommitter, validator: EventValidator, routes: [IngestRoute] = [], control: (any ControlResponder)?,
        peerRefusal: String? = nil
    ) {
        self.routes = routes
        self.committer = committer
        self.validator = validator
        self.control = control
        self.peerRefusal = peerRefusal
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let buffer = unwrapInboundIn(data)
        guard let first = buffer.readableBytesView.first else { return }
        if let peerRefusal {
            refuse(peerRefusal, http: (UInt8(ascii: "A")...UInt8(ascii: "Z")).contains(first), context: context)
            return
        }
        do {
            let pipeline = context.pipeline.syncOperations
            if (UInt8(ascii: "A")...UInt8(ascii: "Z")).contains(first) {
                try pipeline.configureHTTPServerPipeline(withPipeliningAssistance: true, withErrorHandling: true)
                try pipeline.addHandler(HTTPIngestHandler(committer: committer, validator: validator, routes: routes, control: control))
            } else {
                try pipeline.addHandler(NDJSONIngestHandler(committer: committer, validator: validator))
            }
        } catch {
            context.close(promise: nil)
            return
        }
        context.fireChannelRead(data)
        context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
    }

    private func refuse(_ message: String, http: Bool, context: ChannelHandlerContext) {
        committer.metrics.refusedPeer.increment()
        let text: String
        if http {
            let body = PlunkErrorBody.json(.forbidden, message)
            text = "HTTP/1.1 403 Forbidden\r\nContent-Type: application/json\r\nContent-Length: \(body.utf8.count)\r\nConnection: close\r\n\r\n\(body)"
        } else {
            text = NDJSONIngestHandler.refusal(message, retryable: false) + "\n"
        }
        let channel = context.channel
        context.writeAndFlush(wrapOutboundOut(ByteBuffer(string: text))).whenComplete { _ in channel.close(promise: nil) }
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        switch event {
        case ChannelEvent.inputClosed, is ChannelShouldQuiesceEvent:
            // Nothing was sent yet: there is nothing to answer.
            context.close(promise: nil)
        case let idle as IdleStateHandler.IdleStateEvent where idle == .all:
            context.close(promise: nil)
        default:
            context.fireUserInboundEventTriggered(event)
        }
    }
}
