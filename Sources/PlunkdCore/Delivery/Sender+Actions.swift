import Dispatch
import Foundation
import Logging

/// How the shell carries out what the machine decides. Everything here runs on `queue`.
extension Sender {
    /// Feeds one event to the machine at the clock's time and carries out its actions.
    func step(_ event: (inout DeliveryMachine, Date) -> Void) {
        let outer = stepping
        stepping = true
        defer { stepping = outer }
        event(&machine, clock())
        for action in machine.takeActions() { perform(action) }
    }

    private func perform(_ action: DeliveryAction) {
        switch action {
        case .send(let event, let key):
            let started = DispatchTime.now()
            let duration = metrics.requestDuration
            transport.post(body: event.body, idempotencyKey: event.idempotencyKey, apiKey: key) { answer in
                duration.recordNanoseconds(Int64(DispatchTime.now().uptimeNanoseconds - started.uptimeNanoseconds))
                // Inline when the answer arrives on the sender's own loop (the usual case).
                self.onQueue { self.step { $0.answered(answer, for: event, now: $1) } }
            }
        case .store(let work):
            storeQueue.async {
                let result = Result { try self.record(work) }
                self.queue.async { self.step { $0.storeFinished(work, result, now: $1) } }
            }
        case .runTurn:
            queue.async { self.step { $0.turn(now: $1) } }
        case .armTimer(let deadline):
            armTimer(at: deadline)
        case .cancelTimer:
            timer?.cancel()
            timer = nil
        case .newEventsUseful(let useful):
            newEventsUseful.store(useful, ordering: .sequentiallyConsistent)
        case .counted(let counter):
            metrics.counter(for: counter)?.increment()
        case .log(let level, let message, let metadata):
            logger.log(level: level, message, metadata: metadata)
        case .stateChanged(let state):
            stateObserver?(state)
        case .drained:
            releaseDrainWaiters()
        }
    }

    private func armTimer(at deadline: Date) {
        timer?.cancel()
        timer = queue.timer(at: .now() + max(0, deadline.timeIntervalSince(clock()))) { [weak self] in
            self?.step { $0.timerFired(now: $1) }
        }
    }

    /// Runs `work` on the sender's loop: at once when already there, else later. Later
    /// too when called from inside a step (a request that fails before it is sent
    /// answers within `post`): the step's remaining actions go first, in order.
    private func onQueue(_ work: @escaping @Sendable () -> Void) {
        if queue.loop.inEventLoop && !stepping { work() } else { queue.async(work) }
    }

    /// Runs on `storeQueue`.
    func record(_ work: StoreWork) throws -> ClaimResult {
        if let hold = work.hold { try outbox.saveHold(hold) }
        return try outbox.recordAndClaim(moves: work.moves, counters: work.counters, claimLimit: work.claimLimit, now: work.now)
    }

    /// Lets `shutdown` go on: every request in flight has been answered (or the grace ran out).
    func releaseDrainWaiters() {
        let waiters = drainWaiters.values
        drainWaiters = [:]
        waiters.forEach { $0.resume() }
    }
}
