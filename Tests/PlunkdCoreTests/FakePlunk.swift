import Foundation
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL

/// A stand-in for Plunk on 127.0.0.1 that answers as either generation and injects
/// faults: any status and body, `Retry-After`, slow answers, hangs, and connections
/// closed mid-request.
final class FakePlunk: Sendable {
    struct Request: Sendable {
        let index: Int
        let path: String
        let headers: [String: String]
        let body: Data
        let at: Date
        /// Requests in flight when this one arrived, itself included.
        let inFlightAtArrival: Int

        var idempotencyKey: String? { headers["idempotency-key"] }
        var eventName: String? {
            (try? JSONSerialization.jsonObject(with: body) as? [String: Any])?["event"] as? String
        }
        var email: String? {
            (try? JSONSerialization.jsonObject(with: body) as? [String: Any])?["email"] as? String
        }
    }

    enum Reply: Sendable {
        case answer(
            status: Int, body: String, headers: [(String, String)] = [], delay: TimeAmount = .zero,
            whenSent: (@Sendable () -> Void)? = nil)
        /// Read the request, never answer.
        case hang
        /// Close the connection without answering.
        case reset
    }

    typealias Responder = @Sendable (Request) -> Reply

    private let group: MultiThreadedEventLoopGroup
    private let channel: any Channel
    private let state: NIOLockedValueBox<(requests: [Request], inFlight: Int, maxInFlight: Int, responder: Responder)>
    let port: Int
    private let scheme: String

    var baseURL: URL { URL(string: "\(scheme)://127.0.0.1:\(port)/v1")! }

    /// - Parameter tls: serve HTTPS with this configuration (a certificate and its key).
    init(port: Int = 0, tls: TLSConfiguration? = nil, responder: @escaping Responder = { _ in FakePlunk.legacySuccess() }) async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let state = NIOLockedValueBox<(requests: [Request], inFlight: Int, maxInFlight: Int, responder: Responder)>(
            ([], 0, 0, responder))
        let sslContext = try tls.map { try NIOSSLContext(configuration: $0) }
        channel = try await ServerBootstrap(group: group)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    if let sslContext {
                        try channel.pipeline.syncOperations.addHandler(NIOSSLServerHandler(context: sslContext))
                    }
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline()
                    try channel.pipeline.syncOperations.addHandler(FakePlunkHandler(state: state))
                }
            }
            .bind(host: "127.0.0.1", port: port).get()
        self.group = group
        self.state = state
        self.port = channel.localAddress!.port!
        scheme = tls == nil ? "http" : "https"
    }

    func respond(with responder: @escaping Responder) {
        state.withLockedValue { $0.responder = responder }
    }

    var requests: [Request] { state.withLockedValue { $0.requests } }
    var maxInFlight: Int { state.withLockedValue { $0.maxInFlight } }

    /// Waits (polling, bounded by `timeout`) until `condition` holds for the requests seen.
    @discardableResult
    func waitFor(timeout: Double = 30, _ condition: ([Request]) -> Bool) async -> Bool {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            if condition(requests) { return true }
            try? await Task.sleep(for: .milliseconds(10))
        }
        return condition(requests)
    }

    private let stopped = NIOLockedValueBox(false)

    /// Closes the listener and its connections; safe to call more than once.
    func stop() async {
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

    static func legacySuccess() -> Reply {
        .answer(status: 200, body: #"{"success":true,"contact":"c6a1","event":"e7b2","timestamp":"2026-11-29T00:00:00.000Z"}"#)
    }

    static func v2Success() -> Reply {
        .answer(status: 200, body: #"{"success":true,"data":{"contact":"c6a1","event":"e7b2","timestamp":"2026-11-29T00:00:00.000Z"}}"#)
    }

    static func legacyError(_ status: Int, _ message: String) -> Reply {
        .answer(status: status, body: #"{"code":\#(status),"error":"Error","message":"\#(message)","time":1764374400000}"#)
    }

    static func v2Error(_ status: Int, _ code: String, _ message: String, headers: [(String, String)] = []) -> Reply {
        .answer(
            status: status,
            body:
                #"{"success":false,"error":{"code":"\#(code)","message":"\#(message)","statusCode":\#(status),"requestId":"r1","errors":[]},"timestamp":"2026-11-29T00:00:00.000Z"}"#,
            headers: headers)
    }

    static func htmlPage(_ status: Int) -> Reply {
        .answer(
            status: status,
            body:
                "<html><head><title>\(status) Bad Gateway</title></head><body><center><h1>\(status) Bad Gateway</h1></center><hr><center>nginx</center></body></html>"
        )
    }
}

private final class FakePlunkHandler: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    private let state: NIOLockedValueBox<(requests: [FakePlunk.Request], inFlight: Int, maxInFlight: Int, responder: FakePlunk.Responder)>
    private var head: HTTPRequestHead?
    private var body = Data()

    init(state: NIOLockedValueBox<(requests: [FakePlunk.Request], inFlight: Int, maxInFlight: Int, responder: FakePlunk.Responder)>) {
        self.state = state
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
                    index: state.requests.count, path: head.uri, headers: headers, body: body, at: Date(),
                    inFlightAtArrival: state.inFlight)
                state.requests.append(request)
                state.maxInFlight = max(state.maxInFlight, state.inFlight)
                return state.responder(request)
            }
            let loopBound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
            switch reply {
            case .hang:
                break
            case .reset:
                finished()
                context.close(promise: nil)
            case .answer(let status, let text, let extra, let delay, let whenSent):
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
                    context.writeAndFlush(handler.wrapOutboundOut(.end(nil)), promise: nil)
                }
            }
        }
    }

    private func finished() {
        state.withLockedValue { $0.inFlight -= 1 }
    }
}
