import NIOCore
import NIOHPACK
import NIOHTTP1
import NIOHTTP2

/// Every request of one HTTP/2 connection, written as frames on the connection itself:
/// a HEADERS and a DATA frame per request, its answer's frames read by stream ID.
///
/// Why not swift-nio-http2's multiplexer, which served here before: it makes a child
/// channel per stream, with its own pipeline, codec (HTTP/2 frames to HTTP/1 parts and
/// back) and handler, for a request that is two frames out and two or three back. A
/// profile over TLS with answers after 20 ms put about a third of the Plunk loop's CPU
/// there, and HTTP/2 at 1.3× syslog-ng's CPU per event where HTTP/1.1 was at 0.9×
/// (docs/benchmarks.md). NIOHTTP2Handler still does the protocol: HPACK, the state of
/// every stream, SETTINGS, PING, the peer's concurrency limit and outbound flow control.
///
/// What the multiplexer did that is this handler's now: giving the inbound windows back
/// (`WINDOW_UPDATE`, for the connection and for a stream whose answer is long), and
/// numbering streams.
///
/// Unchecked `Sendable`: a channel handler, touched only on its channel's loop (the
/// connections' loop), where the callbacks that capture it run.
final class PlunkHTTP2Streams: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = HTTP2Frame
    typealias OutboundOut = HTTP2Frame

    /// Plunk sent GOAWAY, or the stream IDs ran out: no new stream may start here.
    var onGoAway: ((PlunkHTTP2Streams) -> Void)?
    /// A stream started by `start` is done with (answered, failed, reset): called once each.
    var onStreamEnded: ((PlunkHTTP2Streams) -> Void)?
    /// The connection closed; every stream in flight has ended before this.
    var onClose: ((PlunkHTTP2Streams) -> Void)?

    private let authority: String
    private let scheme: String
    private var context: ChannelHandlerContext?
    private var open: [HTTP2StreamID: OpenStream] = [:]
    private var nextStreamID = HTTP2StreamID(1)
    private var acceptsStreams = true
    private var isClosed = false

    /// The inbound window this side keeps open, for the connection and for each stream:
    /// HTTP/2's initial 65,535 bytes, given back once half of it is used.
    static let inboundWindow = 65_535

    private struct OpenStream {
        let exchange: PlunkExchange
        var answer = PlunkAnswerReader()
        var headRead = false
    }

    /// With no stream in flight this long, the connection closes, as an idle HTTP/1.1
    /// one does: one a NAT has forgotten would take the next requests, each failing only
    /// at its deadline, until TCP gave up on it minutes later.
    private let idleTimeout: TimeAmount
    private var idleTimer: Scheduled<Void>?

    init(authority: String, tls: Bool, idleTimeout: TimeAmount) {
        self.authority = authority
        scheme = tls ? "https" : "http"
        self.idleTimeout = idleTimeout
    }

    var inFlight: Int { open.count }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        armIdleTimer()
    }

    private func armIdleTimer() {
        guard let context, !isClosed else { return }
        idleTimer?.cancel()
        idleTimer = context.eventLoop.assumeIsolated().scheduleTask(in: idleTimeout) { [weak self] in
            guard let self, self.open.isEmpty else { return }
            self.close()
        }
    }

    /// Writes `exchange`'s request as a new stream, in one flush.
    func start(_ exchange: PlunkExchange) {
        guard let context, acceptsStreams, !isClosed else {
            exchange.finish(.failure(PlunkTransportError.closedBeforeAnswer))
            onStreamEnded?(self)
            return
        }
        idleTimer?.cancel()
        idleTimer = nil
        let streamID = nextStreamID
        open[streamID] = OpenStream(exchange: exchange)
        exchange.onDeadline = { [weak self] in self?.reset(streamID) }
        let headers = HTTP2Frame.FramePayload.Headers(headers: requestHeaders(exchange.head))
        context.write(wrapOutboundOut(HTTP2Frame(streamID: streamID, payload: .headers(headers))), promise: nil)
        let body = HTTP2Frame.FramePayload.Data(data: .byteBuffer(exchange.body), endStream: true)
        context.writeAndFlush(wrapOutboundOut(HTTP2Frame(streamID: streamID, payload: .data(body))), promise: nil)
        if streamID.distance(to: .maxID) < 2 {
            // That was the last odd ID (after about a billion requests): the next request
            // needs another connection.
            stopTakingStreams()
        } else {
            nextStreamID = streamID.advanced(by: 2)
        }
    }

    /// The request's head as HTTP/2 fields: the pseudo-headers first, names in lower
    /// case, and none of HTTP/1.1's connection fields (`Host` becomes `:authority`).
    private func requestHeaders(_ head: HTTPRequestHead) -> HPACKHeaders {
        var fields = HPACKHeaders()
        fields.reserveCapacity(head.headers.count + 4)
        fields.add(name: ":method", value: head.method.rawValue)
        fields.add(name: ":scheme", value: scheme)
        fields.add(name: ":authority", value: authority)
        fields.add(name: ":path", value: head.uri)
        for (name, value) in head.headers {
            let name = name.lowercased()
            guard !Self.connectionFields.contains(name) else { continue }
            fields.add(name: name, value: value)
        }
        return fields
    }

    private static let connectionFields: Set<String> = [
        "host", "connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade",
    ]

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let frame = unwrapInboundIn(data)
        switch frame.payload {
        case .goAway:
            // The streams it cuts off are closed by NIOHTTP2Handler (StreamClosedEvent).
            stopTakingStreams()
        case .headers(let headers):
            // Read in place (`open[id]?.…`): a copy taken out and put back would copy the
            // body read so far on each frame.
            let status = headers.headers.first(name: ":status").flatMap { Int($0) } ?? 0
            // An interim answer (100 Continue) is not the answer; later fields are trailers.
            if status >= 200, open[frame.streamID]?.headRead == false {
                open[frame.streamID]?.headRead = true
                open[frame.streamID]?.answer.read(status: status) { headers.headers.first(name: $0) }
            }
            if headers.endStream { answered(frame.streamID) }
        case .data(let data):
            if case .byteBuffer(let buffer) = data.data { open[frame.streamID]?.answer.read(buffer) }
            if data.endStream { answered(frame.streamID) }
        case .rstStream(let code):
            end(frame.streamID, .failure(PlunkTransportError.streamReset(UInt32(http2ErrorCode: code))))
        default:
            break
        }
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let closed = event as? StreamClosedEvent {
            // A stream that ended without its answer: cut off by a GOAWAY or a reset.
            end(closed.streamID, .failure(closed.reason.map { PlunkTransportError.streamReset(UInt32(http2ErrorCode: $0)) } ?? .closedBeforeAnswer))
        } else if let window = event as? NIOHTTP2WindowUpdatedEvent, let size = window.inboundWindowSize {
            giveWindowBack(window.streamID, size: size)
        }
        context.fireUserInboundEventTriggered(event)
    }

    /// Opens the window again once half of it is used, as NIO's multiplexer does: the
    /// answer's bytes are read as they come, so nothing is held back.
    private func giveWindowBack(_ streamID: HTTP2StreamID, size: Int) {
        guard let context, !isClosed, size <= Self.inboundWindow / 2 else { return }
        guard streamID == .rootStream || open[streamID] != nil else { return }
        let increment = Self.inboundWindow - size
        context.writeAndFlush(wrapOutboundOut(HTTP2Frame(streamID: streamID, payload: .windowUpdate(windowSizeIncrement: increment))), promise: nil)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if let streamError = error as? NIOHTTP2Errors.StreamError {
            end(streamError.streamID, .failure(streamError.baseError))
        } else {
            // A connection error: NIOHTTP2Handler has sent its GOAWAY; nothing more is read.
            // No new streams first: each stream failed frees a slot, and the pool would
            // hand the request queued next to this connection.
            stopTakingStreams()
            failAll(error)
            close()
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        isClosed = true
        idleTimer?.cancel()
        stopTakingStreams()
        failAll(PlunkTransportError.closedBeforeAnswer)
        let onClose = self.onClose
        self.onClose = nil
        onClose?(self)
        context.fireChannelInactive()
    }

    /// Closes the connection; the pool stops sending on it at once (the next request
    /// opens another) rather than when the close is seen.
    func close() {
        guard !isClosed, let context else { return }
        isClosed = true
        stopTakingStreams()
        context.close(promise: nil)
    }

    private func answered(_ streamID: HTTP2StreamID) {
        guard var stream = open[streamID] else { return }
        end(streamID, .success(stream.answer.take()))
    }

    /// The deadline passed: the stream is reset (the connection and its other streams
    /// carry on), so a late answer is never read as this one's.
    private func reset(_ streamID: HTTP2StreamID) {
        guard removeStream(streamID) != nil, let context, !isClosed else { return }
        context.writeAndFlush(wrapOutboundOut(HTTP2Frame(streamID: streamID, payload: .rstStream(.cancel))), promise: nil)
    }

    private func end(_ streamID: HTTP2StreamID, _ result: Result<PlunkAnswer, any Error>) {
        removeStream(streamID)?.exchange.finish(result)
    }

    /// Takes a stream out of those in flight, once: its slot goes back to the pool, and
    /// the idle timer starts when it was the last.
    private func removeStream(_ streamID: HTTP2StreamID) -> OpenStream? {
        guard let stream = open.removeValue(forKey: streamID) else { return nil }
        if open.isEmpty { armIdleTimer() }
        onStreamEnded?(self)
        return stream
    }

    private func failAll(_ error: any Error) {
        for streamID in Array(open.keys) { end(streamID, .failure(error)) }
    }

    private func stopTakingStreams() {
        guard acceptsStreams else { return }
        acceptsStreams = false
        let onGoAway = self.onGoAway
        self.onGoAway = nil
        onGoAway?(self)
    }
}
