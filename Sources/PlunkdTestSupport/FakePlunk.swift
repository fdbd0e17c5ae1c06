import Foundation
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOHTTP2
import NIOPosix
import NIOSSL

/// The one stand-in for Plunk on 127.0.0.1, for the tests, the soak and the delivery
/// benchmark: it answers as either generation and injects faults (any status and body,
/// `Retry-After`, slow answers, hangs, connections closed mid-request), each decided per
/// request by a `Responder`.
public final class FakePlunk: Sendable {
    public struct Request: Sendable {
        public let index: Int
        public let path: String
        public let headers: [String: String]
        public let body: Data
        public let at: Date
        /// Requests in flight when this one arrived, itself included.
        public let inFlightAtArrival: Int
        /// `HTTP/1.1`, or `HTTP/2.0` for a stream of an HTTP/2 connection.
        public let httpVersion: String

        public var idempotencyKey: String? { headers["idempotency-key"] }
        public var eventName: String? {
            (try? JSONSerialization.jsonObject(with: body) as? [String: Any])?["event"] as? String
        }
        public var email: String? {
            (try? JSONSerialization.jsonObject(with: body) as? [String: Any])?["email"] as? String
        }
    }

    public enum Reply: Sendable {
        /// `whenSent` runs just before the answer is written (where a real Plunk has
        /// stored the event); `whenWritten` after, with whether the whole answer reached
        /// the connection (what a delivery count is measured against).
        case answer(
            status: Int, body: String, headers: [(String, String)] = [], delay: TimeAmount = .zero,
            whenSent: (@Sendable () -> Void)? = nil, whenWritten: (@Sendable (Bool) -> Void)? = nil)
        /// Read the request, never answer.
        case hang
        /// Close the connection without answering, after `delay`.
        case reset(after: TimeAmount)

        public static let reset = Reply.reset(after: .zero)
    }

    public typealias Responder = @Sendable (Request) -> Reply

    private let group: MultiThreadedEventLoopGroup
    private let channel: any Channel
    private let state: NIOLockedValueBox<FakePlunkState>
    public let port: Int
    private let scheme: String

    public var baseURL: URL { URL(string: "\(scheme)://127.0.0.1:\(port)/v1")! }

