import Foundation
import GRDB
import Logging
import Synchronization

/// Copies the write-ahead log back into the database file on a thread of its own.
///
/// SQLite's automatic checkpoint runs inside whichever commit crosses 1,000 WAL pages:
/// that commit, and every acknowledgement waiting on it, also waits for the copy and two
/// more fsyncs (and with a lone event committed on an event loop, so does every
/// connection of that loop). Here a PASSIVE checkpoint, which never blocks the writer,
/// runs on its own connection every `interval` while anything was written. The writer's
/// automatic checkpoint stays on as a backstop at `Outbox.backstopCheckpointPages`, so the
/// log stays bounded should this thread fall behind or stop.
public final class WALCheckpointer: Sendable {
    private let outbox: Outbox
    private let interval: Duration
    private let logger: Logger
    private let wake = Mutex(State())
    private let condition = NSCondition()

    private struct State {
        var stopping = false
        var running = false
        var lastFailure: String?
    }

    public init(outbox: Outbox, interval: Duration = .milliseconds(200), logger: Logger) {
        self.outbox = outbox
        self.interval = interval
        self.logger = logger
    }

    public func start() {
        guard wake.withLock({ state in defer { state.running = true }; return !state.running }) else { return }
        let thread = Thread { [self] in run() }
        thread.name = "plunkd-checkpoint"
        thread.start()
    }

    /// Stops the thread after its current checkpoint, if any; returns once it has ended.
    public func stop() {
        condition.lock()
        wake.withLock { $0.stopping = true }
        condition.broadcast()
        while wake.withLock({ $0.running }) { condition.wait() }
        condition.unlock()
    }

    private func run() {
        let connection: DatabaseQueue
        do {
            var configuration = GRDB.Configuration()
            configuration.label = "plunkd.checkpoint"
            connection = try DatabaseQueue(path: outbox.path, configuration: configuration)
        } catch {
            logger.warning("no checkpoint thread (\(error)); SQLite checkpoints during commits instead")
            finish()
            return
        }
        let seconds = Double(interval.components.seconds) + Double(interval.components.attoseconds) / 1e18
        while true {
            condition.lock()
            if !wake.withLock({ $0.stopping }) {
                _ = condition.wait(until: Date().addingTimeInterval(seconds))
            }
            condition.unlock()
            if wake.withLock({ $0.stopping }) { break }
            guard outbox.writesSinceCheckpoint.exchange(0, ordering: .relaxed) > 0 else { continue }
            do {
                _ = try connection.writeWithoutTransaction { try $0.checkpoint(.passive) }
                if wake.withLock({ state in defer { state.lastFailure = nil }; return state.lastFailure != nil }) {
                    logger.info("WAL checkpoints work again")
                }
            } catch {
                let text = "\(error)"
                if wake.withLock({ state in defer { state.lastFailure = text }; return state.lastFailure != text }) {
                    logger.warning("WAL checkpoint failed: \(text); SQLite's own checkpoint bounds the log meanwhile")
                }
            }
        }
        finish()
    }

    private func finish() {
        condition.lock()
        wake.withLock { $0.running = false }
        condition.broadcast()
        condition.unlock()
    }
}
