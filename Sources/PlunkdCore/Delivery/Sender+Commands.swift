import Foundation
import NIOCore

/// The operator's commands and the daemon's own (start, reload, shutdown), carried out
/// without the sender's loop ever waiting on the store: the loop decides, the store queue
/// writes, and the loop takes the outcome back, each step a hop of its own.
extension Sender {
    /// What a command has the store do, after the outcomes the machine had not recorded.
    typealias StoreStep<T> = @Sendable (Outbox) throws -> T

    /// Runs `decide` on the loop, then on the store queue (after every transaction already
    /// asked for, which the queue runs in order) records the machine's pending outcomes and
    /// runs the step `decide` returned, then `settle` on the loop with the result.
    ///
    /// The outcomes go first because a command must see them stored: a resume that
    /// requeues events parked `unauthorized` must find the ones parked by the last 401s.
    func command<T: Sendable>(
        decide: @escaping @Sendable () -> StoreStep<T>,
        settle: @escaping @Sendable (Result<T, any Error>) -> Void = { _ in }
    ) -> EventLoopFuture<T> {
        let promise = queue.loop.makePromise(of: T.self)
        let scheduled = queue.async {
            let store = decide()
            let work = self.machine.takeStoreWork(claimLimit: 0, now: self.clock())
            self.storeQueue.async {
                let recorded = Result { if !work.isEmpty { _ = try self.record(work) } }
                let result = recorded.flatMap { Result { try store(self.outbox) } }
                self.queue.loop.execute {
                    if case .failure = recorded { self.machine.restore(work) }
                    settle(result)
                    promise.completeWith(result)
                }
            }
        }
        if !scheduled { promise.fail(SenderStopped()) }
        return promise.futureResult
    }

    /// Runs `work` on the loop and hands back its result, for async callers: they await
    /// it instead of blocking a thread of the concurrency pool on a semaphore.
    func onLoop<T: Sendable>(_ work: @escaping @Sendable () -> T) async throws -> T {
        guard !queue.isClosed else { throw SenderStopped() }
        return try await queue.loop.submit(work).get()
    }

    /// Waits, without blocking, until the store's transactions asked for so far have ended.
    func storeSettled() async {
        await withCheckedContinuation { continuation in storeQueue.async { continuation.resume() } }
    }

    /// A key other than the refused one is configured: the hold ends at once, and the
    /// events parked for the old key go back in line (after the outcomes not yet recorded).
    /// Runs on the loop; returns nil when no hold was lifted.
    func liftHoldForNewKey(_ notes: LiftedByCommand) -> StoreStep<Int>? {
        guard machine.keyNoLongerRefused else { return nil }
        notes.heldBefore = machine.gate.hold
        machine.liftAuthHold()
        notes.hold = true
        return saveHold(requeueingUnauthorized: true)
    }

    /// The hold as it is now is stored after the requeue, as one step: a crash in between
    /// leaves the hold in place with its events back in line, which the next start's
    /// key check lifts again; never a lifted hold with its events still parked.
    func saveHold(requeueingUnauthorized requeue: Bool) -> StoreStep<Int> {
        let hold = machine.gate.hold
        machine.holdSaved()
        let now = clock()
        return { outbox in
            let requeued = requeue ? try outbox.requeueParked(reason: .unauthorized, now: now) : 0
            try outbox.saveHold(hold)
            return requeued
        }
    }
}

/// What a command lifted: noted on the loop by its decision, read there when it settles.
///
/// Unchecked `Sendable`: written and read only on the sender's loop; the store queue carries it
/// without touching it.
final class LiftedByCommand: @unchecked Sendable {
    var pause = false
    var hold = false
    /// The hold before the command lifted it, to put back if the store does not take the lift.
    var heldBefore: StoredDeliveryHold?

    func lifted(requeued: Int) -> [String] {
        var lifted: [String] = []
        if pause { lifted.append("quota pause") }
        if hold { lifted.append("auth hold") }
        if requeued > 0 { lifted.append("\(requeued) unauthorized events back in line") }
        return lifted
    }
}

/// The sender has shut down and takes no more commands.
struct SenderStopped: Error, CustomStringConvertible {
    var description: String { "delivery has stopped (plunkd is shutting down)" }
}
