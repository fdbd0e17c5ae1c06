import NIOCore
import NIOHTTP1

/// One request as a stream of an HTTP/2 connection: written as soon as the stream is
/// open, finished when its answer's end is read. A deadline that passes resets the stream
/// (the connection and its other streams carry on).
final class PlunkStreamHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPClientResponsePart
    typealias OutboundOut = HTTPClientRequestPart

    private let exchange: PlunkExchange
    private let authority: String
    /// Called once, when the stream is done with (answered, failed or closed).
    private var ended: (() -> Void)?
    private var answer = PlunkAnswerReader()
    private var written = false

    init(exchange: PlunkExchange, authority: String, ended: @escaping @Sendable () -> Void) {
        self.exchange = exchange
        self.authority = authority
        self.ended = ended
    }

    func handlerAdded(context: ChannelHandlerContext) {
        if context.channel.isActive { write(context) }
    }

    func channelActive(context: ChannelHandlerContext) {
        write(context)
        context.fireChannelActive()
    }

    private func write(_ context: ChannelHandlerContext) {
        guard !written else { return }
        written = true
        guard !exchange.isFinished else {
            end(context, close: true)
            return
        }
        let channel = context.channel
        exchange.onDeadline = { channel.close(promise: nil) }
        exchange.writeRequest(to: context, authority: authority)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head):
            // An interim answer (100 Continue) is not the answer.
            if head.status.code >= 200 { answer.read(head) }
        case .body(let buffer):
            answer.read(buffer)
        case .end:
            exchange.finish(.success(answer.take()))
            end(context, close: false)
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        exchange.finish(.failure(error))
        end(context, close: true)
    }

    func channelInactive(context: ChannelHandlerContext) {
        exchange.finish(.failure(PlunkTransportError.closedBeforeAnswer))
        end(context, close: false)
        context.fireChannelInactive()
    }

    private func end(_ context: ChannelHandlerContext, close: Bool) {
        if close { context.close(promise: nil) }
        let ended = self.ended
        self.ended = nil
        ended?()
    }
}

/// Calls its action once, however often it is called; confined to the connections' loop.
///
/// Unchecked `Sendable`: `action` is touched only on the connections' loop, where the NIO callbacks
/// that carry it run.
final class StreamEnded: @unchecked Sendable {
    private var action: (() -> Void)?

    init(_ action: @escaping () -> Void) {
        self.action = action
    }

    func call() {
        let action = self.action
        self.action = nil
        action?()
    }
}
