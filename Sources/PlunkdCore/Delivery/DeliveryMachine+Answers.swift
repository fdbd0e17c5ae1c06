import Foundation
import Logging

/// What the sender does with each answer: the table of `shared/plunk-api.md`, applied.
extension DeliveryMachine {
    /// Plunk (or the transport) answered the request for `event`.
    mutating func answered(_ answer: PlunkAnswer, for event: ClaimedEvent, now: Date) {
        guard let sent = inFlight.removeValue(forKey: event.seq) else { return }
        let outcome = OutcomeClassifier.classify(
            answer, now: now, kind: settings.kind, rekeyBurnedTrackKeys: settings.rekeyBurnedTrackKeys)
        pacer.answered(answer, number: sent.number, now: now)
        if outcome.measuresLoad {
            adaptive?.answered(sentAt: sent.sentAt, now: now, backPressure: outcome.isBackPressure)
        }
        count(.attempts(outcome: outcome.label))
        switch outcome {
        case .delivered, .duplicate:
            delivered(event, now: now)
            if case .duplicate(let confirmed) = outcome {
                count(.duplicatesSuppressed)
                if !confirmed && !warnedUnconfirmedDuplicate {
                    warnedUnconfirmedDuplicate = true
                    emit(
                        .log(
                            .warning,
                            "Plunk answered 409 IDEMPOTENCY_KEY_REUSED without saying what became of the first attempt (an older v2, or a proxy): counted as delivered, which loses the event if that attempt failed. Logged once per run.",
                            ["id": "\(event.key)"]))
                }
            }
            answeredSanely(number: sent.number, now: now)
        case .firstAttemptRunning(let detail):
            // A sane answer, not a failing Plunk: the failure run ends, and the event waits
            // its backoff before asking again with the same key.
            retryOrExpire(event, answer: answer, status: 409, detail: detail, now: now)
            answeredSanely(number: sent.number, now: now, delivered: false)
        case .acceptedRecovering(let original, _):
            // Plunk stored it and finishes it itself; plunkd's part is done.
            delivered(event, now: now)
            emit(
                .log(
                    .notice,
                    "Plunk stored this event but its first attempt failed (409, originalStatusCode \(original)); Plunk finishes it itself, so it counts as delivered and is not sent again under a new key",
                    ["id": "\(event.key)", "outcome": "accepted_recovering"]))
            answeredSanely(number: sent.number, now: now)
        case .uncertain(let original, let detail):
            park(event, .uncertain, status: 409, answer: answer)
            recordError(detail, status: outcome.status, now: now)
            emit(
                .log(
                    .warning,
                    "email parked uncertain: Plunk's send failed part-way (409, originalStatusCode \(original)), so some recipients may have it already; it is not sent again unless you say so: plunkd parked retry --email --new-key \(event.key)",
                    ["id": "\(event.key)", "reason": "uncertain"]))
            answeredSanely(number: sent.number, now: now, delivered: false)
        case .keyBurned(let original, let detail):
            if expire(event, answer: answer, status: 409, detail: detail, now: now) {
                answeredSanely(number: sent.number, now: now, delivered: false)
                break
            }
            // Backoff, not at once: a Plunk that burned every new key too must not be asked
            // again in a tight loop.
            let delay = settings.retry.delay(afterFailures: event.attempts + 1, unit: unitRandom)
            moves.append(.rekey(seq: event.seq, due: now.addingTimeInterval(delay), status: 409, error: detail))
            count(.rekeyed)
            emit(
                .log(
                    .notice,
                    "Plunk kept this event's Idempotency-Key burned after a failed first attempt (originalStatusCode \(original)); sending it again under a new key",
                    ["id": "\(event.key)", "old_key": "\(event.idempotencyKey)", "generation": "\(event.keyGeneration + 1)"]))
            answeredSanely(number: sent.number, now: now, delivered: false)
        case .rejected(let status, let detail):
            park(event, .rejected, status: status, answer: answer)
            recordError(detail, status: outcome.status, now: now)
            emit(.log(.warning, "event parked", ["id": "\(event.key)", "reason": "rejected", "status": "\(status)", "answer": "\(detail)"]))
            answeredSanely(number: sent.number, now: now, delivered: false)
        case .unauthorized(let status, let detail):
            park(event, .unauthorized, status: status, answer: answer)
            recordError(detail, status: outcome.status, now: now)
            emit(.log(.warning, "event parked", ["id": "\(event.key)", "reason": "unauthorized", "status": "\(status)"]))
            if let key = settings.apiKey, gate.keyRefused(fingerprint: key.fingerprint, now: now) != nil {
                emit(.log(.error, "Plunk refused the API key (\(detail)); delivery is held until the key changes or `plunkd resume`"))
            }
        case .quotaExceeded(let detail):
            moves.append(.retry(seq: event.seq, due: now, countsAsAttempt: false, status: 402, error: detail))
            recordError(detail, status: outcome.status, now: now)
            if case .quotaPaused(let until) = gate.quotaExceeded(now: now) {
                emit(
                    .log(
                        .error,
                        "Plunk's monthly quota is spent (\(detail)); delivery paused until \(ISO8601DateFormatter().string(from: until)). After a plan upgrade: plunkd resume"
                    ))
            }
        case .rateLimited(let retryAfter, let detail):
            let retry = settings.retry
            let unitRandom = unitRandom
            let wait = gate.rateLimited(retryAfter: retryAfter, now: now, cap: retry.maxBackoff) { limits in
                retry.delay(afterFailures: limits, unit: unitRandom)
            }
            moves.append(.retry(seq: event.seq, due: now.addingTimeInterval(wait), countsAsAttempt: false, status: 429, error: detail))
            recordError(detail, status: outcome.status, now: now)
        case .transient(let status, let detail):
            recordError(detail, status: outcome.status, now: now)
            if detail != lastLoggedFailure?.detail {
                // Once per distinct cause, not once per attempt: a down Plunk must not flood the journal.
                lastLoggedFailure = (detail, sent.number)
                emit(.log(.warning, "delivery failed, retrying with backoff: \(detail)", ["id": "\(event.key)"]))
            }
            retryOrExpire(event, answer: answer, status: status, detail: detail, now: now)
            let retry = settings.retry
            let unitRandom = unitRandom
            gate.failedTransiently(number: sent.number, now: now) { pastThreshold in
                retry.delay(afterFailures: pastThreshold, unit: unitRandom)
            }
        }
        dispatchReady(now: now)
        requestTurn()
        if stopping && inFlight.isEmpty { emit(.drained) }
    }

