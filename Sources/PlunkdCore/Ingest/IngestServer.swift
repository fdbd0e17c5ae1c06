import Foundation
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOExtras
import NIOPosix

/// The socket side of ingest: what the server needs to know about its socket.
public struct IngestSocketSettings: Sendable {
    public var path: String
    /// File mode of the socket, e.g. 0o660: who may connect is decided by the file system.
    public var mode: UInt16
    public var maxConnections: Int
    /// A connection with nothing sent or received for this long is closed.
    public var idleTimeout: TimeAmount
    /// Who may submit events; replaced on SIGHUP.
    public var peerPolicy: PeerPolicyBox
    /// A socket systemd already bound and listens on (socket activation): used as it is,
    /// its path, owner and mode left to systemd.
    public var inherited: InheritedSocket?

    public init(
        path: String, mode: UInt16 = 0o660, maxConnections: Int = 1024, idleTimeout: TimeAmount = .seconds(300),
        peerPolicy: PeerPolicyBox = PeerPolicyBox(PeerPolicy(daemonUID: getuid())), inherited: InheritedSocket? = nil
    ) {
        self.path = inherited?.path ?? path
        self.inherited = inherited
        self.peerPolicy = peerPolicy
        self.mode = mode
        self.maxConnections = maxConnections
        self.idleTimeout = idleTimeout
    }
}

/// Listens on the Unix socket and hands every connection to the framing sniffer.
public final class IngestServer: Sendable {
    private let settings: IngestSocketSettings
    private let committer: GroupCommitter
    private let validator: EventValidator
    private let group: any EventLoopGroup
    private let logger: Logger
    private let control: (any ControlResponder)?
    private let routes: [IngestRoute]
    private let connections = OpenConnections()
    private let refusalsLogged = OnceLog()
    private let quiescing = ListenerQuiescing()

    public init(
        settings: IngestSocketSettings, committer: GroupCommitter, validator: EventValidator,
        group: any EventLoopGroup, logger: Logger, control: (any ControlResponder)? = nil, routes: [IngestRoute] = []
    ) {
        self.routes = routes
        self.control = control
        self.settings = settings
        self.committer = committer
        self.validator = validator
        self.group = group
        self.logger = logger
    }

    /// Binds the socket; connections are served from the moment this returns.
    public func start() async throws {
        if settings.inherited == nil {
            try SocketPathGuard.prepare(settings.path)
        }
        let connections = self.connections
        let settings = self.settings
        let committer = self.committer
        let validator = self.validator
        let logger = self.logger
        let control = self.control
        let routes = self.routes
        let refusalsLogged = self.refusalsLogged
        let quiescing = ServerQuiescingHelper(group: group)
        let shutdownGrace = self.quiescing.grace
        let bootstrap = ServerBootstrap(group: group)
            .serverChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(quiescing.makeServerChannelHandler(channel: channel))
                }
            }
            // The kernel's maximum (SOMAXCONN, 4096 on current kernels; it caps larger
            // values): a web server's workers reconnecting at once after a restart are
            // queued, not refused with EAGAIN. plunkd.socket asks for the same.
            .serverChannelOption(.backlog, value: 4096)
            .childChannelOption(.allowRemoteHalfClosure, value: true)
            // Backpressure acts between reads: everything in one read is parsed and queued
            // before reading pauses. Small reads, one per wake-up, keep what a fast pipelining
            // client can have in memory near the per-connection limit (16 KiB ≈ 200 events)
            // instead of NIO's default 4 × 64 KiB.
            .childChannelOption(.maxMessagesPerRead, value: 1)
            .childChannelOption(.recvAllocator, value: AdaptiveRecvByteBufferAllocator(minimum: 1024, initial: 4096, maximum: 16384))
            .childChannelInitializer { channel in
                guard connections.admit(channel, limit: settings.maxConnections) else {
                    logger.warning("connection refused: \(settings.maxConnections) connections are open (socket.max_connections)")
                    return channel.close()
                }
                let policy = settings.peerPolicy.current
                let checked: EventLoopFuture<String?> =
                    policy.allowedUIDs.isEmpty && policy.allowedGIDs.isEmpty
                    ? channel.eventLoop.makeSucceededFuture(nil)
                    : channel.peerCredentials().map { policy.refusal(for: $0) }
                return checked.flatMapThrowing { refusal in
                    if let refusal, refusalsLogged.firstTime(refusal) {
                        logger.notice("client refused: \(refusal) (logged once per peer)")
                    }
                    try channel.pipeline.syncOperations.addHandlers([
                        IdleStateHandler(allTimeout: settings.idleTimeout),
                        QuiesceDeadline(grace: shutdownGrace),
                        FramingSniffer(
                            committer: committer, validator: validator, routes: routes, control: control, peerRefusal: refusal),
                    ])
                }
            }
        if let inherited = settings.inherited {
            _ = try await bootstrap.withBoundSocket(inherited.descriptor).get()
            self.quiescing.listening(quiescing)
            return
        }
        let channel = try await bootstrap.bind(unixDomainSocketPath: settings.path).get()
        guard chmod(settings.path, mode_t(settings.mode)) == 0 else {
            let reason = String(cString: strerror(errno))
            try? await channel.close()
            throw SocketPathGuard.Refusal(description: "cannot set mode of \(settings.path): \(reason)")
        }
        self.quiescing.listening(quiescing)
    }

    /// Stops accepting, lets every connection answer what it already received, then
    /// closes (NIO's quiescing: each connection gets `ChannelShouldQuiesceEvent`).
    /// Connections still busy after `grace` are closed anyway.
    public func shutdown(grace: TimeAmount) async {
        let settings = self.settings
        await quiescing.shutdown(grace: grace, group: group) {
            // An activated socket belongs to systemd, which keeps it (and queues clients)
            // while the daemon restarts.
            if settings.inherited == nil { unlink(settings.path) }
        }
    }
}

