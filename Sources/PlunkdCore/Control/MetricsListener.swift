import Foundation
import Logging
import NIOCore
import NIOHTTP1
import NIOPosix

/// `GET /metrics` on a TCP address, for a Prometheus that cannot reach the Unix socket.
/// Off unless `metrics.listen` is set; it serves nothing else, so events and control
/// commands never leave the socket.
public final class MetricsListener: Sendable {
    private let channel: any Channel

    /// Binds `host:port` and serves what `render` returns.
    public init(host: String, port: Int, group: any EventLoopGroup, render: @escaping @Sendable () -> String) async throws {
        channel = try await ServerBootstrap(group: group)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline(withErrorHandling: true)
                    try channel.pipeline.syncOperations.addHandler(MetricsHTTPHandler(render: render))
                }
            }
            .bind(host: host, port: port).get()
    }

    public var port: Int? { channel.localAddress?.port }

    public func close() async {
        try? await channel.close()
    }
}

private final class MetricsHTTPHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    private let render: @Sendable () -> String
    private var head: HTTPRequestHead?

    init(render: @escaping @Sendable () -> String) {
        self.render = render
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let request):
            head = request
        case .body:
            break
        case .end:
            guard let request = head else { return }
            head = nil
            let path = request.uri.split(separator: "?").first.map(String.init) ?? request.uri
            guard request.method == .GET && path == "/metrics" else {
                HTTPResponseWriter.write(
                    .notFound, body: "only GET /metrics is served here\n", contentType: "text/plain", answering: request,
                    close: !request.isKeepAlive, context: context)
                return
            }
            // Rendering reads the sender and the store, which may block: not on this loop.
            let loopBound = NIOLoopBound(context, eventLoop: context.eventLoop)
            let render = self.render
            ControlResponderQueue.queue.async {
                let body = render()
                loopBound.eventLoop.execute {
                    HTTPResponseWriter.write(
                        .ok, body: body, contentType: "text/plain; version=0.0.4; charset=utf-8", answering: request,
                        close: !request.isKeepAlive, context: loopBound.value)
                }
            }
        }
    }
}
