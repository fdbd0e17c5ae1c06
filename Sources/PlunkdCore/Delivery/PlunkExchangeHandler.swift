import Foundation
import NIOCore
import NIOHTTP1

/// The last handler of an HTTP/1.1 connection of `PlunkConnections`: writes one request at
/// a time and reads its answer (`PlunkAnswerReader`). Then the connection goes back to the
/// pool, or closes if the answer said so.
///
/// Unchecked `Sendable`: a channel handler, touched only on its channel's loop (the connections'
/// loop), where the callbacks that capture it run.
final class PlunkExchangeHandler: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = HTTPClientResponsePart
    typealias OutboundOut = HTTPClientRequestPart

    var onIdle: ((PlunkExchangeHandler) -> Void)?
    var onClose: ((PlunkExchangeHandler) -> Void)?
    var authority = ""
    private let idleTimeout: TimeAmount
    private var context: ChannelHandlerContext?
    private var current: PlunkExchange?
    private var idleTimer: Scheduled<Void>?
    private var answer = PlunkAnswerReader()
    /// Closed or closing: a connection in the pool that the server closed while idle is
    /// passed over, not handed a request.
    private(set) var isClosed = false

    init(idleTimeout: TimeAmount) {
        self.idleTimeout = idleTimeout
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
    }

    /// Writes `exchange`'s request in one flush. Only while no other is in flight.
    func start(_ exchange: PlunkExchange) {
        guard let context, !isClosed else {
            exchange.finish(.failure(PlunkTransportError.closedBeforeAnswer))
            return
        }
        idleTimer?.cancel()
        idleTimer = nil
        current = exchange
        answer = PlunkAnswerReader()
        exchange.onDeadline = { [weak self] in self?.close() }
        exchange.writeRequest(to: context, authority: authority)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head):
            answer.read(head)
        case .body(let buffer):
            answer.read(buffer)
        case .end:
            guard let exchange = current else {
                // An answer nobody asked for: the connection is out of step; drop it.
                close()
                return
            }
            current = nil
            let keepAlive = answer.keepAlive
            let answer = answer.take()
            // An answer that ended with the connection (no length, read to the close) is
            // not kept-alive whatever its head said.
            if keepAlive, context.channel.isActive {
                // Back in the pool before the answer is handed on: the request it frees
                // then goes out on this connection rather than open another.
                armIdleTimer(context: context)
                onIdle?(self)
                exchange.finish(.success(answer))
            } else {
                close()
                exchange.finish(.success(answer))
            }
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        isClosed = true
        fail(PlunkTransportError.closedBeforeAnswer)
        idleTimer?.cancel()
        onClose?(self)
        onClose = nil
        onIdle = nil
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        fail(error)
        close()
    }

    /// Fails the request in flight, if any.
    func fail(_ error: any Error) {
        guard let exchange = current else { return }
        current = nil
        exchange.finish(.failure(error))
    }

    func close() {
        guard !isClosed, let context else { return }
        isClosed = true
        context.close(promise: nil)
    }

    private func armIdleTimer(context: ChannelHandlerContext) {
        idleTimer = context.eventLoop.assumeIsolated().scheduleTask(in: idleTimeout) { [weak self] in
            guard let self, self.current == nil else { return }
            self.close()
        }
    }
}