/// Closes a listener and tells every open connection to quiesce at shutdown (NIO's
/// `ServerQuiescingHelper`), for the socket and the TCP listener alike.
final class ListenerQuiescing: Sendable {
    /// Kept only once the listener listens: a helper whose listener never came is let go
    /// at once, while the event loops still run to fail its promise.
    private let helper = NIOLockedValueBox<ServerQuiescingHelper?>(nil)
    /// How long a connection may take to answer what it read once shutdown begins.
    let grace = NIOLockedValueBox<TimeAmount>(.seconds(5))

    func listening(_ helper: ServerQuiescingHelper) {
        self.helper.withLockedValue { $0 = helper }
    }

    /// - Parameter closed: runs once the listener stops accepting, before the wait for
    ///   open connections.
    func shutdown(grace: TimeAmount, group: any EventLoopGroup, closed: () -> Void = {}) async {
        // Never bound: no connection was ever accepted, and the helper never got its
        // listener, so it would wait for one forever.
        guard let helper = helper.withLockedValue({ $0 }) else { return }
        self.grace.withLockedValue { $0 = grace }
        let everyClosed = group.next().makePromise(of: Void.self)
        helper.initiateShutdown(promise: everyClosed)
        closed()
        try? await everyClosed.futureResult.get()
        // Let the helper go while the event loops still run: its deinit completes a
        // promise on one, and NIO reports that as an error once they have shut down.
        self.helper.withLockedValue { $0 = nil }
    }
}

/// Closes a connection still open `grace` after shutdown began: a client that never
/// reads its answers must not hold up the daemon's exit.
final class QuiesceDeadline: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = NIOAny
    private let grace: NIOLockedValueBox<TimeAmount>

    init(grace: NIOLockedValueBox<TimeAmount>) { self.grace = grace }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if event is ChannelShouldQuiesceEvent {
            let channel = context.channel
            context.eventLoop.scheduleTask(in: grace.withLockedValue { $0 }) { channel.close(promise: nil) }
        }
        context.fireUserInboundEventTriggered(event)
    }
}

/// How many client connections are open, for `socket.max_connections`.
final class OpenConnections: Sendable {
    private let count = NIOLockedValueBox(0)

    func admit(_ channel: any Channel, limit: Int) -> Bool {
        let admitted = count.withLockedValue { open -> Bool in
            guard open < limit else { return false }
            open += 1
            return true
        }
        if admitted {
            channel.closeFuture.whenComplete { [count] _ in count.withLockedValue { $0 -= 1 } }
        }
        return admitted
    }
}

/// Remembers which messages were logged, so a client retrying in a loop leaves one line,
/// not one per connection. Bounded: after 256 distinct messages it forgets them all.
final class OnceLog: Sendable {
    private let seen = NIOLockedValueBox<Set<String>>([])

    func firstTime(_ message: String) -> Bool {
        seen.withLockedValue { seen in
            if seen.count >= 256 { seen.removeAll() }
            return seen.insert(message).inserted
        }
    }
}

extension EventLoop {
    /// Runs `body` at once when called on this loop, else schedules it there: a refusal
    /// made at submission runs on the loop itself, a commit's completion on the committer.
    func runHere(_ body: @escaping @Sendable () -> Void) {
        if inEventLoop { body() } else { execute(body) }
    }
}
