import Foundation

/// Requests on the socket that are not events. Status and metrics are for anyone who may
/// use the socket (they carry counts, never event contents or the key); everything that
/// changes or reveals events is for root, the daemon's user, and `socket.admin_uids`.
public struct ControlRoutes: ControlResponder {
    /// The transactional-email line's sender and store, reported and operated beside track's.
    public struct EmailLine: Sendable {
        let sender: Sender
        let outbox: Outbox
        let context: StatusContext

        public init(sender: Sender, outbox: Outbox, context: StatusContext) {
            self.sender = sender
            self.outbox = outbox
            self.context = context
        }
    }

    private let sender: Sender
    private let outbox: Outbox
    private let context: StatusContext
    private let email: EmailLine?
    private let policy: PeerPolicyBox
    private let metrics: MetricsExposition?
    private let clock: @Sendable () -> Date

    public init(
        sender: Sender, outbox: Outbox, context: StatusContext, email: EmailLine? = nil, policy: PeerPolicyBox,
        metrics: MetricsExposition? = nil, clock: @escaping @Sendable () -> Date = { Date() }
    ) {
        self.email = email
        self.sender = sender
        self.outbox = outbox
        self.context = context
        self.policy = policy
        self.metrics = metrics
        self.clock = clock
    }

    public func respond(method: String, path: String, body: Data, peer: PeerCredentials?) -> ControlResponse? {
        switch (method, path) {
        case ("GET", "/status"):
            return ControlResponse(status: 200, body: status().json())
        case ("GET", "/metrics"):
            guard let text = metricsText() else { return nil }
            return ControlResponse(status: 200, body: text, contentType: "text/plain; version=0.0.4; charset=utf-8")
        case ("POST", "/control/resume"), ("POST", "/control/parked/list"), ("POST", "/control/parked/retry"),
            ("POST", "/control/parked/drop"):
            guard policy.current.isAdmin(peer) else { return Self.forbidden(peer) }
            do {
                return try adminRoute(path, body: body)
            } catch let error as ControlRequestError {
                return Self.failure(400, error.message)
            } catch {
                return Self.failure(500, "\(path) failed: \(error)")
            }
        default:
            return nil
        }
    }

    /// The Prometheus exposition, also served on `metrics.listen` when set.
    public func metricsText() -> String? {
        metrics?.render(status())
    }

    func status() -> StatusReport {
        let now = clock()
        var report = StatusAssessment.running(
            snapshot: sender.snapshot(), stored: Result { try outbox.storedStatus() }, context: context, now: now)
        if let email {
            report.add(
                emailLine: StatusAssessment.running(
                    snapshot: email.sender.snapshot(), stored: Result { try email.outbox.storedStatus() }, context: email.context, now: now))
        }
        return report
    }

    /// The line a parked-events request names (`"line": "email"`), track's by default.
    private func line(_ request: ParkedRequest) throws -> (sender: Sender, outbox: Outbox) {
        guard request.emailLine else { return (sender, outbox) }
        guard let email else { throw ControlRequestError(message: "this plunkd has no email line") }
        return (email.sender, email.outbox)
    }

    private func adminRoute(_ path: String, body: Data) throws -> ControlResponse {
        switch path {
        case "/control/resume":
            // Both lines: an operator who upgraded the plan or fixed a key means all of it.
            var message = try sender.resume()
            if let email { message += "; email line: " + (try email.sender.resume()) }
            return Self.success(["message": message])
        case "/control/parked/list":
            let request = try ParkedRequest(body, listing: true)
            let events = try line(request).outbox.parkedEvents(request.selection, limit: request.limit)
            let encoder = StatusReport.encoder()
            encoder.keyEncodingStrategy = .convertToSnakeCase
            let list = String(decoding: try encoder.encode(events), as: UTF8.self)
            return ControlResponse(status: 200, body: "{\"ok\":true,\"events\":\(list)}")
        case "/control/parked/retry":
            let request = try ParkedRequest(body)
            let (sender, outbox) = try line(request)
            do {
                let count = try outbox.requeueParked(
                    request.selection, newKey: request.newKey, confirmed: request.confirmed, now: clock())
                sender.wake()
                let how = request.newKey ? " under a new Idempotency-Key" : ""
                return Self.success(["count": count, "message": "\(count) parked events back in line\(how)"])
            } catch let needed as Outbox.NewKeyNeedsConfirmation {
                return Self.needsConfirmation(
                    needed.count,
                    "this would send \(needed.count) parked events again under new keys, and Plunk may have done some of them already (an uncertain email may reach its recipients twice)"
                )
            }
        default:
            let request = try ParkedRequest(body)
            let outbox = try line(request).outbox
            do {
                let count = try outbox.dropParked(request.selection, confirmed: request.confirmed)
                return Self.success(["count": count, "message": "\(count) parked events dropped"])
            } catch let needed as Outbox.DropNeedsConfirmation {
                return Self.needsConfirmation(needed.count, "this would drop \(needed.count) parked events for good")
            }
        }
    }

