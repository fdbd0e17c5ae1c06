import Foundation
import NIOConcurrencyHelpers
import NIOCore
import PlunkdTestSupport

/// v2 Plunk's idempotency middleware (`apps/api`), as `shared/plunk-api.md` gives it: a
/// key is claimed when its request arrives (`originalStatusCode` null while it runs),
/// released on any 4xx, and kept with its status on a 2xx or a 5xx; a reuse gets 409
/// `IDEMPOTENCY_KEY_REUSED` with `error.details.originalStatusCode`. Behind it, the
/// handler decides what the first attempt of each key really does, and the middleware
/// counts what was stored, so a test can say "stored once".
final class V2IdempotentPlunk: Sendable {
    /// What the route behind the middleware does with one request.
    enum Handling: Sendable {
        /// Stores the event and answers `status` (a 2xx, or a 5xx after storing).
        case store(status: Int, delay: TimeAmount = .zero)
        /// Answers `status` without storing (a 5xx race, a 4xx refusal).
        case fail(status: Int, delay: TimeAmount = .zero)
        /// Reads the request and never answers: the key stays claimed.
        case hang
    }

    private struct State {
        /// Key → the first attempt's status, nil while it runs.
        var keys: [String: Int?] = [:]
        /// Event names (the body's `event`) stored, in order.
        var stored: [String] = []
        var conflicts: [(key: String, original: Int?)] = []
    }

    private let state = NIOLockedValueBox(State())
    private let handling: NIOLockedValueBox<@Sendable (FakePlunk.Request) -> Handling>

    init(handle: @escaping @Sendable (FakePlunk.Request) -> Handling) {
        handling = NIOLockedValueBox(handle)
    }

    /// What the route does from now on with the first attempt of each new key.
    func handleNext(_ handle: @escaping @Sendable (FakePlunk.Request) -> Handling) {
        handling.withLockedValue { $0 = handle }
    }

    private func handle(_ request: FakePlunk.Request) -> Handling {
        handling.withLockedValue { $0 }(request)
    }

    var stored: [String] { state.withLockedValue { $0.stored } }
    var conflicts: [(key: String, original: Int?)] { state.withLockedValue { $0.conflicts } }

    /// The responder to give a `FakePlunk`.
    func responder(_ request: FakePlunk.Request) -> FakePlunk.Reply {
        guard let key = request.idempotencyKey else { return respond(request, key: nil) }
        let earlier: Int?? = state.withLockedValue { state in
            if let earlier = state.keys[key] {
                state.conflicts.append((key, earlier))
                return earlier
            }
            state.keys[key] = .some(nil)
            return nil
        }
        if let earlier {
            let original = earlier.map(String.init) ?? "null"
            return .answer(
                status: 409,
                body:
                    #"{"success":false,"error":{"code":"IDEMPOTENCY_KEY_REUSED","message":"This idempotency key was already used","statusCode":409,"requestId":"r9","details":{"originalStatusCode":\#(original)}},"timestamp":"2026-12-01T00:00:00.000Z"}"#
            )
        }
        return respond(request, key: key)
    }

    private func respond(_ request: FakePlunk.Request, key: String?) -> FakePlunk.Reply {
        let name = request.eventName ?? "?"
        switch handle(request) {
        case .hang:
            return .hang
        case .store(let status, let delay):
            return .answer(status: status, body: Self.body(status), delay: delay, whenSent: { self.finish(key, status: status, stored: name) })
        case .fail(let status, let delay):
            return .answer(status: status, body: Self.body(status), delay: delay, whenSent: { self.finish(key, status: status, stored: nil) })
        }
    }

    private func finish(_ key: String?, status: Int, stored name: String?) {
        state.withLockedValue { state in
            if let name { state.stored.append(name) }
            guard let key else { return }
            if (400..<500).contains(status) {
                state.keys[key] = nil
            } else {
                state.keys[key] = .some(status)
            }
        }
    }

    private static func body(_ status: Int) -> String {
        (200..<300).contains(status)
            ? #"{"success":true,"data":{"contact":"c6a1","event":"e7b2","timestamp":"2026-12-01T00:00:00.000Z"}}"#
            : #"{"success":false,"error":{"code":"INTERNAL_SERVER_ERROR","message":"Internal server error","statusCode":\#(status),"requestId":"r1","errors":[]},"timestamp":"2026-12-01T00:00:00.000Z"}"#
    }
}
