import Foundation
import Logging
import NIOCore
import NIOSSL

/// One line from a store to one of Plunk's routes: track events to `/v1/track`, emails
/// to `/v1/send`. Each has its own store and lock, checkpointer, committer, sender and
/// Plunk client, key, metrics and status, so a paused or slow line never holds another.
///
/// The daemon builds one per `EventKind` and starts, reloads, watches, reports and stops
/// them in one loop; what differs between kinds is said once, in `EventKind`'s line
/// definition below, and nowhere in `Daemon`.
struct DeliveryLine: Sendable {
    let kind: EventKind
    let outbox: Outbox
    let client: PlunkClient
    let sender: Sender
    let committer: GroupCommitter
    let checkpointer: WALCheckpointer
    /// `storage.parked_max_age`'s deletions, when one is set.
    let retention: ParkedRetention?
    let logger: Logger
    /// Held for the line's life: a second daemon on the same store is refused at start-up.
    private let storeLock: StoreLock

    /// Builds the line's parts on its opened store. Nothing is started: see `startSending`
    /// and the daemon's parts.
    init(
        store: LineStore, config: DaemonConfiguration, clientGroup: any EventLoopGroup, extraRoots: [NIOSSLCertificate]?,
        metrics: MetricsExposition, keyScope: ClientKeyScope
    ) {
        kind = store.kind
        outbox = store.outbox
        logger = store.logger
        storeLock = store.lock
        client = PlunkClient(
            baseURL: config.plunkBaseURL, concurrency: config.requestSlotsCeiling,
            requestTimeout: config.requestTimeout, eventLoopGroup: clientGroup,
            extraTrustRoots: extraRoots, proxy: config.proxy, httpVersion: config.httpVersion, kind: kind)
        checkpointer = WALCheckpointer(outbox: outbox, logger: logger)
        let deliveryMetrics = DeliveryMetrics(factory: metrics.factory, kind: kind)
        let sender = Sender(
            outbox: outbox, transport: client, settings: Self.deliverySettings(kind: kind, config: config),
            logger: logger, metrics: deliveryMetrics, loop: clientGroup.next())
        self.sender = sender
        retention = config.parkedMaxAge.map { maxAge in
            ParkedRetention(
                outbox: store.outbox, maxAge: maxAge, queue: sender.storeQueue, logger: store.logger,
                deleted: deliveryMetrics.deletedByRetention)
        }
        committer = GroupCommitter(
            outbox: outbox, maxPending: config.maxPending, logger: logger,
            metrics: IngestMetrics(factory: metrics.factory, kind: kind), keyScope: keyScope, didCommit: { sender.wake() })
        keyScope.register(line: kind, outbox: outbox)
    }

    private static func deliverySettings(kind: EventKind, config: DaemonConfiguration) -> DeliverySettings {
        var settings = DeliverySettings(
            apiKey: kind.key(in: config), concurrency: config.requestSlotsCeiling, retry: config.retryPolicy)
        settings.adaptsConcurrency = config.concurrency == nil
        settings.maxRate = config.maxRate
        settings.maxRateBurst = config.maxRateBurst
        settings.rekeyBurnedTrackKeys = config.rekeyBurnedTrackKeys
        settings.kind = kind
        return settings
    }

    /// Starts delivering what the store holds and says so when there is no key to send with.
    func startSending(config: DaemonConfiguration) async throws {
        try await sender.start()
        if kind.key(in: config) == nil {
            logger.log(level: kind.missingKeyLevel, "\(kind.missingKeyMessage)")
        }
    }

    /// What `plunkd status` reports for this line, and what its control commands act on.
    func controlled(config: DaemonConfiguration, socketPath: String, startedAt: Date) -> ControlledLine {
        let context = StatusContext(
            socketPath: socketPath, databasePath: kind.storagePath(in: config), warnOldestAge: config.warnOldestAge,
            startedAt: startedAt, listen: config.ingestListen.map { "\($0)" }, kind: kind, parkedMaxAge: config.parkedMaxAge)
        return ControlledLine(sender: sender, outbox: outbox, context: context)
    }
}

/// A line's store, opened before anything else is built: a damaged store or one another
/// daemon holds stops start-up before a thread or a connection exists.
struct LineStore: Sendable {
    let kind: EventKind
    let lock: StoreLock
    let outbox: Outbox
    let logger: Logger

    init(kind: EventKind, config: DaemonConfiguration, logger: Logger) throws {
        self.kind = kind
        var logger = logger
        if kind != .track { logger[metadataKey: "line"] = "\(kind.rawValue)" }
        self.logger = logger
        let path = kind.storagePath(in: config)
        lock = try StoreLock(storePath: path)
        outbox = try Outbox(
            path: path, maxBytes: config.maxStorageBytes, reserveBytes: config.storageReserveBytes,
            idempotencyWindow: config.idempotencyWindow)
        logger.info("\(kind.storeName) ready", metadata: ["path": "\(outbox.path)", "stored_\(kind.noun)s": "\(outbox.storedCount)"])
    }
}

/// What differs between the kinds of line, said once. A new kind adds its case here.
extension EventKind {
    /// Where the line's store lives: track's is `storage.path`; the others sit beside it.
    func storagePath(in config: DaemonConfiguration) -> String {
        switch self {
        case .track: config.storagePath
        case .email: config.emailStoragePath
        }
    }

    /// The key the line sends with; nil keeps what arrives and sends nothing.
    func key(in config: DaemonConfiguration) -> APIKey? {
        switch self {
        case .track: config.apiKey
        case .email: config.emailKey
        }
    }

    /// How the line's store is named in the log at start-up.
    var storeName: String {
        switch self {
        case .track: "storage"
        case .email: "email storage"
        }
    }

    /// A missing public key is a warning (track events are why plunkd runs); a missing
    /// secret key only a notice, since most hosts send no email through plunkd.
    var missingKeyLevel: Logger.Level {
        switch self {
        case .track: .warning
        case .email: .notice
        }
    }

    var missingKeyMessage: String {
        switch self {
        case .track:
            "no API key configured (plunk.api_key, PLUNK_API_KEY, plunk.api_key_file or the plunk-api-key credential): events are kept, nothing is sent"
        case .email:
            "no secret key configured (plunk.secret_key, PLUNK_SECRET_KEY, plunk.secret_key_file or the plunk-secret-key credential): emails sent to /v1/send are kept, not sent"
        }
    }
}
