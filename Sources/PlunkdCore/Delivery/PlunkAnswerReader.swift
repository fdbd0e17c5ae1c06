import Foundation
import NIOCore
import NIOHTTP1

/// Reads one answer from Plunk, the same over HTTP/1.1 and HTTP/2: the status,
/// `Retry-After`, the `RateLimit-*` headers and the first 4 KiB of the body. The rest is
/// dropped, so a large error page cannot grow memory or turn a clear status into a
/// body-size error.
struct PlunkAnswerReader {
    private var status = 0
    private var retryAfter: String?
    private var rateLimit: RateLimitHeaders?
    private var body = Data()
    /// What the head said of the connection (HTTP/1.1 only).
    private(set) var keepAlive = true

    mutating func read(_ head: HTTPResponseHead) {
        read(status: Int(head.status.code)) { head.headers.first(name: $0) }
        keepAlive = head.isKeepAlive
    }

    /// The status and the header fields `field` looks up by name.
    mutating func read(status: Int, field: (String) -> String?) {
        self.status = status
        retryAfter = field("Retry-After")
        rateLimit = RateLimitHeaders.read(field)
    }

    mutating func read(_ buffer: ByteBuffer) {
        let room = PlunkAnswer.keptBodyBytes - body.count
        if room > 0 { body.append(contentsOf: buffer.readableBytesView.prefix(room)) }
    }

    /// The answer read, and a fresh reader for the next.
    mutating func take() -> PlunkAnswer {
        let answer = PlunkAnswer.response(status: status, retryAfter: retryAfter, rateLimit: rateLimit, body: body)
        self = PlunkAnswerReader()
        return answer
    }
}
