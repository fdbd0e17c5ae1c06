import NIOCore
import NIOHTTP1

/// The one way plunkd writes an HTTP/1.1 answer (the socket's routes and `/metrics` over
/// TCP): head with Content-Type and Content-Length, the body, the end; then the
/// connection closes when `close` says so.
enum HTTPResponseWriter {
    /// - Parameter announce: whether to send `Connection: keep-alive`/`close`; not for a
    ///   refusal whose caller already set `Connection: close` in `extraHeaders`.
    static func write(
        _ status: HTTPResponseStatus, body: String, contentType: String, answering request: HTTPRequestHead,
        extraHeaders: HTTPHeaders = [:], close: Bool, announce: Bool = true, context: ChannelHandlerContext
    ) {
        var headers = extraHeaders
        headers.add(name: "Content-Type", value: contentType)
        headers.add(name: "Content-Length", value: String(body.utf8.count))
        if announce {
            headers.add(name: "Connection", value: close ? "close" : "keep-alive")
        }
        let head = HTTPResponseHead(version: request.version, status: status, headers: headers)
        context.write(NIOAny(HTTPServerResponsePart.head(head)), promise: nil)
        context.write(NIOAny(HTTPServerResponsePart.body(.byteBuffer(context.channel.allocator.buffer(string: body)))), promise: nil)
        let sent = context.writeAndFlush(NIOAny(HTTPServerResponsePart.end(nil)))
        if close {
            let channel = context.channel
            sent.whenComplete { _ in channel.close(promise: nil) }
        }
    }
}
