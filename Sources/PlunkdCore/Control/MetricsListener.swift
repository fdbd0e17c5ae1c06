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
            let ok = request.method == .GET && path == "/metrics"
            let body = ok ? render() : "only GET /metrics is served here\n"
            var headers = HTTPHeaders()
            headers.add(name: "Content-Type", value: ok ? "text/plain; version=0.0.4; charset=utf-8" : "text/plain")
            headers.add(name: "Content-Length", value: String(body.utf8.count))
            context.write(wrapOutboundOut(.head(HTTPResponseHead(version: request.version, status: ok ? .ok : .notFound, headers: headers))), promise: nil)
            context.write(wrapOutboundOut(.body(.byteBuffer(context.channel.allocator.buffer(string: body)))), promise: nil)
            let keepAlive = request.isKeepAlive
            let channel = context.channel
            context.writeAndFlush(wrapOutboundOut(.end(nil))).whenComplete { _ in
                if !keepAlive { channel.close(promise: nil) }
            }
        }
    }
}
