import Foundation
import NIOCore

/// Everything the daemon reads from its configuration, validated and with defaults filled in.
public struct DaemonConfiguration: Sendable, Equatable {
    public var plunkBaseURL: URL
    public var apiKey: APIKey?
    /// The file the key was read from (`plunk.api_key_file`), if it came from one: its
    /// permissions are checked (`ConfigAdvice`).
    public var apiKeyFile: String? = nil
    /// The secret (`sk_`) key for `/v1/send` (`plunk.secret_key`, `plunk.secret_key_file`,
    /// or the credential `plunk-secret-key`).
    public var secretKey: APIKey? = nil
    /// The file the secret key was read from, if it came from one: checked as `apiKeyFile` is.
    public var secretKeyFile: String? = nil
    /// The key emails are sent with: the secret key, else a secret `plunk.api_key` (on the
    /// legacy host one `sk_` key serves track and send alike). A public key cannot send.
    public var emailKey: APIKey? { secretKey ?? (apiKey?.kindPrefix == "sk_" ? apiKey : nil) }
    /// Requests in flight at once; nil for `auto` (learned, up to `maxConcurrency`).
    public var concurrency: Int?
    public var maxConcurrency: Int
    /// The most requests in flight ever: the fixed number, or the most `auto` may learn.
    public var requestSlotsCeiling: Int { concurrency ?? maxConcurrency }
    /// `plunk.max_rate`: requests per second at most; nil for none of our own.
    public var maxRate: Double?
    /// Requests that may leave at once under `maxRate`; nil for one second's worth.
    public var maxRateBurst: Double?
    public var requestTimeout: Double
    /// `plunk.http_version`: HTTP/2 when Plunk offers it over TLS, or HTTP/1.1 only.
    public var httpVersion: PlunkHTTPVersion
    /// `plunk.rekey_burned_track_keys`.
    public var rekeyBurnedTrackKeys: Bool
    /// A PEM bundle of roots trusted for Plunk besides the system's (`plunk.ca_file`).
    public var caFile: String?
    /// The HTTP proxy to Plunk, from `plunk.proxy` or the environment's `HTTPS_PROXY`.
    public var proxy: ProxyEndpoint?
    /// Where `proxy` came from (`plunk.proxy`, `HTTPS_PROXY`, …), for the log.
    public var proxySource: String?

    public var socketPath: String
    public var socketMode: UInt16
    public var maxConnections: Int
    public var idleTimeout: Double
    /// Who may submit events (empty: anyone the socket's mode lets in).
    public var allowedUIDs: Set<UInt32>
    public var allowedGIDs: Set<UInt32>
    /// Who may run control commands, besides root and the daemon's user.
    public var adminUIDs: Set<UInt32>

    public var storagePath: String
    public var maxPending: Int
    /// Upper bound on the store's size in bytes; nil means only the disk limits it.
    public var maxStorageBytes: Int64?
    /// Disk space new events may not take, so that delivery can always commit (0: none).
    public var storageReserveBytes: Int64

    public var maxEventBytes: Int
    /// `ingest.listen`: a loopback TCP address also serving the HTTP routes, for clients
    /// (Plunk's SDKs) that cannot reach a Unix socket; nil (the default) for none.
    public var ingestListen: HostAndPort? = nil
    /// `ingest.listen_beyond_loopback`: lets `ingestListen` be an address other hosts reach.
    public var ingestListenBeyondLoopback: Bool
    /// The bearer tokens the TCP listener admits (`ingest.tokens` or `ingest.tokens_file`).
    public var ingestTokens = IngestTokens([])
    /// Where the tokens came from: the file `ingest.tokens_file` names, or the config file
    /// holding `ingest.tokens` (nil from the environment), so that `ConfigAdvice` can check
    /// who else may read them.
    public var ingestTokensFile: String? = nil
    /// The tokens are listed in the config file (`ingest.tokens`), not a file of their own.
    public var ingestTokensInConfigFile = false
    /// `ingest.idempotency_window`: how long a client's `Idempotency-Key` is remembered.
    public var idempotencyWindow: Double
    /// `storage.parked_max_age`: parked events older than this (since parking) are
    /// deleted; nil keeps them until delivered or dropped.
    public var parkedMaxAge: Double?
    /// `send.max_age`: how long an email may wait to be sent before it is parked `expired`.
    public var sendMaxAge: Double
    /// `send.max_bytes`: the largest `/v1/send` body accepted.
    public var sendMaxBytes: Int
    /// `send.split_recipients`.
    public var sendSplitRecipients: Bool

    public var initialBackoff: Double
    public var maxBackoff: Double
    public var maxAge: Double

    public var shutdownGrace: Double
    /// `plunkd status` warns when the oldest pending event is older than this.
    public var warnOldestAge: Double
    /// Where `/metrics` is also served over TCP; nil (the default) for the socket only.
    public var metricsListen: HostAndPort?
    public var logLevel: String
    /// `log.format`.
    public var logFormat: LogFormat

