import Logging
import NIOCore
import Synchronization

/// The daemon's parts that every line has, added once for all lines, and the listeners.
extension DaemonParts {
    /// Checkpointers, then senders, then committers: a committer stops (its last batch
    /// committed) before the sender it wakes, and a sender before the checkpointer of its store.
    mutating func addLines(_ lines: [DeliveryLine], config: DaemonConfiguration, grace: Duration, logger: Logger) {
        add(
            "checkpointers",
            start: { for line in lines { line.checkpointer.start() } },
            stop: { for line in lines { line.checkpointer.stop() } })
        add(
            "retention",
            start: { for line in lines { line.retention?.start() } },
            stop: { for line in lines { await line.retention?.stop() } })
        add(
            "senders",
            start: { for line in lines { try await line.startSending(config: config) } },
            stop: {
                logger.info("shutting down: waiting for requests in flight to Plunk")
                // Every line waits out the same grace at once, not one after the other: the
                // stop must fit systemd's TimeoutStopSec= as it did with one line.
                await withTaskGroup(of: Void.self) { group in
                    for line in lines { group.addTask { await line.sender.shutdown(grace: grace) } }
                }
            })
        add(
            "committers",
            start: { for line in lines { line.committer.start() } },
            stop: { for line in lines { line.committer.shutdown() } })
    }

    mutating func addMetricsListener(
        _ listen: HostAndPort, group: any EventLoopGroup, logger: Logger, text: @escaping @Sendable () -> String
    ) {
        let listener = Mutex<MetricsListener?>(nil)
        add(
            "metrics listener",
            start: {
                do {
                    let bound = try await MetricsListener(host: listen.host, port: listen.port, group: group, render: text)
                    listener.withLock { $0 = bound }
                } catch {
                    throw ConfigurationError("metrics.listen \(listen): cannot listen: \(error)")
                }
                logger.info("serving /metrics over TCP", metadata: ["address": "\(listen)"])
            }, stop: { await listener.withLock { $0 }?.close() })
    }

    mutating func addTCPIngest(
        _ listen: HostAndPort, config: DaemonConfiguration, doors: IngestDoors, tokens: IngestTokensBox,
        group: any EventLoopGroup, logger: Logger
    ) {
        let listener = TCPIngestListener(
            settings: TCPIngestSettings(
                address: listen, maxConnections: config.maxConnections, idleTimeout: config.idleTimeAmount, tokens: tokens),
            committer: doors.track, validator: doors.trackValidator, routes: doors.routes, group: group, logger: logger)
        add(
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
            stop: { await listener.shutdown(grace: config.shutdownGraceTimeAmount) })
    }
}

/// What the ingest routes commit to: track's committer and validator (NDJSON and
/// `/v1/track`), and every other line's route (`/v1/send`).
struct IngestDoors {
    let track: GroupCommitter
    let trackValidator: EventValidator
    let routes: [IngestRoute]

    init(config: DaemonConfiguration, lines: [DeliveryLine]) {
        track = lines.first { $0.kind == .track }!.committer
        trackValidator = EventValidator(maxEventBytes: config.maxEventBytes)
        routes = lines.compactMap { line in
            switch line.kind {
            case .track: nil
            case .email:
                .email(
                    committer: line.committer, validator: EmailValidator(maxBytes: config.sendMaxBytes, maxAge: config.sendMaxAge),
                    splitsRecipients: config.sendSplitRecipients)
            }
        }
    }
}
