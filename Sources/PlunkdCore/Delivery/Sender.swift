import Dispatch
import Foundation
import Logging
import NIOCore
import NIOPosix
import Synchronization

/// Delivers stored events to Plunk: the shell around `DeliveryMachine`.
///
/// The machine decides; this type carries its actions out. The machine lives on one
/// event loop (`SenderLoop`: the one its Plunk connections answer on), the only place it
/// is touched. Store transactions run on a queue of their own, so answers keep being
/// handled and ready events sent while one commits. One timer wakes the machine at the
/// deadline it asks for.
///
/// Unchecked `Sendable`: `machine`, `timer` and `stepping` are confined to `queue` (the sender's
/// loop); the rest are constants and atomics.
public final class Sender: @unchecked Sendable {
    let queue: SenderLoop
    /// Where the store's transactions run, one at a time, off the sender's queue.
    let storeQueue = DispatchQueue(label: "plunkd.sender.store")
    let wakePending = Atomic(false)
    /// Whether a commit of new events could give the sender something to do: false
    /// while sending is not allowed (no key, a hold, a pause, a block) and while every
    /// slot and the reserve are full. Then the turn that ends that state claims whatever
    /// arrived meanwhile, so waking the sender's thread after every commit would only
    /// cost ingest a thread wake-up per event, on the round trip of every client. Set by
    /// a turn before its claim reads the store, and read by `wake` after the commit: a
    /// commit that saw `false` is visible to the claim of that turn.
    let newEventsUseful = Atomic(true)
    /// Wake-ups that reached the sender's queue; for tests.
    let wakeUps = Atomic(0)
    let outbox: Outbox
    let transport: any PlunkTransport
    let logger: Logger
    let clock: @Sendable () -> Date
    let metrics: DeliveryMetrics

    // Confined to `queue`.
    var machine: DeliveryMachine
    var timer: SenderTimer?
    /// Whether a step is running, its actions included.
    var stepping = false
    var drainWaiters: [UUID: CheckedContinuation<Void, Never>] = [:]
    /// Waiters whose task was cancelled before they were registered.
    var cancelledDrainWaiters: Set<UUID> = []
    var stateObserver: (@Sendable (DeliveryState) -> Void)?

    public init(
        outbox: Outbox, transport: any PlunkTransport, settings: DeliverySettings, logger: Logger,
        clock: @escaping @Sendable () -> Date = { Date() },
        unitRandom: @escaping @Sendable () -> Double = { Double.random(in: 0..<1) },
        metrics: DeliveryMetrics = DeliveryMetrics(), loop: (any EventLoop)? = nil
    ) {
        queue = SenderLoop(loop ?? MultiThreadedEventLoopGroup.singleton.next())
        self.metrics = metrics
        self.outbox = outbox
        self.transport = transport
        self.logger = logger
        self.clock = clock
        machine = DeliveryMachine(settings: settings, unitRandom: unitRandom)
    }

    /// Puts events left in flight by a crash back in line, restores a stored pause or
    /// hold, and starts delivering. The store is read here, on the caller's thread, before
    /// the loop has anything of this sender's to run.
    public func start() async throws {
        let released = try outbox.releaseInFlight()
        if released > 0 {
            logger.notice("\(released) events were in flight when plunkd stopped; they will be sent again with the same Idempotency-Key")
        }
        let stored = try outbox.loadHold()
        try await checkingKey {
            self.machine = DeliveryMachine(settings: self.machine.settings, hold: stored, unitRandom: self.machine.unitRandom)
        }
    }

    /// New events were stored. Called after every ingest commit, so it costs one atomic
    /// load when new events are of no use now, and one exchange when a wake-up is
    /// already on its way.
    public func wake() {
        guard newEventsUseful.load(ordering: .sequentiallyConsistent) else { return }
        guard !wakePending.exchange(true, ordering: .acquiringAndReleasing) else { return }
        queue.async {
            self.wakeUps.add(1, ordering: .relaxed)
            self.wakePending.store(false, ordering: .releasing)
            self.step { machine, _ in machine.requestTurn() }
        }
    }