    /// 409: an operator's command that would act on more than one event asks for --yes.
    private static func needsConfirmation(_ count: Int, _ what: String) -> ControlResponse {
        ControlResponse(status: 409, body: object(["ok": false, "count": count, "error": "\(what); confirm with --yes"]))
    }

    private static func forbidden(_ peer: PeerCredentials?) -> ControlResponse {
        let who = peer.map { "uid \($0.uid)" } ?? "an unidentified peer"
        return failure(403, "\(who) may not run control commands; run as root or as the daemon's user, or add the uid to socket.admin_uids")
    }

    private static func success(_ fields: [String: Any]) -> ControlResponse {
        var all = fields
        all["ok"] = true
        return ControlResponse(status: 200, body: object(all))
    }

    private static func failure(_ status: Int, _ message: String) -> ControlResponse {
        ControlResponse(status: status, body: object(["ok": false, "error": message]))
    }

    private static func object(_ fields: [String: Any]) -> String {
        (try? JSONSerialization.data(withJSONObject: fields, options: [.sortedKeys]))
            .map { String(decoding: $0, as: UTF8.self) } ?? "{}"
    }
}

struct ControlRequestError: Error {
    let message: String
}

/// The body of a parked-events request: `{"reason": "rejected"}`, `{"ids": [...]}` or
/// `{"all": true}`, plus `limit` for a list, `confirm` for a drop, and `"line": "email"`
/// for the email line's parked emails.
struct ParkedRequest {
    static let maxIDs = 1000

    let selection: ParkedSelection
    let emailLine: Bool
    let limit: Int
    let confirmed: Bool
    let newKey: Bool

    /// - Parameter listing: a list may select nothing (meaning all); a retry or drop must say.
    init(_ body: Data, listing: Bool = false) throws {
        let object: [String: Any]
        if body.isEmpty {
            object = [:]
        } else {
            guard let parsed = (try? JSONSerialization.jsonObject(with: body)) as? [String: Any] else {
                throw ControlRequestError(message: "the request body must be a JSON object")
            }
            object = parsed
        }
        let reason = object["reason"] as? String
        switch object["line"] as? String {
        case nil, "track": emailLine = false
        case "email": emailLine = true
        case let other?: throw ControlRequestError(message: "unknown line \"\(other)\"; track or email")
        }
        let ids = object["ids"] as? [String] ?? []
        let all = object["all"] as? Bool ?? false
        if reason != nil && !ids.isEmpty {
            throw ControlRequestError(message: "give a reason or ids, not both")
        }
        if let reason {
            guard let parsed = ParkReason(rawValue: reason) else {
                throw ControlRequestError(message: "unknown reason \"\(reason)\"; one of \(ParkReason.allCases.map(\.rawValue).joined(separator: ", "))")
            }
            selection = .reason(parsed)
        } else if !ids.isEmpty {
            guard ids.count <= Self.maxIDs else { throw ControlRequestError(message: "at most \(Self.maxIDs) ids at a time") }
            guard ids.allSatisfy({ UUID(uuidString: $0) != nil }) else {
                throw ControlRequestError(message: "ids must be event ids (UUIDs) as plunkd parked list shows them")
            }
            selection = .ids(ids)
        } else if all || listing {
            selection = .all
        } else {
            throw ControlRequestError(message: "say which parked events: a reason, ids, or all")
        }
        limit = min(max(object["limit"] as? Int ?? 100, 1), 10_000)
        confirmed = object["confirm"] as? Bool ?? false
        newKey = object["newKey"] as? Bool ?? false
    }
}
