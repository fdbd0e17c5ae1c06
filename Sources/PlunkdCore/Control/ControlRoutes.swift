import Foundation

/// Requests on the socket that are not events. Status and metrics are for anyone who may
/// use the socket (they carry counts, never event contents or the key); everything that
/// changes or reveals events is for root, the daemon's user, and `socket.admin_uids`.
public struct ControlRoutes: ControlResponder {
    private let lines: [ControlledLine]
    private let policy: PeerPolicyBox
    private let metrics: MetricsExposition?
    private let clock: @Sendable () -> Date

    /// - Parameter lines: the daemon's lines, track's first: the report's top level is
    ///   track's, and every other line joins it (see `StatusReport.add(line:)`).
    public init(
        lines: [ControlledLine], policy: PeerPolicyBox, metrics: MetricsExposition? = nil,
        clock: @escaping @Sendable () -> Date = { Date() }
    ) {
        precondition(lines.first?.context.kind == .track, "the track line comes first")
        self.lines = lines
        self.policy = policy
        self.metrics = metrics
        self.clock = clock
    }

    /// One line, as tests and single-line tools build it.
    public init(
        sender: Sender, outbox: Outbox, context: StatusContext, policy: PeerPolicyBox,
        metrics: MetricsExposition? = nil, clock: @escaping @Sendable () -> Date = { Date() }
    ) {
        self.init(
            lines: [ControlledLine(sender: sender, outbox: outbox, context: context)], policy: policy, metrics: metrics, clock: clock)
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
        let reports = lines.map { line in
            StatusAssessment.running(
                snapshot: line.sender.snapshot(), stored: Result { try line.outbox.storedStatus(retentionHorizon: line.context.retentionHorizon(now: now)) },
                context: line.context, now: now)
        }
        var report = reports[0]
        for (line, lineReport) in zip(lines, reports).dropFirst() { report.add(line: lineReport, kind: line.context.kind) }
        return report
    }

    /// The line a parked-events request names (`"line": "email"`), track's by default.
    private func line(_ request: ReceivedParkedRequest) throws -> ControlledLine {
        guard let line = lines.first(where: { $0.context.kind == request.line }) else {
            throw ControlRequestError(message: "this plunkd has no \(request.line.rawValue) line")
        }
        return line
    }

    private func adminRoute(_ path: String, body: Data) throws -> ControlResponse {
        switch path {
        case "/control/resume":
            // Every line: an operator who upgraded the plan or fixed a key means all of it.
            var message = try lines[0].sender.resume()
            for line in lines.dropFirst() { message += "; \(line.context.kind.rawValue) line: " + (try line.sender.resume()) }
            return Self.success(["message": message])
        case "/control/parked/list":
            let request = try ReceivedParkedRequest(body, listing: true)
            let events = try line(request).outbox.parkedEvents(request.selection, limit: request.limit)
            let encoder = StatusReport.encoder()
            encoder.keyEncodingStrategy = .convertToSnakeCase
            let list = String(decoding: try encoder.encode(events), as: UTF8.self)
            return ControlResponse(status: 200, body: "{\"ok\":true,\"events\":\(list)}")
        case "/control/parked/retry":
            let request = try ReceivedParkedRequest(body)
            let line = try line(request)
            do {
                let count = try line.outbox.requeueParked(
                    request.selection, newKey: request.newKey, confirmed: request.confirmed, now: clock())
                line.sender.wake()
                let how = request.newKey ? " under a new Idempotency-Key" : ""
                return Self.success(["count": count, "message": "\(count) parked events back in line\(how)"])
            } catch let needed as Outbox.NewKeyNeedsConfirmation {
                return Self.needsConfirmation(
                    needed.count,
                    "this would send \(needed.count) parked events again under new keys, and Plunk may have done some of them already (an uncertain email may reach its recipients twice)"
                )
            }
        default:
            let request = try ReceivedParkedRequest(body)
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
struct ReceivedParkedRequest {
    static let maxIDs = 1000

    let selection: ParkedSelection
    /// The line named by `"line"`; track's when the request does not say.
    let line: EventKind
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
        case nil: line = .track
        case let name?:
            guard let kind = EventKind(rawValue: name) else {
                let known = EventKind.allCases.map(\.rawValue).joined(separator: " or ")
                throw ControlRequestError(message: "unknown line \"\(name)\"; \(known)")
            }
            line = kind
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

/// A line as the control routes see it: the sender to snapshot and resume, the store to
/// count and whose parked events are listed, retried and dropped, and what its status needs.
public struct ControlledLine: Sendable {
    let sender: Sender
    let outbox: Outbox
    let context: StatusContext

    public init(sender: Sender, outbox: Outbox, context: StatusContext) {
        self.sender = sender
        self.outbox = outbox
        self.context = context
    }
}
