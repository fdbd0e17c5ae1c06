import Dispatch
import Foundation
import Logging

/// When the sender looks again: pauses, holds, the one timer, and the state it reports.
extension Sender {
    // MARK: Pause, hold, timer

    func expirePause(now: Date) {
        if gate.tick(now: now) == .pauseOver {
            logger.info("quota pause over: a new month began; delivering again")
        }
    }

    func reconcileHoldWithKey() throws {
        guard let refused = gate.hold.refusedKeyFingerprint, let key = settings.apiKey, key.fingerprint != refused else { return }
        try recordNow()
        let requeued = try outbox.requeueParked(reason: .unauthorized, now: clock())
        gate.liftAuthHold()
        try outbox.saveHold(gate.hold)
        logger.info("the API key changed: auth hold lifted, \(requeued) unauthorized events back in line")
    }

    /// Arms the timer for the end of a pause or block, else for `nextDue` (the earliest
    /// waiting head, when the last claim found nothing more to take).
    func armTimer(now: Date, nextDue: Date?) {
        var wake = gate.opensAt
        if wake == nil, let due = nextDue { wake = max(due, now) }
        if let wake { armTimer(at: wake) }
    }

    /// One timer: the earliest reason to look again. Capped at a minute, so a clock step
    /// or a missed wake-up is noticed within a minute whatever happens.
    func armTimer(at date: Date) {
        guard !stopping else { return }
        let capped = min(date, clock().addingTimeInterval(60))
        if let current = timerDeadline, current <= capped, current > clock() { return }
        timer?.cancel()
        let source = DispatchSource.makeTimerSource(queue: queue)
        let seconds = max(0, capped.timeIntervalSince(clock()))
        source.schedule(wallDeadline: .now() + seconds, leeway: .milliseconds(5))
        source.setEventHandler { [weak self] in
            guard let self else { return }
            self.timerDeadline = nil
            self.scheduleTurn()
        }
        source.resume()
        timer = source
        timerDeadline = capped
    }

    // MARK: State

    func currentState(now: Date) -> DeliveryState {
        gate.state(now: now, hasKey: settings.apiKey != nil, inFlight: inFlight.count)
    }

    func logStateIfChanged() {
        let state = currentState(now: clock())
        guard state != loggedState else { return }
        // delivering/idle flip with every burst; only the first and the problem states are worth a line.
        let quiet: Set<DeliveryState> = [.delivering, .idle]
        if loggedState == nil || !(quiet.contains(state) && quiet.contains(loggedState!)) {
            logger.info("delivery state: \(state.rawValue)")
        }
        loggedState = state
        stateObserver?(state)
    }

    static func excerpt(_ answer: PlunkAnswer) -> String {
        switch answer {
        case .response(_, _, let body): String(decoding: body, as: UTF8.self)
        case .transportFailure(let reason): reason
        }
    }

    static func iso(_ date: Date) -> String {
        ISO8601DateFormatter().string(from: date)
    }
}
