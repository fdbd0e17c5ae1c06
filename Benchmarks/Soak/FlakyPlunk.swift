import Foundation
import NIOConcurrencyHelpers
import NIOCore
import PlunkdTestSupport

/// The soak's Plunk: a `FakePlunk` whose responder fails a share of requests (30% unless told) at random,
/// the ways the real one does: 500/502/503 with HTML bodies, connections reset
/// mid-request, answers slower than the daemon's request timeout, and 429 with
/// `Retry-After`. Every answer takes at least `minimumDelay`, so the request rate is
/// bounded by concurrency alone.
///
/// It counts a delivery only when a 2xx was written to the connection: that is what
/// the soak's "lost" and "duplicated" are measured against.
final class FlakyPlunk: Sendable {
    struct Tally: Sendable {
        var deliveries: [String: Int] = [:]
        var requestsPerSecond: [Int: Int] = [:]
        /// The same, only while failures were being injected.
        var requestsPerSecondWhileFailing: [Int: Int] = [:]
        /// Requests that arrived during `outage(true)`: each was answered 503.
        var requestsDuringOutage = 0
        var requests = 0
        var failuresInjected = 0
        /// Each id's first 2xx, in the order they were written: (id, contact email).
        var firstDeliveries: [(id: String, email: String)] = []
        /// The daemon (0 the first, 1 after the first kill, …) each id's first 2xx went to.
        var firstDeliveryEpoch: [String: Int] = [:]
        var slowSuccesses = 0
        /// Repeats of an id, by the daemon (epoch) that first delivered it, counted when a
        /// later daemon delivers it again.
        var duplicatesAfterCrash: [Int: Int] = [:]
        /// Repeats delivered by the same daemon that delivered the first.
        var duplicatesAfterTimeout = 0
    }

    private enum Fault: CaseIterable { case html500, html502, html503, reset, slow, rateLimited }

    private let tally = NIOLockedValueBox(Tally())
    private let failing = NIOLockedValueBox(true)
    private let down = NIOLockedValueBox(false)
    /// 402 or 401 for every request while set: see `refuseAll`.
    private let refusal = NIOLockedValueBox<Int?>(nil)
    /// Called once, just before the next refusal is written (then cleared): where a
    /// power cut is aimed at the write that stores what the refusal makes the daemon do.
    private let beforeNextRefusal = NIOLockedValueBox<(@Sendable () -> Void)?>(nil)
    private let epoch = NIOLockedValueBox(0)
    private let server: FakePlunk
    let minimumDelay: TimeAmount
    /// One 2xx in five takes this long (under the soak's request timeout), so a kill finds
    /// requests whose 2xx is on its way: the duplicates a crash can make.
    let slowSuccessDelay: TimeAmount

    /// - Parameter failureShare: the share of requests answered with a fault while failing.
    init(
        failureShare: Double = 0.3, minimumDelay: TimeAmount = .milliseconds(10), slowDelay: TimeAmount = .milliseconds(1500),
        slowSuccessDelay: TimeAmount = .milliseconds(250)
    ) async throws {
        self.minimumDelay = minimumDelay
        self.slowSuccessDelay = slowSuccessDelay
        let tally = self.tally
        let failing = self.failing
        let down = self.down
        let refusal = self.refusal
        let beforeNextRefusal = self.beforeNextRefusal
        let epoch = self.epoch
        server = try await FakePlunk(keepsRequests: false) { request in
            if let status = refusal.withLockedValue({ $0 }) {
                tally.withLockedValue { $0.requests += 1 }
                let body =
                    status == 402
                    ? #"{"code":402,"error":"Payment Required","message":"You have hit your plan's monthly limit"}"#
                    : #"{"code":401,"error":"Unauthorized","message":"Incorrect Bearer token specified"}"#
                let hook = beforeNextRefusal.withLockedValue { hook in
                    defer { hook = nil }
                    return hook
                }
                return .answer(status: status, body: body, delay: minimumDelay, whenSent: hook)
            }
            return Self.answer(
                request, tally: tally, failing: failing, down: down, epoch: epoch, failureShare: failureShare,
                delays: (minimum: minimumDelay, slow: slowDelay, slowSuccess: slowSuccessDelay))
        }
    }