    /// - Parameters:
    ///   - tls: serve HTTPS with this configuration (a certificate and its key).
    ///   - offersHTTP2: with `tls`, offer `h2` before `http/1.1` in ALPN, as most HTTPS
    ///     front ends do, and serve each HTTP/2 stream as one request.
    ///   - keepsRequests: keep every request for `requests`; off for long runs, where only
    ///     the responder's own counts matter.
    public init(
        port: Int = 0, tls: TLSConfiguration? = nil, offersHTTP2: Bool = false, keepsRequests: Bool = true,
        responder: @escaping Responder = { _ in FakePlunk.legacySuccess() }
    ) async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let state = NIOLockedValueBox(FakePlunkState(responder: responder))
        let sslContext = try tls.map { tls in
            var tls = tls
            tls.applicationProtocols = offersHTTP2 ? ["h2", "http/1.1"] : []
            return try NIOSSLContext(configuration: tls)
        }
        channel = try await ServerBootstrap(group: group)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .serverChannelOption(.backlog, value: 256)
            .childChannelInitializer { channel in
                state.withLockedValue {
                    $0.connections += 1
                    $0.openConnections += 1
                }
                channel.closeFuture.whenComplete { _ in state.withLockedValue { $0.openConnections -= 1 } }
                let handler: NIOChannelInitializer = { channel in
                    channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.addHandler(FakePlunkHandler(state: state, keepsRequests: keepsRequests))
                    }
                }
                do {
                    if let sslContext {
                        try channel.pipeline.syncOperations.addHandler(NIOSSLServerHandler(context: sslContext))
                    }
                    if offersHTTP2 && sslContext != nil {
                        return channel.configureCommonHTTPServerPipeline(handler)
                    }
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline()
                } catch {
                    return channel.eventLoop.makeFailedFuture(error)
                }
                return handler(channel)
            }
            .bind(host: "127.0.0.1", port: port).get()
        self.group = group
        self.state = state
        self.port = channel.localAddress!.port!
        scheme = tls == nil ? "http" : "https"
    }

    public func respond(with responder: @escaping Responder) {
        state.withLockedValue { $0.responder = responder }
    }

    /// Over HTTP/2: once `count` requests have been answered, the connection that carried
    /// the last one gets a GOAWAY and stays open, taking no new streams, as a front end
    /// that rotates its connections does.
    public func sendGoAway(afterRequests count: Int) {
        state.withLockedValue { $0.goAwayAfter = count }
    }

    public var requests: [Request] { state.withLockedValue { $0.requests } }
    public var maxInFlight: Int { state.withLockedValue { $0.maxInFlight } }
    /// Connections accepted so far.
    public var connectionCount: Int { state.withLockedValue { $0.connections } }
    /// Connections open now: accepted and not closed by either side.
    public var openConnectionCount: Int { state.withLockedValue { $0.openConnections } }
    /// Requests seen, whether kept or not.
    public var requestCount: Int { state.withLockedValue { $0.seen } }

    /// Waits (polling, bounded by `timeout`) until `condition` holds for the requests seen.
    @discardableResult
    public func waitFor(timeout: Double = 30, _ condition: ([Request]) -> Bool) async -> Bool {
        await Poll.until(timeout: timeout) { condition(requests) }
    }

    private let stopped = NIOLockedValueBox(false)

    /// Closes the listener and its connections; safe to call more than once.
    public func stop() async {
        guard
            stopped.withLockedValue({ wasStopped in
                defer { wasStopped = true }
                return !wasStopped
            })
        else { return }
        try? await channel.close()
        try? await group.shutdownGracefully()
    }

    // MARK: Answers of both generations

    public static func legacySuccess() -> Reply {
        .answer(status: 200, body: #"{"success":true,"contact":"c6a1","event":"e7b2","timestamp":"2026-11-29T00:00:00.000Z"}"#)
    }

    public static func v2Success() -> Reply {
        .answer(status: 200, body: #"{"success":true,"data":{"contact":"c6a1","event":"e7b2","timestamp":"2026-11-29T00:00:00.000Z"}}"#)
    }

    public static func legacyError(_ status: Int, _ message: String) -> Reply {
        .answer(status: status, body: #"{"code":\#(status),"error":"Error","message":"\#(message)","time":1764374400000}"#)
    }

    public static func v2Error(_ status: Int, _ code: String, _ message: String, headers: [(String, String)] = []) -> Reply {
        .answer(
            status: status,
            body:
                #"{"success":false,"error":{"code":"\#(code)","message":"\#(message)","statusCode":\#(status),"requestId":"r1","errors":[]},"timestamp":"2026-11-29T00:00:00.000Z"}"#,
            headers: headers)
    }

    public static func htmlPage(_ status: Int) -> Reply {
        .answer(
            status: status,
            body:
                "<html><head><title>\(status) Bad Gateway</title></head><body><center><h1>\(status) Bad Gateway</h1></center><hr><center>nginx</center></body></html>"
        )
    }
}

struct FakePlunkState {
    var requests: [FakePlunk.Request] = []
    var seen = 0
    var connections = 0
    var openConnections = 0
    var inFlight = 0
    var maxInFlight = 0
    var responder: FakePlunk.Responder
    /// After answering this many requests in all, an HTTP/2 connection that carried the
    /// last one is sent a GOAWAY (and kept open); nil for never.
    var goAwayAfter: Int?
}

private final class FakePlunkHandler: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    private let state: NIOLockedValueBox<FakePlunkState>
    private let keepsRequests: Bool
    private var head: HTTPRequestHead?
    private var body = Data()

    init(
        state: NIOLockedValueBox<FakePlunkState>,
        keepsRequests: Bool
    ) {
        self.state = state
        self.keepsRequests = keepsRequests
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head):
            self.head = head
            body = Data()
        case .body(let chunk):
            body.append(contentsOf: chunk.readableBytesView)
        case .end:
            guard let head else { return }
            var headers: [String: String] = [:]
            for (name, value) in head.headers { headers[name.lowercased()] = value }
            let reply = state.withLockedValue { state -> FakePlunk.Reply in
                state.inFlight += 1
                let request = FakePlunk.Request(
                    index: state.seen, path: head.uri, headers: headers, body: body, at: Date(),
                    inFlightAtArrival: state.inFlight, httpVersion: "\(head.version)")
                state.seen += 1
                if keepsRequests { state.requests.append(request) }
                state.maxInFlight = max(state.maxInFlight, state.inFlight)
                return state.responder(request)
            }
            let loopBound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
            switch reply {
            case .hang:
                break
            case .reset(let delay):
                context.eventLoop.scheduleTask(in: delay) {
                    let (handler, context) = loopBound.value
                    handler.finished()
                    context.close(promise: nil)
                }
            case .answer(let status, let text, let extra, let delay, let whenSent, let whenWritten):
                context.eventLoop.scheduleTask(in: delay) {
                    let (handler, context) = loopBound.value
                    whenSent?()
                    handler.finished()
                    var response = HTTPHeaders()
                    response.add(name: "Content-Type", value: text.hasPrefix("<") ? "text/html" : "application/json")
                    response.add(name: "Content-Length", value: String(text.utf8.count))
                    for (name, value) in extra { response.add(name: name, value: value) }
                    context.write(
                        handler.wrapOutboundOut(
                            .head(
                                HTTPResponseHead(
                                    version: .http1_1, status: HTTPResponseStatus(statusCode: status), headers: response))), promise: nil)
                    context.write(handler.wrapOutboundOut(.body(.byteBuffer(ByteBuffer(string: text)))), promise: nil)
                    let written = context.writeAndFlush(handler.wrapOutboundOut(.end(nil)))
                    handler.goAwayIfDue(context)
                    if let whenWritten {
                        written.whenComplete { result in
                            if case .success = result { whenWritten(true) } else { whenWritten(false) }
                        }
                    }
                }
            }
        }
    }

    private func finished() {
        state.withLockedValue { $0.inFlight -= 1 }
    }

    /// A stream's parent is its HTTP/2 connection; over HTTP/1.1 there is none.
    private func goAwayIfDue(_ context: ChannelHandlerContext) {
        guard let connection = context.channel.parent,
            state.withLockedValue({ state in
                guard let after = state.goAwayAfter, state.seen >= after else { return false }
                state.goAwayAfter = nil
                return true
            })
        else { return }
        // The highest id lets the streams already open finish; no new one may start.
        let goAway = HTTP2Frame(streamID: .rootStream, payload: .goAway(lastStreamID: .maxID, errorCode: .noError, opaqueData: nil))
        connection.writeAndFlush(goAway, promise: nil)
    }
}
