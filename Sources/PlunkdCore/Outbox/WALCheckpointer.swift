import Foundation
import GRDB
import Logging

/// Copies the write-ahead log back into the database file on a thread of its own.
///
/// SQLite's automatic checkpoint runs inside whichever commit crosses 1,000 WAL pages:
/// that commit, and every acknowledgement waiting on it, also waits for the copy and two
/// more fsyncs (and with a lone event committed on an event loop, so does every
/// connection of that loop). Here a PASSIVE checkpoint, which never blocks the writer,
/// runs on its own connection every `interval` while anything was written. The writer's
/// automatic checkpoint stays on as a backstop at `Outbox.backstopCheckpointPages`, so the
/// log stays bounded should this thread fall behind or stop.
///
/// A passive pass alone never lets the log start over: commits go on while it copies, so
/// it always ends a few frames short, and SQLite rewinds the log only when every frame has
/// been copied. The log then grew by every commit to the backstop, and appending to a file
/// makes each fsync also write its new size: a slower fsync than overwriting, which a
/// client sending one event at a time waits for on every event. So after each pass the few frames left are copied on the writer's own
/// connection, between two transactions, and the next commit rewinds the log.
///
/// Unchecked `Sendable`: its mutable state is guarded by `condition`, which its thread sleeps on
/// between passes.
public final class WALCheckpointer: @unchecked Sendable {
    private let outbox: Outbox
    private let interval: Duration
    private let logger: Logger

    // Guarded by `condition`.
    private let condition = NSCondition()
    private var stopping = false
    private var running = false

    public init(outbox: Outbox, interval: Duration = .milliseconds(200), logger: Logger) {
        self.outbox = outbox
        self.interval = interval
        self.logger = logger
    }

    public func start() {
        condition.lock()
        defer { condition.unlock() }
        guard !running else { return }
        running = true
        let thread = Thread { [self] in run() }
        thread.name = "plunkd-checkpoint"
        thread.start()
    }

    /// Stops the thread after its current checkpoint, if any; returns once it has ended.
    public func stop() {
        condition.lock()
        stopping = true
        condition.broadcast()
        while running { condition.wait() }
        condition.unlock()
    }

    private func run() {
        defer {
            condition.lock()
            running = false
            condition.broadcast()
            condition.unlock()
        }
        let connection: DatabaseQueue
        do {
            var configuration = GRDB.Configuration()
            configuration.label = "plunkd.checkpoint"
            connection = try DatabaseQueue(path: outbox.path, configuration: configuration)
        } catch {
            logger.warning("no checkpoint thread (\(error)); commits checkpoint by themselves past \(Outbox.backstopCheckpointPages) WAL pages")
            return
        }
        let seconds = Double(interval.components.seconds) + Double(interval.components.attoseconds) / 1e18
        // Confined to this thread: a failure is logged when it starts or changes, not per try.
        var lastFailure: String?
        while true {
            condition.lock()
            if !stopping { _ = condition.wait(until: Date().addingTimeInterval(seconds)) }
            let stop = stopping
            condition.unlock()
            if stop { return }
            guard outbox.writesSinceCheckpoint.exchange(0, ordering: .relaxed) > 0 else { continue }
            do {
                if outbox.isShortOfRoom {
                    // Near a full disk, the log's space goes back to the filesystem after each
                    // pass rather than waiting to be reused: room for delivery (`DeliveryRoom`).
                    try outbox.truncateLog()
                } else {
                    _ = try connection.writeWithoutTransaction { try $0.checkpoint(.passive) }
                    try outbox.finishCheckpoint()
                }
                if lastFailure != nil { logger.info("WAL checkpoints work again") }
                lastFailure = nil
            } catch {
                let text = "\(error)"
                if lastFailure != text {
                    logger.warning("WAL checkpoint failed: \(text); SQLite's own checkpoint bounds the log meanwhile")
                }
                lastFailure = text
            }
        }
    }
}