    /// The operator lifts a quota pause or an auth hold now (`plunkd resume`). Called on
    /// the control thread, which waits; the loop does not.
    public func resume() throws -> String {
        let notes = LiftedByCommand()
        let requeued = try command(
            decide: {
                let hold = self.machine.gate.hold
                notes.pause = hold.pausedUntil != nil
                notes.hold = hold.refusedKeyFingerprint != nil
                notes.heldBefore = hold
                self.machine.resume()
                return self.saveHold(requeueingUnauthorized: notes.hold)
            },
            settle: { result in
                if case .failure = result, let stored = notes.heldBefore { self.machine.liftNotStored(stored) }
                if case .success(let requeued) = result {
                    let lifted = notes.lifted(requeued: requeued)
                    self.logger.info(
                        "resumed by operator", metadata: ["lifted": "\(lifted.isEmpty ? "nothing was paused" : lifted.joined(separator: ", "))"])
                }
                self.step { machine, _ in machine.requestTurn() }
            }
        ).wait()
        let lifted = notes.lifted(requeued: requeued)
        return lifted.isEmpty ? "nothing was paused or held" : "lifted: " + lifted.joined(separator: ", ")
    }

    /// A new key (config reload): an auth hold for another key ends and its events go back in line.
    public func updateAPIKey(_ key: APIKey?) async throws {
        try await update(apiKey: key, retry: nil)
    }

    /// Applies a reloaded key and retry policy; the next turn uses them.
    public func update(apiKey key: APIKey?, retry: RetryPolicy?) async throws {
        try await checkingKey { self.machine.update(apiKey: key, retry: retry) }
    }

    /// Runs `change` on the loop, then lifts an auth hold the configured key no longer
    /// matches (its events back in line), and lets the machine take its next turn.
    private func checkingKey(after change: @escaping @Sendable () -> Void) async throws {
        let notes = LiftedByCommand()
        _ = try await command(
            decide: {
                change()
                return self.liftHoldForNewKey(notes) ?? { _ in 0 }
            },
            settle: { result in self.keyApplied(result, notes) }
        ).get()
    }

    /// After a key change (or the start, which may find a new key): logs a lifted hold and
    /// lets the machine take its next turn.
    private func keyApplied(_ result: Result<Int, any Error>, _ notes: LiftedByCommand) {
        switch result {
        case .success(let requeued) where notes.hold:
            logger.info("the API key changed: auth hold lifted, \(requeued) unauthorized events back in line")
        case .failure where notes.hold:
            // The stored hold stands (its requeue may have run: the next key check lifts
            // it again); the caller puts the previous key back.
            if let stored = notes.heldBefore { machine.liftNotStored(stored) }
        default:
            break
        }
        step { $0.noteState(now: $1) }
        step { machine, _ in machine.requestTurn() }
    }

    /// For async callers (the daemon's READY notice): the same as `snapshot`, awaited.
    public func currentSnapshot() async throws -> SenderSnapshot {
        try await onLoop { self.machine.snapshot(now: self.clock()) }
    }

    public func snapshot() -> SenderSnapshot {
        queue.sync { machine.snapshot(now: clock()) }
    }

    /// Called on the sender's queue with every change of state (systemd's `STATUS=`).
    /// Set before `start`.
    public func observeState(_ observer: @escaping @Sendable (DeliveryState) -> Void) {
        queue.async { self.stateObserver = observer }
    }

