import Foundation
import Logging
import NIOCore
import NIOPosix
import ServiceLifecycle

/// Wires the parts together in start-up order and takes them down in reverse.
public enum Daemon {
    /// Opens the store (failing loudly when it is damaged), serves the socket until
    /// SIGTERM or SIGINT, then shuts down in order: stop accepting, answer every client
    /// whose event was received, commit the last batch, close the store.
    ///
    /// - Parameter reload: reads the configuration again, on SIGHUP. The new API key takes
    ///   effect at once (an auth hold for the old key ends); a broken configuration is
    ///   refused with one log line and the running one stays.
    public static func run(
        _ config: DaemonConfiguration, logger: Logger,
        reload: @escaping @Sendable () async throws -> DaemonConfiguration = { throw ConfigurationError("no reload") }
    ) async throws {
        let outbox = try Outbox(path: config.storagePath, maxBytes: config.maxStorageBytes)
        logger.info("storage ready", metadata: [
            "path": "\(outbox.path)", "stored_events": "\(outbox.storedCount)",
        ])
        let group = MultiThreadedEventLoopGroup(numberOfThreads: System.coreCount)
        let client = PlunkClient(
            baseURL: config.plunkBaseURL, concurrency: config.concurrency,
            requestTimeout: config.requestTimeout, eventLoopGroup: group)
        let senderSettings = Sender.Settings(
            apiKey: config.apiKey, concurrency: config.concurrency,
            retry: RetryPolicy(initialBackoff: config.initialBackoff, maxBackoff: config.maxBackoff, maxAge: config.maxAge))
        let metrics = MetricsExposition()
        let sender = Sender(
            outbox: outbox, transport: client, settings: senderSettings, logger: logger,
            metrics: DeliveryMetrics(factory: metrics.factory))
        try sender.start()
        if config.apiKey == nil {
            logger.warning("no API key configured (plunk.api_key, PLUNK_API_KEY, plunk.api_key_file or the plunk-api-key credential): events are kept, nothing is sent")
        }
        let committer = GroupCommitter(
            outbox: outbox, maxPending: config.maxPending, logger: logger,
            metrics: IngestMetrics(factory: metrics.factory), didCommit: { sender.wake() })
        let policy = PeerPolicyBox(config.peerPolicy)
        committer.start()
        let server = IngestServer(
            settings: IngestSocketSettings(
                path: config.socketPath,
                mode: config.socketMode,
                maxConnections: config.maxConnections,
                idleTimeout: .nanoseconds(Int64(config.idleTimeout * 1e9)),
                peerPolicy: policy),
            committer: committer,
            validator: EventValidator(maxEventBytes: config.maxEventBytes),
            group: group,
            logger: logger,
            control: ControlRoutes(
                sender: sender, outbox: outbox,
                context: StatusContext(
                    socketPath: config.socketPath, databasePath: config.storagePath,
                    warnOldestAge: config.warnOldestAge, startedAt: Date()),
                policy: policy, metrics: metrics))
        let service = IngestService(
            server: server, committer: committer, sender: sender,
            grace: .nanoseconds(Int64(config.shutdownGrace * 1e9)),
            socketPath: config.socketPath, logger: logger)
        let hangup = ReloadOnHangup(sender: sender, policy: policy, reload: reload, logger: logger)
        hangup.start()
        defer { hangup.stop() }
        let services = ServiceGroup(
            services: [service], gracefulShutdownSignals: [.sigterm, .sigint], logger: logger)
        let outcome = await Result(catching: { try await services.run() })
        try? await group.shutdownGracefully()
        try outcome.get()
        logger.info("stopped")
    }
}

/// The socket, its committer and the sender as one lifecycle service, so they stop in
/// order: no new events, every received event answered, then requests in flight finished.
private struct IngestService: Service {
    let server: IngestServer
    let committer: GroupCommitter
    let sender: Sender
    let grace: TimeAmount
    let socketPath: String
    let logger: Logger

    func run() async throws {
        do {
            try await server.start()
        } catch {
            committer.shutdown()
            await sender.shutdown(grace: .zero)
            throw error
        }
        logger.info("listening", metadata: ["socket": "\(socketPath)"])
        try? await gracefulShutdown()
        logger.info("shutting down: no new connections; answering clients")
        await server.shutdown(grace: grace)
        committer.shutdown()
        logger.info("shutting down: waiting for requests in flight to Plunk")
        await sender.shutdown(grace: .nanoseconds(grace.nanoseconds))
    }
}

extension Result where Failure == any Error {
    /// Captures the outcome of async work, so clean-up can run before the error is rethrown.
    init(catching body: () async throws -> Success) async {
        do {
            self = .success(try await body())
        } catch {
            self = .failure(error)
        }
    }
}

/// SIGHUP: read the configuration again and apply the API key without dropping anything.
/// Settings other than the key (socket, storage, concurrency…) need a restart.
private final class ReloadOnHangup: @unchecked Sendable {
    private let source = DispatchSource.makeSignalSource(signal: SIGHUP, queue: .global())
    private let sender: Sender
    private let policy: PeerPolicyBox
    private let reload: @Sendable () async throws -> DaemonConfiguration
    private let logger: Logger

    init(sender: Sender, policy: PeerPolicyBox, reload: @escaping @Sendable () async throws -> DaemonConfiguration, logger: Logger) {
        self.sender = sender
        self.policy = policy
        self.reload = reload
        self.logger = logger
    }

    func start() {
        signal(SIGHUP, SIG_IGN)
        source.setEventHandler { [self] in
            Task {
                do {
                    let config = try await reload()
                    try sender.updateAPIKey(config.apiKey)
                    policy.replace(with: config.peerPolicy)
                    logger.info("configuration reloaded (SIGHUP): API key \(config.apiKey.map { "\($0)" } ?? "not configured")")
                } catch {
                    logger.error("configuration reload refused, the running configuration stays: \(error)")
                }
            }
        }
        source.resume()
    }

    func stop() {
        source.cancel()
    }
}
