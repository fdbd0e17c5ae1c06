import NIOCore
import NIOHTTP1

/// Tells NDJSON from HTTP by the first byte a client sends, then gets out of the way.
///
/// An HTTP request starts with a method name (capital letters); an NDJSON line starts
/// with `{` or whitespace. Anything else goes to the NDJSON handler, which answers each
/// garbage line with an error reply, so a confused client learns what went wrong.
final class FramingSniffer: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer

    private let committer: GroupCommitter
    private let validator: EventValidator
    private let control: (any ControlResponder)?

    init(committer: GroupCommitter, validator: EventValidator, control: (any ControlResponder)?) {
        self.committer = committer
        self.validator = validator
        self.control = control
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let buffer = unwrapInboundIn(data)
        guard let first = buffer.readableBytesView.first else { return }
        do {
            let pipeline = context.pipeline.syncOperations
            if (UInt8(ascii: "A")...UInt8(ascii: "Z")).contains(first) {
                try pipeline.configureHTTPServerPipeline(withPipeliningAssistance: true, withErrorHandling: true)
                try pipeline.addHandler(HTTPIngestHandler(committer: committer, validator: validator, control: control))
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

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        switch event {
        case ChannelEvent.inputClosed, IngestConnectionEvent.drain:
            // Nothing was sent yet: there is nothing to answer.
            context.close(promise: nil)
        case let idle as IdleStateHandler.IdleStateEvent where idle == .all:
            context.close(promise: nil)
        default:
            context.fireUserInboundEventTriggered(event)
        }
    }
}