    /// Answers on the sender's own queue whether delivery is making progress: a wedged
    /// queue never answers, and a request unanswered for longer than `maxRequestAge`
    /// (its timeout plus slack) means the HTTP side lost it. For the systemd watchdog.
    public func checkProgress(maxRequestAge: TimeInterval, reply: @escaping @Sendable (Bool) -> Void) {
        queue.async {
            let now = self.clock()
            reply(self.machine.oldestOutstanding.map { now.timeIntervalSince($0) <= maxRequestAge } ?? true)
        }
    }

    /// Stops claiming, waits up to `grace` for requests in flight, records their outcomes.
    /// Events still in flight after that are sent again at the next start.
    public func shutdown(grace: Duration) async {
        await withTaskGroup(of: Void.self) { group in
            group.addTask {
                // The group returns only once this task has, so when the grace runs out
                // the cancellation lets it go: a request hung past the grace must not
                // hold shutdown until its own timeout.
                let waiter = UUID()
                await withTaskCancellationHandler {
                    await withCheckedContinuation { continuation in
                        // A sender already shut down (a second shutdown) has nothing to
                        // drain, and its loop takes no more work.
                        let scheduled = self.queue.async {
                            if self.cancelledDrainWaiters.remove(waiter) != nil || self.queue.isClosed {
                                continuation.resume()
                                return
                            }
                            self.drainWaiters[waiter] = continuation
                            self.step { machine, _ in machine.stop() }
                        }
                        if !scheduled { continuation.resume() }
                    }
                } onCancel: {
                    self.queue.async {
                        if let continuation = self.drainWaiters.removeValue(forKey: waiter) {
                            continuation.resume()
                        } else {
                            self.cancelledDrainWaiters.insert(waiter)
                        }
                    }
                }
            }
            group.addTask { try? await Task.sleep(for: grace) }
            await group.next()
            group.cancelAll()
        }
        guard !queue.isClosed else { return }
        // A store transaction still running ends first; its claims come back before the
        // last outcomes are taken and are given back with everything else.
        _ = try? await onLoop { self.step { machine, _ in machine.stop() } }
        await storeSettled()
        let recorded: Void? = try? await command(decide: {
            self.machine.releaseReady()
            if !self.machine.inFlight.isEmpty {
                self.logger.warning(
                    "\(self.machine.inFlight.count) requests still in flight after the shutdown grace; they will be sent again at the next start")
            }
            return { _ in }
        }).get()
        if recorded == nil {
            logger.error("cannot record the last delivery outcomes; those events will be sent again at the next start")
        }
        _ = try? await onLoop {
            self.releaseDrainWaiters()
            self.timer?.cancel()
            self.timer = nil
            self.queue.close()
        }
        await transport.shutdown()
    }
}

/// How a line's sender delivers: its key, concurrency, retry policy, rate and kind.
public struct DeliverySettings: Sendable {
    public var apiKey: APIKey?
    public var concurrency: Int
    public var retry: RetryPolicy
    /// Consecutive transient failures after which the destination counts as failing:
    /// one probe at a time, spaced by backoff, until a success. (Fewer than half of the
    /// last 50 answers sane counts too: see `DestinationGate.failedTransiently`.)
    public var failingAfter: Int = 8
    /// `plunk.concurrency: auto`: the limit is learned (`AdaptiveConcurrency`), up to
    /// `concurrency`.
    public var adaptsConcurrency = false
    /// `plunk.max_rate` (requests per second) and its burst; nil for no limit of our own.
    public var maxRate: Double?
    public var maxRateBurst: Double?
    /// What this sender's line carries: its path at Plunk, and how a 429 reads.
    public var kind: EventKind = .track
    /// `plunk.rekey_burned_track_keys`: a track event whose key Plunk kept after a failed
    /// first attempt is sent again under a new key (for builds that fail without
    /// storing), instead of counted as held by Plunk. Never for emails.
    public var rekeyBurnedTrackKeys = false

    public init(apiKey: APIKey?, concurrency: Int, retry: RetryPolicy) {
        self.apiKey = apiKey
        self.concurrency = concurrency
        self.retry = retry
    }
}
