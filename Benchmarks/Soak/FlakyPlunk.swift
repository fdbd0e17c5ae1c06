import Foundation
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOPosix

/// A Plunk stand-in on loopback that fails about 30% of requests at random, the ways the
/// real one does: 500/502/503 with HTML bodies, connections reset mid-request, answers
/// slower than the daemon's request timeout, and 429 with `Retry-After`. Every answer
/// takes at least `minimumDelay`, so the request rate is bounded by concurrency alone.
///
/// It counts a delivery only when a 2xx was written to the connection: that is what
/// the soak's "lost" and "duplicated" are measured against.
final class FlakyPlunk: Sendable {
    struct Tally: Sendable {
        var deliveries: [String: Int] = [:]
        var requestsPerSecond: [Int: Int] = [:]
        /// The same, only while failures were being injected.
        var requestsPerSecondWhileFailing: [Int: Int] = [:]
        /// Requests that arrived during `outage(true)`: each was answered 503.
        var requestsDuringOutage = 0
        var requests = 0
        var failuresInjected = 0
        /// Each id's first 2xx, in the order they were written: (id, contact email).
        var firstDeliveries: [(id: String, email: String)] = []
    }

    let minimumDelay: TimeAmount
    let slowDelay: TimeAmount
    private let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
    private let tally = NIOLockedValueBox(Tally())
    private let failing = NIOLockedValueBox(true)
    private let down = NIOLockedValueBox(false)
    private let channel: any Channel
    let port: Int

    init(minimumDelay: TimeAmount = .milliseconds(10), slowDelay: TimeAmount = .milliseconds(1500)) async throws {
        self.minimumDelay = minimumDelay
        self.slowDelay = slowDelay
        let tally = self.tally
        let failing = self.failing
        let down = self.down
        channel = try await ServerBootstrap(group: group)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline()
                    try channel.pipeline.syncOperations.addHandler(
                        FlakyHandler(tally: tally, failing: failing, down: down, minimumDelay: minimumDelay, slowDelay: slowDelay))
                }
            }
            .bind(host: "127.0.0.1", port: 0).get()
        port = channel.localAddress!.port!
    }

    var baseURL: String { "http://127.0.0.1:\(port)/v1" }
    var snapshot: Tally { tally.withLockedValue { $0 } }

    /// Stop injecting failures: the drain at the end of the soak.
    func heal() { failing.withLockedValue { $0 = false } }

    /// A total outage while `on`: every request is answered 503 (after `minimumDelay`).
    func outage(_ on: Bool) { down.withLockedValue { $0 = on } }

    func stop() async {
        try? await channel.close()
        try? await group.shutdownGracefully()
    }
}

private final class FlakyHandler: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    private enum Fault: CaseIterable { case html500, html502, html503, reset, slow, rateLimited }

    private let tally: NIOLockedValueBox<FlakyPlunk.Tally>
    private let failing: NIOLockedValueBox<Bool>
    private let down: NIOLockedValueBox<Bool>
    private let minimumDelay: TimeAmount
    private let slowDelay: TimeAmount
    private var key: String?
    private var body = ByteBuffer()

    init(
        tally: NIOLockedValueBox<FlakyPlunk.Tally>, failing: NIOLockedValueBox<Bool>, down: NIOLockedValueBox<Bool>,
        minimumDelay: TimeAmount, slowDelay: TimeAmount
    ) {
        self.tally = tally
        self.failing = failing
        self.down = down
        self.minimumDelay = minimumDelay
        self.slowDelay = slowDelay
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head):
            key = head.headers.first(name: "idempotency-key")
            body.clear()
        case .body(var chunk):
            body.writeBuffer(&chunk)
        case .end:
            let email = (try? JSONSerialization.jsonObject(with: Data(body.readableBytesView)) as? [String: Any])?["email"] as? String ?? ""
            let second = Int(Date().timeIntervalSince1970)
            let isFailing = failing.withLockedValue { $0 }
            let isDown = down.withLockedValue { $0 }
            let fault: Fault? = isDown ? .html503 : isFailing && Double.random(in: 0..<1) < 0.3 ? Fault.allCases.randomElement() : nil
            tally.withLockedValue {
                $0.requests += 1
                if isDown { $0.requestsDuringOutage += 1 }
                $0.requestsPerSecond[second, default: 0] += 1
                if isFailing { $0.requestsPerSecondWhileFailing[second, default: 0] += 1 }
                if fault != nil { $0.failuresInjected += 1 }
            }
            let loopBound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
            let key = self.key
            let delay = fault == .slow ? slowDelay : minimumDelay
            context.eventLoop.scheduleTask(in: delay) {
                let (handler, context) = loopBound.value
                switch fault {
                case .reset:
                    context.close(promise: nil)
                case .html500: handler.answer(500, html: true, context: context)
                case .html502: handler.answer(502, html: true, context: context)
                case .html503, .slow: handler.answer(503, html: true, context: context)
                case .rateLimited: handler.answer(429, html: false, headers: [("Retry-After", "1")], context: context)
                case nil:
                    let written = handler.answer(200, html: false, context: context)
                    let tally = handler.tally
                    written.whenSuccess {
                        guard let key else { return }
                        tally.withLockedValue {
                            $0.deliveries[key, default: 0] += 1
                            if $0.deliveries[key] == 1 { $0.firstDeliveries.append((key, email)) }
                        }
                    }
                }
            }
        }
    }

    @discardableResult
    private func answer(_ status: Int, html: Bool, headers extra: [(String, String)] = [], context: ChannelHandlerContext) -> EventLoopFuture<Void> {
        let body =
            html
            ? "<html><head><title>\(status)</title></head><body><h1>\(status)</h1><hr>nginx</body></html>"
            : status == 200
                ? #"{"success":true,"contact":"c","event":"e","timestamp":"2026-11-29T00:00:00.000Z"}"#
                : #"{"code":429,"error":"Too Many Requests","message":"slow down"}"#
        var headers = HTTPHeaders()
        headers.add(name: "Content-Type", value: html ? "text/html" : "application/json")
        headers.add(name: "Content-Length", value: String(body.utf8.count))
        for (name, value) in extra { headers.add(name: name, value: value) }
        context.write(
            wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: HTTPResponseStatus(statusCode: status), headers: headers))), promise: nil)
        context.write(wrapOutboundOut(.body(.byteBuffer(ByteBuffer(string: body)))), promise: nil)
        return context.writeAndFlush(wrapOutboundOut(.end(nil)))
    }
}