    var baseURL: String { server.baseURL.absoluteString }
    var snapshot: Tally { tally.withLockedValue { $0 } }

    /// Stop injecting failures: the drain at the end of the soak.
    func heal() { failing.withLockedValue { $0 = false } }

    /// Injects failures again after `heal()`.
    func resumeFailing() { failing.withLockedValue { $0 = true } }

    /// A total outage while `on`: every request is answered 503 (after `minimumDelay`).
    func outage(_ on: Bool) { down.withLockedValue { $0 = on } }

    /// Every request is answered `status` (402: the month's quota is spent; 401: the key
    /// was revoked) until called with nil.
    func refuseAll(_ status: Int?) { refusal.withLockedValue { $0 = status } }

    /// Runs `hook` once, just before the next refusal's answer is written.
    func beforeNextRefusal(_ hook: @escaping @Sendable () -> Void) { beforeNextRefusal.withLockedValue { $0 = hook } }

    /// The daemon was killed: deliveries from now on go to the next one.
    func beginEpoch() { epoch.withLockedValue { $0 += 1 } }

    func stop() async { await server.stop() }

    private static func answer(
        _ request: FakePlunk.Request, tally: NIOLockedValueBox<Tally>, failing: NIOLockedValueBox<Bool>, down: NIOLockedValueBox<Bool>,
        epoch: NIOLockedValueBox<Int>, failureShare: Double, delays: (minimum: TimeAmount, slow: TimeAmount, slowSuccess: TimeAmount)
    ) -> FakePlunk.Reply {
        let minimumDelay = delays.minimum
        let second = Int(Date().timeIntervalSince1970)
        let isFailing = failing.withLockedValue { $0 }
        let isDown = down.withLockedValue { $0 }
        let fault: Fault? = isDown ? .html503 : isFailing && Double.random(in: 0..<1) < failureShare ? Fault.allCases.randomElement() : nil
        tally.withLockedValue {
            $0.requests += 1
            if isDown { $0.requestsDuringOutage += 1 }
            $0.requestsPerSecond[second, default: 0] += 1
            if isFailing { $0.requestsPerSecondWhileFailing[second, default: 0] += 1 }
            if fault != nil { $0.failuresInjected += 1 }
        }
        switch fault {
        case .reset:
            return .reset(after: minimumDelay)
        case .html500: return html(500, delay: minimumDelay)
        case .html502: return html(502, delay: minimumDelay)
        case .html503: return html(503, delay: minimumDelay)
        case .slow: return html(503, delay: delays.slow)
        case .rateLimited:
            return .answer(
                status: 429, body: #"{"code":429,"error":"Too Many Requests","message":"slow down"}"#, headers: [("Retry-After", "1")],
                delay: minimumDelay)
        case nil:
            let key = request.idempotencyKey
            let email = request.email ?? ""
            let slow = Double.random(in: 0..<1) < 0.2
            if slow { tally.withLockedValue { $0.slowSuccesses += 1 } }
            return .answer(
                status: 200, body: #"{"success":true,"contact":"c","event":"e","timestamp":"2026-11-29T00:00:00.000Z"}"#,
                delay: slow ? delays.slowSuccess : minimumDelay,
                whenWritten: { written in
                    guard written, let key else { return }
                    let daemon = epoch.withLockedValue { $0 }
                    tally.withLockedValue {
                        $0.deliveries[key, default: 0] += 1
                        if $0.deliveries[key] == 1 {
                            $0.firstDeliveries.append((key, email))
                            $0.firstDeliveryEpoch[key] = daemon
                        } else if let first = $0.firstDeliveryEpoch[key], first != daemon {
                            $0.duplicatesAfterCrash[first, default: 0] += 1
                        } else {
                            $0.duplicatesAfterTimeout += 1
                        }
                    }
                })
        }
    }

    private static func html(_ status: Int, delay: TimeAmount) -> FakePlunk.Reply {
        .answer(status: status, body: "<html><head><title>\(status)</title></head><body><h1>\(status)</h1><hr>nginx</body></html>", delay: delay)
    }
}
