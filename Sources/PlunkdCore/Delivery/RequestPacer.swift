import Foundation

/// Whether the next request may leave now: under `plunk.max_rate`, and before Plunk's
/// own bucket is empty. Concurrency bounds how many wait at once; this bounds how often
/// they start.
struct RequestPacer {
    /// `plunk.max_rate`, when set.
    var configured: TokenBucket?
    var plunk = PlunkBudget()

    func allows(inFlight: Int, now: Date) -> Bool {
        (configured?.allows(now: now) ?? true) && plunk.allows(inFlight: inFlight, now: now)
    }

    func nextAllowed(inFlight: Int, now: Date) -> Date {
        max(configured?.nextAllowed(now: now) ?? now, plunk.nextAllowed(inFlight: inFlight, now: now))
    }

    /// A request leaves: its number, to hand back with its answer.
    mutating func sent(now: Date) -> Int {
        configured?.take(now: now)
        return plunk.noteSent()
    }

    /// The answer to request `number` (from `sent`).
    mutating func answered(_ answer: PlunkAnswer, number: Int, now: Date) {
        guard case .response(let status, _, let headers?, _) = answer else { return }
        plunk.observe(headers, tookToken: status != 429, number: number, now: now)
    }
}