    /// Backs the event off with the same key, or parks it `expired` past `retry.max_age`.
    private mutating func retryOrExpire(_ event: ClaimedEvent, answer: PlunkAnswer, status: Int?, detail: String, now: Date) {
        guard !expire(event, answer: answer, status: status, detail: detail, now: now) else { return }
        let delay = settings.retry.delay(afterFailures: event.attempts + 1, unit: unitRandom)
        moves.append(.retry(seq: event.seq, due: now.addingTimeInterval(delay), countsAsAttempt: true, status: status, error: detail))
    }

    /// Parks the event `expired` when it has been retried for longer than `retry.max_age`,
    /// or an email's deadline has passed.
    private mutating func expire(_ event: ClaimedEvent, answer: PlunkAnswer, status: Int?, detail: String, now: Date) -> Bool {
        let pastDeadline = event.deadline.map { now >= $0 } ?? false
        guard pastDeadline || now.timeIntervalSince(event.receivedAt) >= settings.retry.maxAge else { return false }
        park(event, .expired, status: status, answer: answer)
        emit(.log(.warning, "event parked", ["id": "\(event.key)", "reason": "expired", "last_error": "\(detail)"]))
        return true
    }

    /// An email claimed after its deadline (it waited out a pause, a hold or a backlog)
    /// is parked `expired` instead of sent: a password reset an hour late does harm.
    mutating func expireBeforeSending(_ event: ClaimedEvent, now: Date) -> Bool {
        guard let deadline = event.deadline, now >= deadline else { return false }
        let late = Int(now.timeIntervalSince(deadline).rounded())
        moves.append(.park(seq: event.seq, reason: .expired, status: nil, error: "not sent: its deadline passed \(late) s ago, before it could be sent"))
        count(.parked(.expired))
        emit(.log(.warning, "\(settings.kind.noun) parked", ["id": "\(event.key)", "reason": "expired", "deadline_passed_seconds_ago": "\(late)"]))
        return true
    }

    private mutating func delivered(_ event: ClaimedEvent, now: Date) {
        moves.append(.delivered(seq: event.seq))
        count(.delivered)
        recentDeliveries.record(1, at: now)
    }

    private mutating func park(_ event: ClaimedEvent, _ reason: ParkReason, status: Int?, answer: PlunkAnswer) {
        moves.append(.park(seq: event.seq, reason: reason, status: status, error: Self.excerpt(answer)))
        count(.parked(reason))
    }

    /// One more for the store's counters and the metrics.
    private mutating func count(_ counter: OutboxCounter) {
        counters[counter, default: 0] += 1
        emit(.counted(counter))
    }

    /// A sane answer from the server (any 2xx, or an event-level refusal) ends a failure run.
    private mutating func answeredSanely(number: Int, now: Date, delivered: Bool = true) {
        if delivered { lastSuccess = now }
        // Only an answer to a request sent after the logged failure shows Plunk back: a
        // late 2xx to one sent before it would have the same failure logged again.
        if let logged = lastLoggedFailure, number > logged.number { lastLoggedFailure = nil }
        gate.answeredSanely(number: number)
    }

    private mutating func recordError(_ detail: String, status: Int?, now: Date) {
        lastError = detail
        lastErrorStatus = status
        lastErrorAt = now
    }

    static func excerpt(_ answer: PlunkAnswer) -> String {
        switch answer {
        case .response(_, _, _, let body): String(decoding: body, as: UTF8.self)
        case .transportFailure(let reason): reason
        }
    }
}
