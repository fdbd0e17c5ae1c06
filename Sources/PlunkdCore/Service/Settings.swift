import Foundation

/// Every configuration key, declared once: its name, default, meaning, whether SIGHUP
/// applies it, and how its text becomes a field of `DaemonConfiguration`. Loading,
/// validation, `check-config`, reload's restart-only list, the environment variables and
/// `plunkd.yaml(5)` and `docs/configuration.md` all come from this table; a test holds
/// `config/plunkd.yaml` to it.
public enum Settings {
    public static let all: [Setting] = [
        .value(
            "plunk.base_url", \DaemonConfiguration.plunkBaseURL, default: "https://api.useplunk.com/v1",
            "Plunk's API up to and including /v1; events go to <base_url>/track. v2: https://next-api.useplunk.com/v1.",
            parse: { v throws(ConfigurationError) in try v.httpURL() }),
        .derived(
            "plunk.api_key", \DaemonConfiguration.apiKey, default: "none", reloads: true, secret: true,
            "The API key (v2 track takes the public pk_ key). Prefer plunk.api_key_file or the systemd credential plunk-api-key. Without a key, events are kept and nothing is sent. Never logged."
        ),
        .derived(
            "plunk.api_key_file", \DaemonConfiguration.apiKey, default: "none", reloads: true,
            "A file holding the key, read when plunk.api_key is unset; then the credential plunk-api-key in $CREDENTIALS_DIRECTORY."),
        .derived(
            "plunk.secret_key", \DaemonConfiguration.secretKey, default: "none (a secret plunk.api_key serves, as on the legacy host)",
            reloads: true, secret: true,
            "The secret (sk_) key that /v1/send needs. Prefer plunk.secret_key_file or the systemd credential plunk-secret-key. Without one (and without an sk_ plunk.api_key), emails are kept and nothing is sent. Never logged."
        ),
        .derived(
            "plunk.secret_key_file", \DaemonConfiguration.secretKey, default: "none", reloads: true,
            "A file holding the secret key, read when plunk.secret_key is unset; then the credential plunk-secret-key in $CREDENTIALS_DIRECTORY."),
        .value(
            "plunk.concurrency", \DaemonConfiguration.concurrency, default: "auto",
            "Requests to Plunk in flight at once: auto (learned from Plunk's answers, up to plunk.max_concurrency) or a fixed number (1 to 1024).",
            parse: { v throws(ConfigurationError) in
                v.text.trimmingCharacters(in: .whitespaces).lowercased() == "auto" ? nil : try v.integer(in: 1...1024, orWord: "auto")
            }),
        .value(
            "plunk.max_concurrency", \DaemonConfiguration.maxConcurrency, default: "64",
            "The most requests in flight that auto may learn (1 to 1024): 64 carries Plunk v2's track limit (100/s) at a 600 ms round trip and keeps the connections one host opens to Plunk modest.",
            parse: { v throws(ConfigurationError) in try v.integer(in: 1...1024) }),
        .value(
            "plunk.max_rate", \DaemonConfiguration.maxRate, default: "off",
            "Requests to Plunk per second at most, on average (0.01 to 100000), so hosts sharing one project share its rate limit. Plunk's own RateLimit headers are heeded without it.",
            parse: { v throws(ConfigurationError) in try v.number(in: 0.01...100_000, orWord: "off") }),
        .value(
            "plunk.max_rate_burst", \DaemonConfiguration.maxRateBurst, default: "one second of plunk.max_rate",
            "Requests that may leave at once under plunk.max_rate after a quiet spell (1 to 100000; auto: one second's worth).",
            parse: { v throws(ConfigurationError) in try v.number(in: 1...100_000, orWord: "auto") }),
        .value(
            "plunk.request_timeout", \DaemonConfiguration.requestTimeout, default: "10s",
            "Time allowed for one request to Plunk; also bounds connecting.",
            parse: { v throws(ConfigurationError) in try v.duration(min: 0.001, max: 3600) }),
        .value(
            "plunk.http_version", \DaemonConfiguration.httpVersion, default: "auto",
            "auto: HTTP/2 when Plunk offers it over TLS (ALPN), many requests over one connection; else HTTP/1.1, one connection per request in flight. http1: HTTP/1.1 only, for a proxy or load balancer that mishandles HTTP/2.",
            parse: { v throws(ConfigurationError) in PlunkHTTPVersion(rawValue: try v.oneOf(["auto", "http1"]))! }),
        .value(
            "plunk.rekey_burned_track_keys", \DaemonConfiguration.rekeyBurnedTrackKeys, default: "false",
            "false follows Plunk's contract: a track event whose Idempotency-Key Plunk kept after a failed first attempt (409, originalStatusCode 5xx) is held by Plunk and finished there, so it counts as delivered. true sends it again under a new key, for self-hosted Plunk 0.13-0.16, which can fail without storing (the first-seen-contact race); on a newer Plunk that makes a second event. Emails are never re-keyed but by plunkd parked retry --new-key.",
            parse: { v throws(ConfigurationError) in try v.boolean() }),
        .value(
            "plunk.ca_file", \DaemonConfiguration.caFile, default: "none", reloads: true,
            "A PEM bundle of roots trusted for Plunk in addition to the system's, for a Plunk behind a private CA.",
            parse: { v throws(ConfigurationError) in
                // Read whole here so a bad bundle stops start-up (or a reload) with this key named.
                let path = try v.path()
                _ = try TrustedRoots.load(path)
                return path
            }),
        .derived(
            "plunk.proxy", \DaemonConfiguration.proxy, default: "none (else https_proxy or HTTPS_PROXY unless no_proxy or NO_PROXY names Plunk's host)",
            secret: true,
            "An HTTP proxy, http://[user:password@]host:port; HTTPS to Plunk is tunnelled with CONNECT. The password is never shown."),
        .value(
            "socket.path", \DaemonConfiguration.socketPath,
            default: "/run/plunkd/plunkd.sock for root, $XDG_RUNTIME_DIR/plunkd/plunkd.sock, else /tmp/plunkd-<uid>/plunkd.sock",
            "The Unix socket apps write events to. Its directory must not be writable by others (unless sticky); /tmp/plunkd-<uid> must be the user's own, mode 0700.",
            parse: { v throws(ConfigurationError) in try v.path() }),
        .value(
            "socket.mode", \DaemonConfiguration.socketMode, default: "0660",
            "The socket's file mode (octal).",
            parse: { v throws(ConfigurationError) in try v.fileMode() }),
        .value(
            "socket.max_connections", \DaemonConfiguration.maxConnections, default: "1024",
            "Client connections open at once; more are closed at once.",
            parse: { v throws(ConfigurationError) in try v.integer(in: 1...1_000_000) }),
        .value(
            "socket.idle_timeout", \DaemonConfiguration.idleTimeout, default: "300s",
            "A connection idle this long is closed.",
            parse: { v throws(ConfigurationError) in try v.duration(min: 0.001) }),
        .list(
            "socket.allowed_uids", \DaemonConfiguration.allowedUIDs, default: "empty (anyone the socket's mode lets in)", reloads: true,
            "Users (numbers or names) who may submit events, checked by the peer's credentials.",
            parse: { v throws(ConfigurationError) in try v.ids(kind: .user) }),
        .list(
            "socket.allowed_gids", \DaemonConfiguration.allowedGIDs, default: "empty", reloads: true,
            "Groups whose members may submit events.",
            parse: { v throws(ConfigurationError) in try v.ids(kind: .group) }),
        .list(
            "socket.admin_uids", \DaemonConfiguration.adminUIDs, default: "empty (root and the daemon's user only)", reloads: true,
            "Users who may run control commands (resume, parked retry and drop).",
            parse: { v throws(ConfigurationError) in try v.ids(kind: .user) }),
        .value(
            "storage.path", \DaemonConfiguration.storagePath,
            default: "/var/lib/plunkd/outbox.sqlite for root, else $XDG_STATE_HOME/plunkd/outbox.sqlite (~/.local/state)",
            "The SQLite outbox.",
            parse: { v throws(ConfigurationError) in try v.path() }),
        .value(
            "storage.max_pending", \DaemonConfiguration.maxPending, default: "5000000",
            "Events kept at most; past it new events are refused retryably.",
            parse: { v throws(ConfigurationError) in try v.integer(in: 1...Int(Int32.max)) }),
        .value(
            "storage.max_bytes", \DaemonConfiguration.maxStorageBytes, default: "0 (only the disk limits it)",
            "Upper bound on the store's size; past it new events are refused retryably.",
            parse: { v throws(ConfigurationError) in
                let bytes = try v.byteSize(min: 0)
                return bytes == 0 ? nil : max(bytes, 64 * 1024)
            }),
        .value(
            "storage.reserve_bytes", \DaemonConfiguration.storageReserveBytes, default: "16m",
            "Disk space kept for delivery: with less free on the store's filesystem (counting the store's free pages), new events are refused retryably, so delivery, which makes room, can always commit. 0 turns it off.",
            parse: { v throws(ConfigurationError) in try v.byteSize(min: 0) }),
        .value(
            "storage.parked_max_age", \DaemonConfiguration.parkedMaxAge,
            default: "0",
            "Parked events and emails parked for longer than this are deleted, each deletion logged and counted (retention_deleted_total); plunkd status says how many are due within a day. 0 keeps them.",
            parse: { v throws(ConfigurationError) in
                let seconds = try v.duration(min: 0)
                return seconds == 0 ? nil : max(seconds, 1)
            }),
        .value(
            "ingest.max_event_bytes", \DaemonConfiguration.maxEventBytes, default: "65536",
            "The largest event body accepted (256 to 16 MiB).",
            parse: { v throws(ConfigurationError) in try v.integer(in: 256...(16 << 20)) }),
        .value(
            "ingest.idempotency_window", \DaemonConfiguration.idempotencyWindow, default: "24h",
            "How long a client's Idempotency-Key (the HTTP header, or an NDJSON event's idempotencyKey member) is remembered after its event arrived: a repeat within it gets the first event's id back and stores nothing.",
            parse: { v throws(ConfigurationError) in try v.duration(min: 1, max: 30 * 86_400) }),
        .value(
            "ingest.listen", \DaemonConfiguration.ingestListen, default: "empty (the Unix socket only)",
            "Also serve the HTTP routes (/v1/track) on this TCP address, a port (loopback) or host:port, for clients that cannot reach a Unix socket, such as Plunk's SDKs. Every request must carry Authorization: Bearer with one of ingest.tokens. Loopback only unless ingest.listen_beyond_loopback.",
            parse: { v throws(ConfigurationError) in try v.hostAndPort() }),
        .value(
            "ingest.listen_beyond_loopback", \DaemonConfiguration.ingestListenBeyondLoopback, default: "false",
            "Let ingest.listen be an address other hosts can reach. Plain HTTP: tokens and events cross the network unencrypted.",
            parse: { v throws(ConfigurationError) in try v.boolean() }),
        .derived(
            "ingest.tokens", \DaemonConfiguration.ingestTokens, default: "none", reloads: true, secret: true, list: true,
            "Bearer tokens (at least 16 characters each) that admit a client of ingest.listen; a list, so one can be rotated at a time. Prefer ingest.tokens_file: the config file is readable by every user. Never logged."
        ),
        .derived(
            "ingest.tokens_file", \DaemonConfiguration.ingestTokens, default: "none", reloads: true,
            "A file holding the tokens, one per line (# starts a comment), read when ingest.tokens is unset."),
        .value(
            "send.max_age", \DaemonConfiguration.sendMaxAge, default: "1h",
            "How long a transactional email (/v1/send) may wait to be sent: past it, it is parked expired instead of sent late. A request's Plunkd-Max-Age header sets its own (1s to 7d).",
            parse: { v throws(ConfigurationError) in try v.duration(min: 1, max: EmailValidator.longestMaxAge) }),
        .value(
            "send.max_bytes", \DaemonConfiguration.sendMaxBytes, default: "1m",
            "The largest /v1/send body accepted, attachments included (1 KiB to 16 MiB).",
            parse: { v throws(ConfigurationError) in Int(try v.byteSize(min: 1024, max: 16 << 20)) }),
        .value(
            "send.split_recipients", \DaemonConfiguration.sendSplitRecipients, default: "true",
            "An email to several recipients goes to Plunk as one request per recipient, each with its own key, so a failure part-way leaves each recipient's outcome known and retryable alone. false sends one request for all: Plunk then sends to them one at a time under one key, and a 5xx part-way parks the whole email uncertain, some recipients served and some not.",
            parse: { v throws(ConfigurationError) in try v.boolean() }),
        .value(
            "retry.initial_backoff", \DaemonConfiguration.initialBackoff, default: "1s", reloads: true,
            "The first retry waits a random time up to this; each further one up to twice as long.",
            parse: { v throws(ConfigurationError) in try v.duration(min: 0.001) }),
        .value(
            "retry.max_backoff", \DaemonConfiguration.maxBackoff, default: "300s", reloads: true,
            "The longest wait between attempts, and the cap on Retry-After.",
            parse: { v throws(ConfigurationError) in try v.duration(min: 0.001) }),
        .value(
            "retry.max_age", \DaemonConfiguration.maxAge, default: "7d", reloads: true,
            "An event failing for longer than this is parked expired, never dropped.",
            parse: { v throws(ConfigurationError) in try v.duration(min: 1) }),
        .value(
            "shutdown_grace", \DaemonConfiguration.shutdownGrace, default: "10s",
            "On SIGTERM, how long to wait for requests in flight.",
            parse: { v throws(ConfigurationError) in try v.duration(min: 0, max: 3600) }),
        .value(
            "status.warn_oldest_age", \DaemonConfiguration.warnOldestAge, default: "15m",
            "plunkd status warns when the oldest pending event is older.",
            parse: { v throws(ConfigurationError) in try v.duration(min: 1) }),
        .value(
            "metrics.listen", \DaemonConfiguration.metricsListen, default: "empty (metrics on the socket only)",
            "Also serve /metrics on this TCP address: a port (loopback) or host:port.",
            parse: { v throws(ConfigurationError) in try v.hostAndPort() }),
        .value(
            "log.level", \DaemonConfiguration.logLevel, default: "info",
            "trace, debug, info, notice, warning, error or critical.",
            parse: { v throws(ConfigurationError) in try v.oneOf(["trace", "debug", "info", "notice", "warning", "error", "critical"]) }),
        .value(
            "log.format", \DaemonConfiguration.logFormat, default: "text",
            "text: one line per record (under systemd, the journal keeps its priority either way); json: one JSON object per line (time, level, label, message, then the record's fields by name), for log shippers. Keys and tokens appear in neither.",
            parse: { v throws(ConfigurationError) in LogFormat(rawValue: try v.oneOf(["text", "json"]))! }),
    ]

    /// The keys that take a list: a YAML list, or one comma-separated string (as
    /// environment variables must give them).
    public static var listKeys: Set<String> { Set(all.filter(\.isList).map(\.key)) }

    /// Settings read only at start-up that differ between `old` and `new`, by name.
    static func needingRestart(from old: DaemonConfiguration, to new: DaemonConfiguration) -> [String] {
        all.filter { !$0.reloads && $0.changed(old, new) }.map(\.key)
    }
}
