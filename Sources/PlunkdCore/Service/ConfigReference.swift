/// What each configuration key means, once: `plunkd.yaml(5)` is written from it, and a
/// test holds it, the README's table and `config/plunkd.yaml` to the keys plunkd reads.
public enum ConfigReference {
    public struct Entry: Sendable {
        public let key: String
        public let defaultValue: String
        public let meaning: String
        /// Applied by SIGHUP (`systemctl reload plunkd`); the others need a restart.
        public let reloads: Bool
    }

    public static let entries: [Entry] = [
        Entry(key: "plunk.base_url", defaultValue: "https://api.useplunk.com/v1",
              meaning: "Plunk's API up to and including /v1; events go to <base_url>/track. v2: https://next-api.useplunk.com/v1.", reloads: false),
        Entry(key: "plunk.api_key", defaultValue: "none",
              meaning: "The API key (v2 track takes the public pk_ key). Prefer plunk.api_key_file or the systemd credential plunk-api-key. Without a key, events are kept and nothing is sent. Never logged.", reloads: true),
        Entry(key: "plunk.api_key_file", defaultValue: "none",
              meaning: "A file holding the key, read when plunk.api_key is unset; then the credential plunk-api-key in $CREDENTIALS_DIRECTORY.", reloads: true),
        Entry(key: "plunk.concurrency", defaultValue: "8", meaning: "Requests to Plunk in flight at once (1 to 1024).", reloads: false),
        Entry(key: "plunk.request_timeout", defaultValue: "10s", meaning: "Time allowed for one request to Plunk; also bounds connecting.", reloads: false),
        Entry(key: "plunk.ca_file", defaultValue: "none",
              meaning: "A PEM bundle of roots trusted for Plunk in addition to the system's, for a Plunk behind a private CA.", reloads: true),
        Entry(key: "plunk.proxy", defaultValue: "none (else https_proxy or HTTPS_PROXY unless no_proxy or NO_PROXY names Plunk's host)",
              meaning: "An HTTP proxy, http://[user:password@]host:port; HTTPS to Plunk is tunnelled with CONNECT. The password is never shown.", reloads: false),
        Entry(key: "socket.path", defaultValue: "/run/plunkd/plunkd.sock for root, $XDG_RUNTIME_DIR/plunkd/plunkd.sock, else /tmp/plunkd-<uid>/plunkd.sock",
              meaning: "The Unix socket apps write events to. Its directory must not be writable by others (unless sticky); /tmp/plunkd-<uid> must be the user's own, mode 0700.", reloads: false),
        Entry(key: "socket.mode", defaultValue: "0660", meaning: "The socket's file mode (octal).", reloads: false),
        Entry(key: "socket.max_connections", defaultValue: "1024", meaning: "Client connections open at once; more are closed at once.", reloads: false),
        Entry(key: "socket.idle_timeout", defaultValue: "300s", meaning: "A connection idle this long is closed.", reloads: false),
        Entry(key: "socket.allowed_uids", defaultValue: "empty (anyone the socket's mode lets in)",
              meaning: "Users (numbers or names) who may submit events, checked by the peer's credentials.", reloads: true),
        Entry(key: "socket.allowed_gids", defaultValue: "empty", meaning: "Groups whose members may submit events.", reloads: true),
        Entry(key: "socket.admin_uids", defaultValue: "empty (root and the daemon's user only)",
              meaning: "Users who may run control commands (resume, parked retry and drop).", reloads: true),
        Entry(key: "storage.path", defaultValue: "/var/lib/plunkd/outbox.sqlite for root, else $XDG_STATE_HOME/plunkd/outbox.sqlite (~/.local/state)",
              meaning: "The SQLite outbox.", reloads: false),
        Entry(key: "storage.max_pending", defaultValue: "5000000", meaning: "Events kept at most; past it new events are refused retryably.", reloads: false),
        Entry(key: "storage.max_bytes", defaultValue: "0 (only the disk limits it)", meaning: "Upper bound on the store's size; past it new events are refused retryably.", reloads: false),
        Entry(key: "ingest.max_event_bytes", defaultValue: "65536", meaning: "The largest event body accepted (256 to 16 MiB).", reloads: false),
        Entry(key: "retry.initial_backoff", defaultValue: "1s", meaning: "The first retry waits a random time up to this; each further one up to twice as long.", reloads: true),
        Entry(key: "retry.max_backoff", defaultValue: "300s", meaning: "The longest wait between attempts, and the cap on Retry-After.", reloads: true),
        Entry(key: "retry.max_age", defaultValue: "7d", meaning: "An event failing for longer than this is parked expired, never dropped.", reloads: true),
        Entry(key: "shutdown_grace", defaultValue: "10s", meaning: "On SIGTERM, how long to wait for requests in flight.", reloads: false),
        Entry(key: "status.warn_oldest_age", defaultValue: "15m", meaning: "plunkd status warns when the oldest pending event is older.", reloads: false),
        Entry(key: "metrics.listen", defaultValue: "empty (metrics on the socket only)", meaning: "Also serve /metrics on this TCP address: a port (loopback) or host:port.", reloads: false),
        Entry(key: "log.level", defaultValue: "info", meaning: "trace, debug, info, notice, warning, error or critical.", reloads: false),
    ]
}