    /// Defaults for a daemon run by `uid` with `environment`: every default `Settings.all`
    /// spells is read from there (the only place it is written), then the paths, which
    /// depend on the user (`DefaultPaths`).
    /// - Parameter instance: `plunkd@NAME`'s paths instead of the user's or the plain service's.
    public static func defaults(uid: UInt32, environment: [String: String], instance: InstanceName? = nil) -> DaemonConfiguration {
        let paths = instance.map(DefaultPaths.init(instance:)) ?? DefaultPaths(uid: uid, environment: environment)
        var config = DaemonConfiguration(socketPath: paths.socketPath, storagePath: paths.storagePath)
        for setting in Settings.all {
            setting.readStatedDefault(into: &config)
        }
        // The paths' stated defaults read as paths too ("/run/plunkd/plunkd.sock for root, …").
        config.socketPath = paths.socketPath
        config.storagePath = paths.storagePath
        return config
    }

    /// The values whose defaults `Settings.all` describes rather than spells (nothing, or a
    /// path); every other field holds a placeholder until its stated default is read over
    /// it (`SettingDefaultsTests` fails when a stated default stops reading). Where a
    /// placeholder could matter, it is the cautious value.
    private init(socketPath: String, storagePath: String) {
        self.socketPath = socketPath
        self.storagePath = storagePath
        plunkBaseURL = URL(fileURLWithPath: "/")
        maxConcurrency = 0
        requestTimeout = 0
        socketMode = 0
        maxConnections = 0
        idleTimeout = 0
        allowedUIDs = []
        allowedGIDs = []
        adminUIDs = []
        maxPending = 0
        storageReserveBytes = 0
        maxEventBytes = 0
        initialBackoff = 0
        maxBackoff = 0
        maxAge = 0
        shutdownGrace = 0
        warnOldestAge = 0
        logLevel = ""
        httpVersion = .http1
        rekeyBurnedTrackKeys = false
        idempotencyWindow = 0
        sendMaxAge = 0
        sendMaxBytes = 0
        sendSplitRecipients = false
        logFormat = .json
        ingestListenBeyondLoopback = false
    }
}

extension DaemonConfiguration {
    /// The email line's store: beside the track store, `outbox.sqlite` → `outbox-email.sqlite`.
    public var emailStoragePath: String {
        let url = URL(fileURLWithPath: storagePath)
        let ext = url.pathExtension
        let stem = ext.isEmpty ? url.lastPathComponent : String(url.lastPathComponent.dropLast(ext.count + 1))
        let name = ext.isEmpty ? "\(stem)-email" : "\(stem)-email.\(ext)"
        return url.deletingLastPathComponent().appendingPathComponent(name).path
    }

    /// `service.shutdown_grace` as a duration.
    public var shutdownGraceDuration: Duration { .nanoseconds(Int64(shutdownGrace * 1e9)) }

    /// The same grace, as NIO takes it.
    var shutdownGraceTimeAmount: TimeAmount { .nanoseconds(Int64(shutdownGrace * 1e9)) }

    /// `socket.idle_timeout` as NIO takes it.
    var idleTimeAmount: TimeAmount { .nanoseconds(Int64(idleTimeout * 1e9)) }

    /// How a failed delivery is retried, and for how long.
    public var retryPolicy: RetryPolicy {
        RetryPolicy(initialBackoff: initialBackoff, maxBackoff: maxBackoff, maxAge: maxAge)
    }

    /// The socket's access rules, for a daemon running as the current user.
    public var peerPolicy: PeerPolicy {
        PeerPolicy(allowedUIDs: allowedUIDs, allowedGIDs: allowedGIDs, adminUIDs: adminUIDs, daemonUID: getuid())
    }
}

/// Where the daemon lives when the configuration does not say: system paths for root
/// (as systemd's RuntimeDirectory/StateDirectory would give), XDG paths for anyone else.
public struct DefaultPaths: Sendable {
    public let socketPath: String
    public let storagePath: String

    /// An instance's paths are the same for every user: an app's client finds the socket
    /// the daemon's user listens on.
    public init(instance: InstanceName) {
        socketPath = instance.socketPath
        storagePath = instance.storagePath
    }

    public init(uid: UInt32, environment: [String: String]) {
        if uid == 0 {
            socketPath = "/run/plunkd/plunkd.sock"
            storagePath = "/var/lib/plunkd/outbox.sqlite"
            return
        }
        if let runtime = environment["XDG_RUNTIME_DIR"], !runtime.isEmpty {
            socketPath = "\(runtime)/plunkd/plunkd.sock"
        } else {
            socketPath = "\(SocketPathGuard.privateDirectory(uid: uid))/plunkd.sock"
        }
        if let state = environment["XDG_STATE_HOME"], !state.isEmpty {
            storagePath = "\(state)/plunkd/outbox.sqlite"
        } else {
            let home = environment["HOME"].flatMap { $0.isEmpty ? nil : $0 } ?? NSHomeDirectory()
            storagePath = "\(home)/.local/state/plunkd/outbox.sqlite"
        }
    }
}
