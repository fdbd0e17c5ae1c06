import Foundation
import NIOCore
import NIOHTTP1

/// Plunk's own track and send API on the local socket, so an existing Plunk client
/// pointed at the socket works unchanged. Requests on one connection are answered in order by NIO's
/// pipelining handler, which also stops reading while a response is outstanding.
final class HTTPIngestHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    private enum RequestState {
        case idle
        /// With the body's size limit, which depends on the route.
        case receiving(HTTPRequestHead, ByteBuffer, limit: Int)
        /// Already answered (too large); the rest of the request is ignored.
        case answered
    }

    private let committer: GroupCommitter
    private let validator: EventValidator
    private let control: (any ControlResponder)?
    /// The other lines' routes (`/v1/send`); a path none serves answers 404, as a Plunk
    /// without it would.
    private let routes: [IngestRoute]
    /// On the TCP listener: every request must show a token. Nil on the socket.
    private let gate: BearerGate?
    private var state = RequestState.idle
    private var responsesOutstanding = 0
    private var draining = false

    init(
        committer: GroupCommitter, validator: EventValidator, routes: [IngestRoute], control: (any ControlResponder)?,
        gate: BearerGate? = nil
    ) {
        self.routes = routes
        self.gate = gate
        self.committer = committer
        self.validator = validator
        self.control = control
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch (unwrapInboundIn(data), state) {
        case (.head(let head), _):
            begin(head, context: context)
        case (.body(var chunk), .receiving(let head, var body, let limit)):
            if body.readableBytes + chunk.readableBytes > limit {
                state = .answered
                respondTooLarge(head, limit: limit, context: context)
            } else {
                body.writeBuffer(&chunk)
                state = .receiving(head, body, limit: limit)
            }
        case (.end, .receiving(let head, let body, _)):
            state = .idle
            handle(head, body: body, context: context)
        case (.end, .answered):
            state = .idle
        case (.body, _), (.end, .idle):
            break
        }
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        switch event {
        case is ChannelShouldQuiesceEvent:
            draining = true
            if responsesOutstanding == 0, case .idle = state { context.close(promise: nil) }
        case let idle as IdleStateHandler.IdleStateEvent where idle == .all:
            if responsesOutstanding == 0 { context.close(promise: nil) }
        default:
            context.fireUserInboundEventTriggered(event)
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }

    private func begin(_ head: HTTPRequestHead, context: ChannelHandlerContext) {
        // Before anything is read or promised (no 100 Continue, no 413 telling the size
        // limit): a client without a token gets its 401 at once, and its body is not kept.
        if let refusal = gate?.refusal(head) {
            state = .answered
            var headers = HTTPHeaders()
            headers.add(name: "WWW-Authenticate", value: "Bearer realm=\"plunkd\"")
            headers.add(name: "Connection", value: "close")
            respond(
                head, .unauthorized, PlunkErrorBody.json(.unauthorized, refusal), extraHeaders: headers, forceClose: true,
                context: context)
            return
        }
        let bodyLimit = route(for: Self.path(of: head))?.maxBytes ?? validator.maxEventBytes
        if let length = head.headers.first(name: "content-length").flatMap(Int.init), length > bodyLimit {
            state = .answered
            respondTooLarge(head, limit: bodyLimit, context: context)
            return
        }
        state = .receiving(head, context.channel.allocator.buffer(capacity: 0), limit: bodyLimit)
        // curl sends `Expect: 100-continue` for bodies over 1 KiB and waits a second without it.
        if head.headers[canonicalForm: "expect"].contains(where: { $0.lowercased() == "100-continue" }) {
            let interim = HTTPResponseHead(version: head.version, status: .continue)
            context.writeAndFlush(wrapOutboundOut(.head(interim)), promise: nil)
        }
    }

    private static func path(of head: HTTPRequestHead) -> String {
        head.uri.split(separator: "?", maxSplits: 1).first.map(String.init) ?? head.uri
    }

    private func handle(_ head: HTTPRequestHead, body: ByteBuffer, context: ChannelHandlerContext) {
        let path = Self.path(of: head)
        if let route = route(for: path) {
            guard head.method == .POST else {
                refuseMethod(head, context: context)
                return
            }
            let accepted: [AcceptedEvent]
            do {
                accepted = try route.accept(Data(body.readableBytesView), try Self.clientKey(head), head.headers)
            } catch {
                route.committer.metrics.refusedInvalid.increment()
                respond(head, .badRequest, PlunkErrorBody.json(.badRequest, error.message), context: context)
                return
            }
            commit(accepted, head: head, committer: route.committer, context: context)
            return
        }
        if let control, !Self.trackPaths.contains(path) {
            answerControl(head, path: path, body: Data(body.readableBytesView), control: control, context: context)
            return
        }
        guard Self.trackPaths.contains(path) else {
            respond(head, .notFound, PlunkErrorBody.json(.notFound, "Unknown route"), context: context)
            return
        }
        guard head.method == .POST else {
            refuseMethod(head, context: context)
            return
        }
        let event: AcceptedEvent
        do {
            event = try validator.validate(Data(body.readableBytesView), idempotencyKey: try Self.clientKey(head))
        } catch {
            committer.metrics.refusedInvalid.increment()
            respond(head, .badRequest, PlunkErrorBody.json(.badRequest, error.message), context: context)
            return
        }
        commit([event], head: head, committer: committer, context: context)
    }

    private func refuseMethod(_ head: HTTPRequestHead, context: ChannelHandlerContext) {
        var headers = HTTPHeaders()
        headers.add(name: "Allow", value: "POST")
        respond(
            head, .methodNotAllowed, PlunkErrorBody.json(.methodNotAllowed, "Use POST to send an event"),
            extraHeaders: headers, context: context)
    }

    /// Answers 200 with the id once `events` are committed (together: an email split per
    /// recipient is stored whole or not at all), or 503 when the store refuses them.
    /// Several events answer with the first id and `ids`, every one in order.
    private func commit(_ events: [AcceptedEvent], head: HTTPRequestHead, committer: GroupCommitter, context: ChannelHandlerContext) {
        responsesOutstanding += 1
        let loopBound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        let event = events[0]
        // Only an email split per recipient lists them (an empty array allocates nothing).
        let ids = events.count > 1 ? events.map(\.id) : []
        committer.submit(events) { result in
            // Refused at once: answer now. Committed: hop from the committer to the loop.
            loopBound.eventLoop.runHere {
                let (handler, context) = loopBound.value
                handler.responsesOutstanding -= 1
                switch result {
                case .success(let receipt) where !receipt.claimedElsewhere.isEmpty:
                    // An email split per recipient is refused whole only when its first
                    // recipient's key is the one taken; the claim named is the first found.
                    let claim = receipt.claimedElsewhere[event.id] ?? receipt.claimedElsewhere.values.first!
                    handler.respond(head, .conflict, PlunkErrorBody.json(.conflict, claim.refusal), context: context)
                case .success(let receipt):
                    let id = receipt.acknowledgedID(of: event).lowercasedText
                    let all =
                        ids.count > 1
                        ? ",\"ids\":[" + ids.map { "\"\(receipt.acknowledgedID(ofEventWith: $0).lowercasedText)\"" }.joined(separator: ",") + "]" : ""
                    let body =
                        receipt.isRepeat(event)
                        ? "{\"success\":true,\"queued\":true,\"id\":\"\(id)\"\(all),\"repeated\":true}"
                        : "{\"success\":true,\"queued\":true,\"id\":\"\(id)\"\(all)}"
                    handler.respond(head, .ok, body, context: context)
                case .failure(let refusal):
                    var headers = HTTPHeaders()
                    headers.add(name: "Retry-After", value: "1")
                    handler.respond(
                        head, .serviceUnavailable,
                        PlunkErrorBody.json(.serviceUnavailable, refusal.description),
                        extraHeaders: headers, context: context)
                }
            }
        }
    }

    /// Hands a non-event request to the control part, with the peer's credentials, and
    /// answers on this loop when it is done.
    private func answerControl(
        _ head: HTTPRequestHead, path: String, body: Data, control: any ControlResponder, context: ChannelHandlerContext
    ) {
        responsesOutstanding += 1
        let loopBound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        let method = head.method.rawValue
        context.channel.peerCredentials().whenComplete { credentials in
            let peer = (try? credentials.get()) ?? nil
            ControlResponderQueue.queue.async {
                let response = control.respond(method: method, path: path, body: body, peer: peer)
                loopBound.eventLoop.execute {
                    let (handler, context) = loopBound.value
                    handler.responsesOutstanding -= 1
                    if let response {
                        handler.respond(
                            head, HTTPResponseStatus(statusCode: response.status), response.body,
                            contentType: response.contentType, context: context)
                    } else {
                        handler.respond(head, .notFound, PlunkErrorBody.json(.notFound, "Unknown route"), context: context)
                    }
                }
            }
        }
    }

    private func respondTooLarge(_ head: HTTPRequestHead, limit: Int, context: ChannelHandlerContext) {
        // Counted on the line the request was for: an email's on plunkd_email_….
        let line = route(for: Self.path(of: head))?.committer ?? committer
        line.metrics.refusedTooLarge.increment()
        // The body is not read, so the connection cannot carry another request after this.
        var headers = HTTPHeaders()
        headers.add(name: "Connection", value: "close")
        respond(
            head, .payloadTooLarge,
            PlunkErrorBody.json(.payloadTooLarge, "the body is larger than \(limit) bytes"),
            extraHeaders: headers, forceClose: true, context: context)
    }

    private func respond(
        _ request: HTTPRequestHead, _ status: HTTPResponseStatus, _ body: String,
        contentType: String = "application/json", extraHeaders: HTTPHeaders = [:], forceClose: Bool = false,
        context: ChannelHandlerContext
    ) {
        HTTPResponseWriter.write(
            status, body: body, contentType: contentType, answering: request, extraHeaders: extraHeaders,
            close: forceClose || draining || !request.isKeepAlive, announce: !forceClose, context: context)
    }

    /// The request's `Idempotency-Key`: one key, so two headers that differ are refused.
    private static func clientKey(_ head: HTTPRequestHead) throws(EventRejection) -> String? {
        let values = head.headers["idempotency-key"]
        guard let first = values.first else { return nil }
        guard values.allSatisfy({ $0 == first }) else { throw EventRejection("Idempotency-Key is given twice, with different values") }
        return first
    }

    /// `/track` too: Plunk's Node SDK resolves `track` against its `baseUrl`, which gives
    /// `/track` when the base is given without `/v1/`.
    private static let trackPaths: Set<String> = ["/v1/track", "/v1/track/", "/v1", "/v1/", "/track"]

    private func route(for path: String) -> IngestRoute? {
        routes.first { $0.paths.contains(path) }
    }
}

/// Plunk's legacy error shape, `{"code":…,"error":…,"message":…}`, which Plunk's SDKs
/// know how to show.
enum PlunkErrorBody {
    static func json(_ status: HTTPResponseStatus, _ message: String) -> String {
        "{\"code\":\(status.code),\"error\":\(JSONText.quoted(status.reasonPhrase)),\"message\":\(JSONText.quoted(message))}"
    }
}
