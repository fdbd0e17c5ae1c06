import Foundation
import Logging
import NIOCore
import NIOPosix
import ServiceLifecycle
import Synchronization

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
        // Until the reload part traps it, a SIGHUP (`systemctl reload` right after READY)
        // must not end the process, which is its default action.
        signal(SIGHUP, SIG_IGN)
        let notifier = SystemdNotifier(environment: environment)
        let inherited = try InheritedSocket.fromEnvironment(environment)
        let storeLock = try StoreLock(storePath: config.storagePath)
        defer { withExtendedLifetime(storeLock) {} }
        let outbox = try Outbox(
            path: config.storagePath, maxBytes: config.maxStorageBytes, reserveBytes: config.storageReserveBytes,
            idempotencyWindow: config.idempotencyWindow)
        logger.info(
            "storage ready",
            metadata: [
                "path": "\(outbox.path)", "stored_events": "\(outbox.storedCount)",
            ])
        // The email line's own store, beside track's: its fsyncs, claims and backlog never
        // touch track's, and a damaged one stops start-up as loudly.
        let emailStoreLock = try StoreLock(storePath: config.emailStoragePath)
        defer { withExtendedLifetime(emailStoreLock) {} }
        let emailOutbox = try Outbox(
            path: config.emailStoragePath, maxBytes: config.maxStorageBytes, reserveBytes: config.storageReserveBytes,
            idempotencyWindow: config.idempotencyWindow)
        logger.info(
            "email storage ready", metadata: ["path": "\(emailOutbox.path)", "stored_emails": "\(emailOutbox.storedCount)"])
        let extraRoots = try config.caFile.map(TrustedRoots.load)
        // Nothing below throws until the group runs: from here on, every part that holds
        // a resource (the event loops, the HTTP client) is released by its part's stop.
        let group = MultiThreadedEventLoopGroup(numberOfThreads: System.coreCount)
        // Plunk's connections on one loop of their own, for both lines: answers that come
        // together are read in one wake-up of one thread, and ingest's loops (whose lone
        // commits fsync on them) never carry a request. Measured: 7 % less CPU per event,
        // at once and at 20 ms (README, "Performance"). One thread is ample for a Plunk
        // that is 50 ms or more away and rate-limited to hundreds of requests a second.
        let clientGroup = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let client = PlunkClient(
            baseURL: config.plunkBaseURL, concurrency: config.requestSlotsCeiling,
            requestTimeout: config.requestTimeout, eventLoopGroup: clientGroup,
            extraTrustRoots: extraRoots, proxy: config.proxy, httpVersion: config.httpVersion)
        let emailClient = PlunkClient(
            baseURL: config.plunkBaseURL, concurrency: config.requestSlotsCeiling,
            requestTimeout: config.requestTimeout, eventLoopGroup: clientGroup,
            extraTrustRoots: extraRoots, proxy: config.proxy, httpVersion: config.httpVersion, kind: .email)
        if let proxy = config.proxy {
            logger.info("reaching Plunk through a proxy", metadata: ["proxy": "\(proxy)", "from": "\(config.proxySource ?? "?")"])
        }
        if let caFile = config.caFile {
            logger.info("trusting the roots of plunk.ca_file for Plunk, besides the system's", metadata: ["ca_file": "\(caFile)"])
        }
        let checkpointer = WALCheckpointer(outbox: outbox, logger: logger)
        let emailCheckpointer = WALCheckpointer(outbox: emailOutbox, logger: logger)
        let metrics = MetricsExposition()
        var senderSettings = Sender.Settings(
            apiKey: config.apiKey, concurrency: config.requestSlotsCeiling,
            retry: RetryPolicy(initialBackoff: config.initialBackoff, maxBackoff: config.maxBackoff, maxAge: config.maxAge))
        senderSettings.adaptsConcurrency = config.concurrency == nil
        senderSettings.maxRate = config.maxRate
        senderSettings.maxRateBurst = config.maxRateBurst
        senderSettings.rekeyBurnedTrackKeys = config.rekeyBurnedTrackKeys
        let sender = Sender(
            outbox: outbox, transport: client, settings: senderSettings,
            logger: logger, metrics: DeliveryMetrics(factory: metrics.factory), loop: clientGroup.next())
        sender.observeState { state in notifier.notify("STATUS=\(ReportedState(state).systemdStatus)") }
        var emailSettings = senderSettings
        emailSettings.apiKey = config.emailKey
        emailSettings.kind = .email
        var emailLogger = logger
        emailLogger[metadataKey: "line"] = "email"
        let emailSender = Sender(
            outbox: emailOutbox, transport: emailClient, settings: emailSettings,
            logger: emailLogger, metrics: DeliveryMetrics(factory: metrics.factory, kind: .email), loop: clientGroup.next())
        let emailCommitter = GroupCommitter(
            outbox: emailOutbox, maxPending: config.maxPending, logger: emailLogger,
            metrics: IngestMetrics(factory: metrics.factory, kind: .email), didCommit: { emailSender.wake() })
        let email = EmailIngest(
            committer: emailCommitter, validator: EmailValidator(maxBytes: config.sendMaxBytes, maxAge: config.sendMaxAge),
            splitsRecipients: config.sendSplitRecipients)
        let committer = GroupCommitter(
            outbox: outbox, maxPending: config.maxPending, logger: logger,
            metrics: IngestMetrics(factory: metrics.factory), didCommit: { sender.wake() })
        let policy = PeerPolicyBox(config.peerPolicy)
        let socketPath = inherited?.path ?? config.socketPath
        if let inherited, inherited.path != config.socketPath {
            logger.warning(
                "systemd passed the socket \(inherited.path), but socket.path is \(config.socketPath): plunkd serves \(inherited.path); set socket.path to match so that plunkd status and send find it"
            )
        }
        let routes = ControlRoutes(
            sender: sender, outbox: outbox,
            context: StatusContext(
                socketPath: socketPath, databasePath: config.storagePath,
                warnOldestAge: config.warnOldestAge, startedAt: Date(), listen: config.ingestListen.map { "\($0)" }),
            email: ControlRoutes.EmailLine(
                sender: emailSender, outbox: emailOutbox,
                context: StatusContext(
                    socketPath: socketPath, databasePath: config.emailStoragePath, warnOldestAge: config.warnOldestAge, kind: .email)),
            policy: policy, metrics: metrics)
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
            control: routes,
            email: email)
        let tokens = IngestTokensBox(config.ingestTokens)
        let hangup = ReloadOnHangup(
            current: config, sender: sender, client: client, email: (emailSender, emailClient), policy: policy, tokens: tokens, reload: reload, logger: logger)
        let grace = Duration.nanoseconds(Int64(config.shutdownGrace * 1e9))
        let socketGrace = TimeAmount.nanoseconds(Int64(config.shutdownGrace * 1e9))

        // In start-up order; they stop in reverse (see `DaemonPart`).
        var parts = DaemonParts()
        parts.add(
            "delivery client",
            stop: {
                await client.shutdown()
                await emailClient.shutdown()
                try? await clientGroup.shutdownGracefully()
                try? await group.shutdownGracefully()
            })
        parts.add(
            "checkpointers",
            start: {
                checkpointer.start()
                emailCheckpointer.start()
            },
            stop: {
                checkpointer.stop()
                emailCheckpointer.stop()
            })
        parts.add(
            "sender",
            start: {
                try sender.start()
                if config.apiKey == nil {
                    logger.warning(
                        "no API key configured (plunk.api_key, PLUNK_API_KEY, plunk.api_key_file or the plunk-api-key credential): events are kept, nothing is sent"
                    )
                }
            },
            stop: {
                logger.info("shutting down: waiting for requests in flight to Plunk")
                // Both lines wait out the same grace at once, not one after the other: the
                // stop must fit systemd's TimeoutStopSec= as it did with one line.
                async let emailStopped: Void = emailSender.shutdown(grace: grace)
                await sender.shutdown(grace: grace)
                await emailStopped
            })
        parts.add(
            "email sender",
            start: {
                try emailSender.start()
                if config.emailKey == nil {
                    logger.notice(
                        "no secret key configured (plunk.secret_key, PLUNK_SECRET_KEY, plunk.secret_key_file or the plunk-secret-key credential): emails sent to /v1/send are kept, not sent"
                    )
                }
            })
        parts.add(
            "committers",
            start: {
                committer.start()
                emailCommitter.start()
            },
            stop: {
                committer.shutdown()
                emailCommitter.shutdown()
            })
        parts.add("reload on SIGHUP", serve: { await hangup.serve() })
        if let listen = config.metricsListen {
            let listener = Mutex<MetricsListener?>(nil)
            parts.add(
                "metrics listener",
                start: {
                    do {
                        let bound = try await MetricsListener(host: listen.host, port: listen.port, group: group) { routes.metricsText() ?? "" }
                        listener.withLock { $0 = bound }
                    } catch {
                        throw ConfigurationError("metrics.listen \(listen): cannot listen: \(error)")
                    }
                    logger.info("serving /metrics over TCP", metadata: ["address": "\(listen)"])
                }, stop: { await listener.withLock { $0 }?.close() })
        }
        if let listen = config.ingestListen {
            let listener = TCPIngestListener(
                settings: TCPIngestListener.Settings(
                    address: listen, maxConnections: config.maxConnections,
                    idleTimeout: .nanoseconds(Int64(config.idleTimeout * 1e9)), tokens: tokens),
                committer: committer, validator: EventValidator(maxEventBytes: config.maxEventBytes), email: email, group: group,
                logger: logger)
            parts.add(
                "ingest listener (TCP)",
                start: {
                    do {
                        try await listener.start()
                    } catch {
                        throw ConfigurationError("ingest.listen \(listen): cannot listen: \(error)")
                    }
                    logger.info(
                        "serving the HTTP routes over TCP, bearer tokens required",
                        metadata: ["address": "\(listen)", "tokens": "\(config.ingestTokens.count)"])
                },
                stop: { await listener.shutdown(grace: socketGrace) })
        }
        parts.add(
            "ingest socket",
            start: {
                try await server.start()
                logger.info("listening", metadata: ["socket": "\(socketPath)", "activated_by_systemd": "\(inherited != nil)"])
                // The store is open and the socket accepts: only now may systemd start what depends on plunkd.
                notifier.notify("READY=1", "STATUS=\(ReportedState(sender.snapshot().state).systemdStatus)")
            },
            stop: {
                notifier.notify("STOPPING=1", "STATUS=shutting down: answering clients, finishing requests in flight")
                logger.info("shutting down: no new connections; answering clients")
                await server.shutdown(grace: socketGrace)
            })
        if let interval = notifier.watchdogInterval {
            let watchdog = DeliveryWatchdog(
                senders: [sender, emailSender], notifier: notifier, interval: interval,
                maxRequestAge: config.requestTimeout + 30, logger: logger)
            parts.add("watchdog", start: { watchdog.start() }, stop: { watchdog.stop() })
        }
        // The socket and the sender each wait up to `grace`; past twice that and more, a
        // part is hung, and the group cancels what is left rather than hang the stop.
        try await parts.group(signals: [.sigterm, .sigint], backstop: grace * 2 + .seconds(30), logger: logger).run()
        logger.info("stopped")
    }
}
