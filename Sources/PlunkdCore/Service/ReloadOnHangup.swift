import Foundation
import Logging
import ServiceLifecycle
import Synchronization
import UnixSignals

/// SIGHUP (`systemctl reload plunkd`): read the configuration again and apply what can
/// change without dropping a connection or an event: the API key, the retry policy, the
/// roots trusted for Plunk (`plunk.ca_file`), who may use the socket and the TCP listener's tokens. Anything else that changed is named in the log as needing a
/// restart. A configuration that does not load is refused with one line; the running one stays.
final class ReloadOnHangup: Sendable {
    private let lines: [DeliveryLine]
    private let policy: PeerPolicyBox
    private let tokens: IngestTokensBox
    private let reload: @Sendable () async throws -> DaemonConfiguration
    private let logger: Logger
    /// The configuration in force. Reloads never overlap (`serve` applies one signal at a
    /// time), so the lock only makes that visible to the compiler.
    private let current: Mutex<DaemonConfiguration>

    init(
        current: DaemonConfiguration, lines: [DeliveryLine], policy: PeerPolicyBox, tokens: IngestTokensBox,
        reload: @escaping @Sendable () async throws -> DaemonConfiguration, logger: Logger
    ) {
        self.current = Mutex(current)
        self.lines = lines
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
        let previous = current.withLock { $0 }
        do {
            // What can fail comes first; the keys are applied to every line or to none.
            let roots = try config.caFile.map(TrustedRoots.load)
            try await applyKeys(of: config, previous: previous)
            for line in lines { line.client.trust(extraRoots: roots) }
        } catch {
            logger.error("configuration reload could not be applied, the running configuration stays: \(error)")
            return
        }
        policy.replace(with: config.peerPolicy)
        tokens.replace(with: config.ingestTokens)
        current.withLock { $0 = config }
        let needRestart = Settings.needingRestart(from: previous, to: config)
        let restartNote = needRestart.isEmpty ? "" : "; needs a restart to take effect: \(needRestart.joined(separator: ", "))"
        logger.info(
            "configuration reloaded (SIGHUP): API key \(config.apiKey.map { "\($0)" } ?? "not configured"), secret key \(config.emailKey.map { "\($0)" } ?? "not configured"), retry policy, trusted roots, socket access and ingest tokens applied\(restartNote)"
        )
    }

    /// Gives every line its key and retry policy from `config`. A line that cannot take
    /// them (its store refused the hold's update) has them put back, and so has every line
    /// before it, so two lines never run under keys from two different configurations.
    private func applyKeys(of config: DaemonConfiguration, previous: DaemonConfiguration) async throws {
        var touched: [DeliveryLine] = []
        do {
            for line in lines {
                touched.append(line)
                try await line.sender.update(apiKey: line.kind.key(in: config), retry: config.retryPolicy)
            }
        } catch {
            for line in touched {
                do {
                    try await line.sender.update(apiKey: line.kind.key(in: previous), retry: previous.retryPolicy)
                } catch {
                    line.logger.error("could not put the previous key back after a failed reload: \(error)")
                }
            }
            throw error
        }
    }
}
