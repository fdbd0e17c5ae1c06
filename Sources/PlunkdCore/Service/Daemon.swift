import Foundation
import Logging
import NIOCore
import NIOPosix
import ServiceLifecycle

/// Wires the parts together in start-up order and takes them down in reverse.
public enum Daemon {
    /// Opens the store (failing loudly when it is damaged), serves the socket until
    /// SIGTERM or SIGINT, then shuts down in order: stop accepting, answer every client
    /// whose event was received, commit the last batch, wait for requests in flight.
    ///
    /// - Parameters:
    ///   - reload: reads the configuration again, on SIGHUP (see `ReloadOnHangup`).
    ///   - environment: where systemd's `NOTIFY_SOCKET`, `WATCHDOG_USEC` and `LISTEN_FDS` are read.
    public static func run(
        _ config: DaemonConfiguration, logger: Logger,
        environment: [String: String] = ProcessInfo.processInfo.environment,
        reload: @escaping @Sendable () async throws -> DaemonConfiguration = { throw ConfigurationError("no reload") }
    ) async throws {
        let notifier = SystemdNotifier(environment: environment)
        let inherited = try InheritedSocket.fromEnvironment(environment)
        let storeLock = try StoreLock(storePath: config.storagePath)
        defer { withExtendedLifetime(storeLock) {} }
        let outbox = try Outbox(path: config.storagePath, maxBytes: config.maxStorageBytes)
        logger.info("storage ready", metadata: [
            "path": "\(outbox.path)", "stored_events": "\(outbox.storedCount)",
        ])
        let checkpointer = WALCheckpointer(outbox: outbox, logger: logger)
        checkpointer.start()
        defer { checkpointer.stop() }
        let group = MultiThreadedEventLoopGroup(numberOfThreads: System.coreCount)
        let client = PlunkClient(
            baseURL: config.plunkBaseURL, concurrency: config.concurrency,
            requestTimeout: config.requestTimeout, eventLoopGroup: group,
            extraTrustRoots: try config.caFile.map(TrustedRoots.load), proxy: config.proxy)
        if let proxy = config.proxy {
            logger.info("reaching Plunk through a proxy", metadata: ["proxy": "\(proxy)", "from": "\(config.proxySource ?? "?")"])
        }
        if let caFile = config.caFile {
            logger.info("trusting the roots of plunk.ca_file for Plunk, besides the system's", metadata: ["ca_file": "\(caFile)"])
        }
        let senderSettings = Sender.Settings(
            apiKey: config.apiKey, concurrency: config.concurrency,
            retry: RetryPolicy(initialBackoff: config.initialBackoff, maxBackoff: config.maxBackoff, maxAge: config.maxAge))
        let metrics = MetricsExposition()
        let sender = Sender(
            outbox: outbox, transport: client, settings: senderSettings, logger: logger,
            metrics: DeliveryMetrics(factory: metrics.factory))
        sender.observeState { state in notifier.notify("STATUS=\(SystemdStatusLine.text(for: state))") }
        try sender.start()
        if config.apiKey == nil {
            logger.warning("no API key configured (plunk.api_key, PLUNK_API_KEY, plunk.api_key_file or the plunk-api-key credential): events are kept, nothing is sent")
        }
        let committer = GroupCommitter(
            outbox: outbox, maxPending: config.maxPending, logger: logger,
            metrics: IngestMetrics(factory: metrics.factory), didCommit: { sender.wake() })
        committer.start()
        let policy = PeerPolicyBox(config.peerPolicy)
        let socketPath = inherited?.path ?? config.socketPath
        if let inherited, inherited.path != config.socketPath {
            logger.warning("systemd passed the socket \(inherited.path), but socket.path is \(config.socketPath): plunkd serves \(inherited.path); set socket.path to match so that plunkd status and send find it")
        }
        let routes = ControlRoutes(
            sender: sender, outbox: outbox,
            context: StatusContext(
                socketPath: socketPath, databasePath: config.storagePath,
                warnOldestAge: config.warnOldestAge, startedAt: Date()),
            policy: policy, metrics: metrics)
        var metricsListener: MetricsListener?
        if let listen = config.metricsListen {
            do {
                metricsListener = try await MetricsListener(host: listen.host, port: listen.port, group: group) {
                    routes.metricsText() ?? ""
                }
                logger.info("serving /metrics over TCP", metadata: ["address": "\(listen)"])
            } catch {
                committer.shutdown()
                await sender.shutdown(grace: .zero)
                throw ConfigurationError("metrics.listen \(listen): cannot listen: \(error)")
            }
        }
        let server = IngestServer(
            settings: IngestSocketSettings(
                path: config.socketPath,
                mode: config.socketMode,
                maxConnections: config.maxConnections,
                idleTimeout: .nanoseconds(Int64(config.idleTimeout * 1e9)),
                peerPolicy: policy,
                inherited: inherited),
            committer: committer,
            validator: EventValidator(maxEventBytes: config.maxEventBytes),
            group: group,
            logger: logger,
            control: routes)
        let watchdog = notifier.watchdogInterval.map {
            DeliveryWatchdog(
                sender: sender, notifier: notifier, interval: $0,
                maxRequestAge: config.requestTimeout + 30, logger: logger)
        }
        let service = IngestService(
            server: server, committer: committer, sender: sender, notifier: notifier, watchdog: watchdog,
            grace: .nanoseconds(Int64(config.shutdownGrace * 1e9)),
            socketPath: socketPath, activated: inherited != nil, logger: logger)
        let hangup = ReloadOnHangup(
            current: config, sender: sender, client: client, policy: policy, reload: reload, logger: logger)
        hangup.start()
        defer { hangup.stop() }
        let services = ServiceGroup(
            services: [service], gracefulShutdownSignals: [.sigterm, .sigint], logger: logger)
        let outcome = await Result(catching: { try await services.run() })
        await metricsListener?.close()
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
    let notifier: SystemdNotifier
    let watchdog: DeliveryWatchdog?
    let grace: TimeAmount
    let socketPath: String
    let activated: Bool
    let logger: Logger

    func run() async throws {
        do {
            try await server.start()
        } catch {
            committer.shutdown()
            await sender.shutdown(grace: .zero)
            throw error
        }
        logger.info("listening", metadata: ["socket": "\(socketPath)", "activated_by_systemd": "\(activated)"])
        // The store is open and the socket accepts: only now may systemd start what depends on plunkd.
        notifier.notify("READY=1", "STATUS=\(SystemdStatusLine.text(for: sender.snapshot().state))")
        watchdog?.start()
        try? await gracefulShutdown()
        notifier.notify("STOPPING=1", "STATUS=shutting down: answering clients, finishing requests in flight")
        watchdog?.stop()
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
