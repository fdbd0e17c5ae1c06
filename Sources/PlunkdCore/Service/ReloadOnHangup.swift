import Dispatch
import Foundation
import Logging
import ServiceLifecycle
import UnixSignals

/// SIGHUP (`systemctl reload plunkd`): read the configuration again and apply what can
/// change without dropping a connection or an event: the API key, the retry policy, the
/// roots trusted for Plunk (`plunk.ca_file`), who may use the socket and the TCP listener's tokens. Anything else that changed is named in the log as needing a
/// restart. A configuration that does not load is refused with one line; the running one stays.
final class ReloadOnHangup: @unchecked Sendable {
    private let sender: Sender
    private let client: PlunkClient
    /// The email line's sender and client, which take the secret key and the same roots.
    private let email: (sender: Sender, client: PlunkClient)?
    private let policy: PeerPolicyBox
    private let tokens: IngestTokensBox
    private let reload: @Sendable () async throws -> DaemonConfiguration
    private let logger: Logger
    /// Confined to `serial`: the configuration in force.
    private var current: DaemonConfiguration
    private let serial = DispatchQueue(label: "plunkd.reload")

    init(
        current: DaemonConfiguration, sender: Sender, client: PlunkClient, email: (sender: Sender, client: PlunkClient)? = nil,
        policy: PeerPolicyBox, tokens: IngestTokensBox,
        reload: @escaping @Sendable () async throws -> DaemonConfiguration, logger: Logger
    ) {
        self.email = email
        self.current = current
        self.sender = sender
        self.client = client
        self.policy = policy
        self.tokens = tokens
        self.reload = reload
        self.logger = logger
    }

    /// Applies SIGHUP until graceful shutdown: its part of the daemon's `ServiceGroup`.
    func serve() async {
        for await _ in await UnixSignalsSequence(trapping: .sighup).cancelOnGracefulShutdown() {
            await apply()
        }
    }

    func apply() async {
        let config: DaemonConfiguration
        do {
            config = try await reload()
        } catch {
            logger.error("configuration reload refused, the running configuration stays: \(error)")
            return
        }
        serial.sync {
            do {
                let retry = RetryPolicy(initialBackoff: config.initialBackoff, maxBackoff: config.maxBackoff, maxAge: config.maxAge)
                let roots = try config.caFile.map(TrustedRoots.load)
                try sender.update(apiKey: config.apiKey, retry: retry)
                client.trust(extraRoots: roots)
                if let email {
                    try email.sender.update(apiKey: config.emailKey, retry: retry)
                    email.client.trust(extraRoots: roots)
                }
                policy.replace(with: config.peerPolicy)
                tokens.replace(with: config.ingestTokens)
                let needRestart = Settings.needingRestart(from: current, to: config)
                current = config
                let restartNote = needRestart.isEmpty ? "" : "; needs a restart to take effect: \(needRestart.joined(separator: ", "))"
                logger.info(
                    "configuration reloaded (SIGHUP): API key \(config.apiKey.map { "\($0)" } ?? "not configured"), secret key \(config.emailKey.map { "\($0)" } ?? "not configured"), retry policy, trusted roots, socket access and ingest tokens applied\(restartNote)"
                )
            } catch {
                logger.error("configuration reload could not be applied, the running configuration stays: \(error)")
            }
        }
    }
}
