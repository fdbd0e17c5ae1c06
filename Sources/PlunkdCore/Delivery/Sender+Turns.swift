import Foundation
import Logging

/// One store transaction's worth of a turn: what to record and how much to claim.
struct StoreWork: Sendable {
    var moves: [EventMove]
    var counters: [OutboxCounter: Int]
    var hold: StoredDeliveryHold?
    var claimLimit: Int
    var now: Date

    var isEmpty: Bool { moves.isEmpty && counters.isEmpty && hold == nil && claimLimit == 0 }
}

/// Turns: how outcomes reach the store and claimed events reach the wire.
///
/// The store's transaction (an fsync) runs on `storeQueue` while the sender's queue goes on
/// handling answers. Twice the request slots are kept claimed: when an answer frees a slot,
/// the next request leaves at once from `ready`, instead of after the next commit, and a
/// slow Plunk's round trips are not lengthened by the store's.
extension Sender {
    /// Requests allowed in flight: all slots, or one probe while the destination is failing.
    var requestSlots: Int { gate.requestSlots(concurrency: settings.concurrency) }

    var isProbing: Bool { gate.isProbing }

    func sendingAllowed(now: Date) -> Bool {
        !stopping && gate.sendingAllowed(now: now, hasKey: settings.apiKey != nil)
    }

    /// How many more events to claim: the free slots plus a ready reserve as large as the
    /// slots, none while sending is not allowed, and no reserve while probing.
    func claimLimit(now: Date) -> Int {
        guard sendingAllowed(now: now) else { return 0 }
        let target = isProbing ? 1 : settings.concurrency * 2
        return max(0, target - inFlight.count - ready.count)
    }

    /// Sends ready events into free slots. While sending is not allowed, or while probing,
    /// ready events go back in line: their contacts must not wait behind a pause.
    func dispatchReady(now: Date) {
        guard sendingAllowed(now: now) else {
            releaseReady()
            return
        }
        while inFlight.count < requestSlots, !ready.isEmpty {
            let event = ready.removeFirst()
            inFlight[event.seq] = event
            send(event)
        }
        if isProbing { releaseReady() }
    }

    func releaseReady() {
        guard !ready.isEmpty else { return }
        moves.append(contentsOf: ready.map { .release(seq: $0.seq) })
        ready.removeAll()
    }

    func scheduleTurn() {
        guard !turnScheduled else { return }
        turnScheduled = true
        queue.async { self.turn() }
    }

    func turn() {
        turnScheduled = false
        let now = clock()
        expirePause(now: now)
        dispatchReady(now: now)
        let limit = claimLimit(now: now)
        // Before the claim below starts reading: see `newEventsUseful`.
        newEventsUseful.store(limit > 0, ordering: .sequentiallyConsistent)
        guard storeBusySince == nil else {
            turnDeferred = true
            return
        }
        let work = takeStoreWork(claimLimit: limit, now: now)
        guard !work.isEmpty else {
            armTimer(now: now, nextDue: nil)
            logStateIfChanged()
            return
        }
        storeBusySince = now
        storeQueue.async {
            let result = Result { try self.perform(work) }
            self.queue.async { self.finishTurn(work, result) }
        }
        logStateIfChanged()
    }

    func takeStoreWork(claimLimit: Int, now: Date) -> StoreWork {
        let work = StoreWork(moves: moves, counters: counters, hold: gate.holdChanged ? gate.hold : nil, claimLimit: claimLimit, now: now)
        moves.removeAll(keepingCapacity: true)
        counters.removeAll(keepingCapacity: true)
        gate.holdChanged = false
        return work
    }

    /// Runs on `storeQueue`.
    func perform(_ work: StoreWork) throws -> ClaimResult {
        if let hold = work.hold { try outbox.saveHold(hold) }
        return try outbox.recordAndClaim(moves: work.moves, counters: work.counters, claimLimit: work.claimLimit, now: work.now)
    }

    func finishTurn(_ work: StoreWork, _ result: Result<ClaimResult, any Error>) {
        storeBusySince = nil
        let now = clock()
        switch result {
        case .success(let claim):
            if storageFailing {
                storageFailing = false
                logger.info("storage accepts delivery updates again")
            }
            ready.append(contentsOf: claim.claimed)
            dispatchReady(now: now)
            let filled = work.claimLimit > 0 && claim.claimed.count == work.claimLimit
            let room = claimLimit(now: now) > 0
            if turnDeferred || !moves.isEmpty || !counters.isEmpty || gate.holdChanged || (room && (filled || claim.mayHaveMore)) {
                turnDeferred = false
                scheduleTurn()
            } else {
                armTimer(now: now, nextDue: filled ? nil : claim.nextDue)
            }
        case .failure(let error):
            restore(work)
            if !storageFailing {
                logger.error("cannot record delivery outcomes: \(error); retrying")
                storageFailing = true
            }
            turnDeferred = false
            armTimer(at: now.addingTimeInterval(1))
        }
        logStateIfChanged()
    }

    /// Puts back what a failed transaction did not record, ahead of anything newer.
    func restore(_ work: StoreWork) {
        moves.insert(contentsOf: work.moves, at: 0)
        for (counter, amount) in work.counters { counters[counter, default: 0] += amount }
        if work.hold != nil { gate.holdChanged = true }
    }

    /// Records pending outcomes now, on the caller's turn of the sender's queue: for the
    /// operator's commands and shutdown, which must see them stored before they go on.
    func recordNow() throws {
        if storeBusySince != nil { storeQueue.sync {} }
        let work = takeStoreWork(claimLimit: 0, now: clock())
        guard !work.isEmpty else { return }
        do {
            _ = try storeQueue.sync { try perform(work) }
        } catch {
            restore(work)
            throw error
        }
    }
}
