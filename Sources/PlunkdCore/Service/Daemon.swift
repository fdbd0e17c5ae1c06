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
        let stores = try EventKind.allCases.map { try LineStore(kind: $0, config: config, logger: logger) }
        let extraRoots = try config.caFile.map(TrustedRoots.load)
        // Nothing below throws until the group runs: from here on, every part that holds
        // a resource (the event loops, the HTTP clients) is released by its part's stop.
        let group = MultiThreadedEventLoopGroup(numberOfThreads: System.coreCount)
        // Plunk's connections on one loop of their own, for every line: answers that come
        // together are read in one wake-up of one thread, and ingest's loops never carry
        // a request. Measured: 7 % less CPU per event,
        // at once and at 20 ms (docs/benchmarks.md). One thread is ample for a Plunk
        // that is 50 ms or more away and rate-limited to hundreds of requests a second.
        let clientGroup = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let metrics = MetricsExposition()
        let keyScope = ClientKeyScope()
        let lines = stores.map {
            DeliveryLine(store: $0, config: config, clientGroup: clientGroup, extraRoots: extraRoots, metrics: metrics, keyScope: keyScope)
        }
        logReach(config, logger: logger)
        let track = lines[0]
        track.sender.observeState { state in notifier.notify("STATUS=\(ReportedState(state).systemdStatus)") }
        let socketPath = inherited?.path ?? config.socketPath
        if let inherited, inherited.path != config.socketPath {
            logger.warning(
                "systemd passed the socket \(inherited.path), but socket.path is \(config.socketPath): plunkd serves \(inherited.path); set socket.path to match so that plunkd status and send find it"
            )
        }
        let policy = PeerPolicyBox(config.peerPolicy)
        let tokens = IngestTokensBox(config.ingestTokens)
        let routes = ControlRoutes(
            lines: lines.map { $0.controlled(config: config, socketPath: socketPath, startedAt: Date()) }, policy: policy,
            metrics: metrics)
        let doors = IngestDoors(config: config, lines: lines)
        var parts = DaemonParts()
        parts.add(
            "Plunk clients and event loops",
            stop: {
                for line in lines { await line.client.shutdown() }
                for group in [clientGroup, group] { try? await group.shutdownGracefully() }
            })
        parts.addLines(lines, config: config, grace: config.shutdownGraceDuration, logger: logger)
        parts.add(
            "reload on SIGHUP",
            serve: {
                await ReloadOnHangup(current: config, lines: lines, policy: policy, tokens: tokens, reload: reload, logger: logger).serve()
            })
        if let listen = config.metricsListen {
            parts.addMetricsListener(listen, group: group, logger: logger) { routes.metricsText() ?? "" }
        }
        if let listen = config.ingestListen {
            parts.addTCPIngest(listen, config: config, doors: doors, tokens: tokens, group: group, logger: logger)
        }
        let server = IngestServer(
            settings: IngestSocketSettings(
                path: config.socketPath, mode: config.socketMode, maxConnections: config.maxConnections,
                idleTimeout: config.idleTimeAmount, peerPolicy: policy, inherited: inherited),
            committer: doors.track, validator: doors.trackValidator, group: group, logger: logger, control: routes,
            routes: doors.routes)
        parts.add(
            "ingest socket",
            start: {
                try await server.start()
                logger.info("listening", metadata: ["socket": "\(socketPath)", "activated_by_systemd": "\(inherited != nil)"])
                // The store is open and the socket accepts: only now may systemd start what depends on plunkd.
                let state = try await track.sender.currentSnapshot().state
                notifier.notify("READY=1", "STATUS=\(ReportedState(state).systemdStatus)")
            },
            stop: {
                notifier.notify("STOPPING=1", "STATUS=shutting down: answering clients, finishing requests in flight")
                logger.info("shutting down: no new connections; answering clients")
                await server.shutdown(grace: config.shutdownGraceTimeAmount)
            })
        if let interval = notifier.watchdogInterval {
            let watchdog = DeliveryWatchdog(
                senders: lines.map(\.sender), notifier: notifier, interval: interval,
                maxRequestAge: config.requestTimeout + 30, logger: logger)
            parts.add("watchdog", start: { watchdog.start() }, stop: { watchdog.stop() })
        }
        // The socket and the senders each wait up to the grace; past twice that and more, a
        // part is hung, and the group cancels what is left rather than hang the stop.
        let backstop = config.shutdownGraceDuration * 2 + .seconds(30)
        try await parts.group(signals: [.sigterm, .sigint], backstop: backstop, logger: logger).run()
        withExtendedLifetime(stores) {}
        logger.info("stopped")
    }

    private static func logReach(_ config: DaemonConfiguration, logger: Logger) {
        if let proxy = config.proxy {
            logger.info("reaching Plunk through a proxy", metadata: ["proxy": "\(proxy)", "from": "\(config.proxySource ?? "?")"])
        }
        if let caFile = config.caFile {
            logger.info("trusting the roots of plunk.ca_file for Plunk, besides the system's", metadata: ["ca_file": "\(caFile)"])
        }
    }
}
