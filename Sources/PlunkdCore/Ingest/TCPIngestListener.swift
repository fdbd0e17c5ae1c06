import Foundation
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOExtras
import NIOHTTP1
import NIOPosix

/// The HTTP routes on a loopback TCP address (`ingest.listen`), for clients that can only
/// speak to a URL: Plunk's SDKs call `fetch` on a base URL and cannot reach a Unix socket.
///
/// Events only: control commands and NDJSON stay on the socket, where the kernel says who
/// the client is. Every request carries a bearer token instead (`BearerGate`). Events
/// taken here are committed by the same committer, before the same 200.
public final class TCPIngestListener: Sendable {
    private let settings: TCPIngestSettings
    private let committer: GroupCommitter
    private let validator: EventValidator
    private let routes: [IngestRoute]
    private let group: any EventLoopGroup
    private let logger: Logger
    private let connections = OpenConnections()
    private let refusalsLogged = OnceLog()
    private let quiescing = ListenerQuiescing()

    public init(
        settings: TCPIngestSettings, committer: GroupCommitter, validator: EventValidator, routes: [IngestRoute] = [],
        group: any EventLoopGroup, logger: Logger
    ) {
        self.routes = routes
        self.settings = settings
        self.committer = committer
        self.validator = validator
        self.group = group
        self.logger = logger
    }

    public func start() async throws {
        let settings = self.settings
        let committer = self.committer
        let validator = self.validator
        let routes = self.routes
        let logger = self.logger
        let connections = self.connections
        let refusalsLogged = self.refusalsLogged
        let shutdownGrace = self.quiescing.grace
        let quiescing = ServerQuiescingHelper(group: group)
        let gate = BearerGate(tokens: settings.tokens) { reason in
            committer.metrics.refusedToken.increment()
            if refusalsLogged.firstTime(reason) {
                logger.notice("TCP client refused: \(reason) (ingest.tokens; logged once per reason)")
            }
        }
        _ = try await ServerBootstrap(group: group)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .serverChannelOption(.backlog, value: 4096)
            .serverChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(quiescing.makeServerChannelHandler(channel: channel))
                }
            }
            .childChannelOption(.maxMessagesPerRead, value: 1)
            .childChannelOption(.tcpOption(.tcp_nodelay), value: 1)
            .childChannelInitializer { channel in
                guard connections.admit(channel, limit: settings.maxConnections) else {
                    logger.warning("TCP connection refused: \(settings.maxConnections) connections are open (socket.max_connections)")
                    return channel.close()
                }
                return channel.eventLoop.makeCompletedFuture {
                    let pipeline = channel.pipeline.syncOperations
                    try pipeline.addHandlers([IdleStateHandler(allTimeout: settings.idleTimeout), QuiesceDeadline(grace: shutdownGrace)])
                    try pipeline.configureHTTPServerPipeline(withPipeliningAssistance: true, withErrorHandling: true)
                    try pipeline.addHandler(
                        HTTPIngestHandler(
                            committer: committer, validator: validator, routes: routes, control: nil, gate: gate))
                }
            }
            .bind(host: settings.address.host, port: settings.address.port).get()
        self.quiescing.listening(quiescing)
    }

    /// As `IngestServer.shutdown`: stop accepting, answer what was received, then close.
    public func shutdown(grace: TimeAmount) async {
        await quiescing.shutdown(grace: grace, group: group)
    }
}

/// Admits a request over TCP by its `Authorization: Bearer` token.
struct BearerGate: Sendable {
    let tokens: IngestTokensBox
    /// Counts and logs a refusal; the reason never holds the token offered.
    let refused: @Sendable (String) -> Void

    /// Nil when the request may go on; else the message of the 401.
    func refusal(_ head: HTTPRequestHead) -> String? {
        let authorization = head.headers.first(name: "authorization")
        if tokens.current.admits(authorization: authorization) { return nil }
        let reason =
            authorization == nil
            ? "no Authorization header: send Authorization: Bearer <token>, a token from plunkd's ingest.tokens"
            : "the bearer token is not one of plunkd's ingest.tokens (give the client a local token, not the Plunk API key)"
        refused(reason)
        return reason
    }
}

/// What `ingest.listen` and its neighbours say: where to listen, how many clients, for
/// how long an idle one is kept, and the tokens admitted.
public struct TCPIngestSettings: Sendable {
    public var address: HostAndPort
    public var maxConnections: Int
    public var idleTimeout: TimeAmount
    public var tokens: IngestTokensBox

    public init(address: HostAndPort, maxConnections: Int, idleTimeout: TimeAmount, tokens: IngestTokensBox) {
        self.address = address
        self.maxConnections = maxConnections
        self.idleTimeout = idleTimeout
        self.tokens = tokens
    }
}
