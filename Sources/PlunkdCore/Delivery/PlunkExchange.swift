import NIOCore
import NIOHTTP1

/// One request and its answer's completion, finished exactly once: by the answer, a
/// failure, or its deadline.
///
/// Unchecked `Sendable`: its state is touched only on the connections' loop, where its deadline,
/// answer and failure arrive.
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
            self.finish(.failure(PlunkTransportError.deadlineExceeded))
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

extension PlunkExchange {
    /// Writes the request in one flush: its head (with `Host`, which HTTP/2's codec turns
    /// into `:authority`), its body and its end. For a handler whose outbound type is
    /// `HTTPClientRequestPart`, over HTTP/1.1 or as an HTTP/2 stream.
    func writeRequest(to context: ChannelHandlerContext, authority: String) {
        var head = self.head
        head.headers.replaceOrAdd(name: "Host", value: authority)
        context.write(NIOAny(HTTPClientRequestPart.head(head)), promise: nil)
        context.write(NIOAny(HTTPClientRequestPart.body(.byteBuffer(body))), promise: nil)
        context.writeAndFlush(NIOAny(HTTPClientRequestPart.end(nil)), promise: nil)
    }
}
