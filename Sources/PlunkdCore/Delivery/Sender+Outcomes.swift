import Foundation
import Logging

/// What the sender does with each answer: the table of `shared/plunk-api.md`, applied.
extension Sender {
    // MARK: Outcomes

    func handle(_ answer: PlunkAnswer, for event: ClaimedEvent) {
        inFlight[event.seq] = nil
        sentAt[event.seq] = nil
        let now = clock()
        let outcome = OutcomeClassifier.classify(answer, now: now)
        counters[.attempts(outcome: outcome.label), default: 0] += 1
        metrics.attempt(outcome.label)?.increment()
        switch outcome {
        case .delivered, .duplicate:
            moves.append(.delivered(seq: event.seq))
            counters[.delivered, default: 0] += 1
            metrics.delivered.increment()
            recentDeliveries.record(1, at: now)
            if case .duplicate(let confirmed) = outcome {
                counters[.duplicatesSuppressed, default: 0] += 1
                metrics.duplicatesSuppressed.increment()
                if !confirmed && !warnedUnconfirmedDuplicate {
                    warnedUnconfirmedDuplicate = true
                    logger.warning(
                        "Plunk answered 409 IDEMPOTENCY_KEY_REUSED without saying what became of the first attempt (an older v2, or a proxy): counted as delivered, which loses the event if that attempt failed. Logged once per run.",
                        metadata: ["id": "\(event.key)"])
                }
            }
            recordSuccess(now: now)
        case .firstAttemptRunning(let detail):
            // A sane answer, not a failing Plunk: the failure run ends, and the event waits
            // its backoff before asking again with the same key.
            retryOrExpire(event, answer: answer, status: 409, detail: detail, now: now)
            recordSuccess(now: now, delivered: false)
        case .keyBurned(let original, let detail):
            if expire(event, answer: answer, status: 409, detail: detail, now: now) {
                recordSuccess(now: now, delivered: false)
                break
            }
            // Backoff, not at once: a Plunk that burned every new key too must not be asked
            // again in a tight loop.
            let delay = settings.retry.delay(afterFailures: event.attempts + 1, unit: unitRandom)
            moves.append(.rekey(seq: event.seq, due: now.addingTimeInterval(delay), status: 409, error: detail))
            counters[.rekeyed, default: 0] += 1
            metrics.rekeyed.increment()
            logger.notice(
                "Plunk kept this event's Idempotency-Key burned after a failed first attempt (originalStatusCode \(original)); sending it again under a new key",
                metadata: [
                    "id": "\(event.key)", "old_key": "\(event.idempotencyKey)", "generation": "\(event.keyGeneration + 1)",
                ])
            recordSuccess(now: now, delivered: false)
        case .rejected(let status, let detail):
            moves.append(.park(seq: event.seq, reason: .rejected, status: status, error: Self.excerpt(answer)))
            counters[.parked(.rejected), default: 0] += 1
            metrics.parked(.rejected)?.increment()
            recordError(detail, status: outcome.status, now: now)
            logger.warning("event parked", metadata: ["id": "\(event.key)", "reason": "rejected", "status": "\(status)", "answer": "\(detail)"])
            recordSuccess(now: now, delivered: false)
        case .unauthorized(let status, let detail):
            moves.append(.park(seq: event.seq, reason: .unauthorized, status: status, error: Self.excerpt(answer)))
            counters[.parked(.unauthorized), default: 0] += 1
            metrics.parked(.unauthorized)?.increment()
            recordError(detail, status: outcome.status, now: now)
            logger.warning("event parked", metadata: ["id": "\(event.key)", "reason": "unauthorized", "status": "\(status)"])
            if let key = settings.apiKey, gate.keyRefused(fingerprint: key.fingerprint, now: now) != nil {
                logger.error("Plunk refused the API key (\(detail)); delivery is held until the key changes or `plunkd resume`")
            }
        case .quotaExceeded(let detail):
            moves.append(.retry(seq: event.seq, due: now, countsAsAttempt: false, status: 402, error: detail))
            recordError(detail, status: outcome.status, now: now)
            if case .quotaPaused(let until) = gate.quotaExceeded(now: now) {
                logger.error(
                    "Plunk's monthly quota is spent (\(detail)); delivery paused until \(Self.iso(until)). After a plan upgrade: plunkd resume")
            }
        case .rateLimited(let retryAfter, let detail):
            let wait = gate.rateLimited(retryAfter: retryAfter, now: now, cap: settings.retry.maxBackoff) { limits in
                settings.retry.delay(afterFailures: limits, unit: unitRandom)
            }
            moves.append(.retry(seq: event.seq, due: now.addingTimeInterval(wait), countsAsAttempt: false, status: 429, error: detail))
            recordError(detail, status: outcome.status, now: now)
        case .transient(let status, let detail):
            recordError(detail, status: outcome.status, now: now)
            if detail != lastLoggedFailure {
                // Once per distinct cause, not once per attempt: a down Plunk must not flood the journal.
                lastLoggedFailure = detail
                logger.warning("delivery failed, retrying with backoff: \(detail)", metadata: ["id": "\(event.key)"])
            }
            retryOrExpire(event, answer: answer, status: status, detail: detail, now: now)
            gate.failedTransiently(now: now) { pastThreshold in settings.retry.delay(afterFailures: pastThreshold, unit: unitRandom) }
        }
        dispatchReady(now: now)
        scheduleTurn()
        if stopping && inFlight.isEmpty {
            releaseDrainWaiters()
        }
    }

    /// Backs the event off with the same key, or parks it `expired` past `retry.max_age`.
    func retryOrExpire(_ event: ClaimedEvent, answer: PlunkAnswer, status: Int?, detail: String, now: Date) {
        guard !expire(event, answer: answer, status: status, detail: detail, now: now) else { return }
        let delay = settings.retry.delay(afterFailures: event.attempts + 1, unit: unitRandom)
        moves.append(.retry(seq: event.seq, due: now.addingTimeInterval(delay), countsAsAttempt: true, status: status, error: detail))
    }

    /// Parks the event `expired` when it has been retried for longer than `retry.max_age`.
    func expire(_ event: ClaimedEvent, answer: PlunkAnswer, status: Int?, detail: String, now: Date) -> Bool {
        guard now.timeIntervalSince(event.receivedAt) >= settings.retry.maxAge else { return false }
        moves.append(.park(seq: event.seq, reason: .expired, status: status, error: Self.excerpt(answer)))
        counters[.parked(.expired), default: 0] += 1
        metrics.parked(.expired)?.increment()
        logger.warning("event parked", metadata: ["id": "\(event.key)", "reason": "expired", "last_error": "\(detail)"])
        return true
    }

    /// A sane answer from the server (any 2xx, or an event-level refusal) ends a failure run.
    func recordSuccess(now: Date, delivered: Bool = true) {
        if delivered { lastSuccess = now }
        lastLoggedFailure = nil
        gate.answeredSanely()
    }

    func recordError(_ detail: String, status: Int?, now: Date) {
        lastError = detail
        lastErrorStatus = status
        lastErrorAt = now
    }
}
