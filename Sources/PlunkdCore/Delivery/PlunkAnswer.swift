import Foundation

/// What one attempt to post an event came back with.
public enum PlunkAnswer: Sendable, Equatable {
    /// An HTTP response. `body` is at most the first 4 KiB, which is all an operator needs;
    /// `rateLimit` is what a rate-limiting Plunk said of its bucket.
    case response(status: Int, retryAfter: String?, rateLimit: RateLimitHeaders? = nil, body: Data)
    /// No HTTP response: timeout, refused, reset, TLS or DNS failure.
    case transportFailure(String)

    public static let keptBodyBytes = 4096
}

/// What the sender does with an event after an answer, and with the destination.
/// This is the table of `shared/plunk-api.md`, for both Plunk generations.
public enum DeliveryOutcome: Sendable, Equatable {
    /// Any 2xx: delivered, whatever the body says.
    case delivered
    /// 409 `IDEMPOTENCY_KEY_REUSED` whose first attempt was stored (`originalStatusCode`
    /// 2xx), or, `confirmed` false, a 409 without readable details (an older v2, a proxy):
    /// delivered, as the best reading.
    case duplicate(confirmed: Bool)
    /// 409 `IDEMPOTENCY_KEY_REUSED` with `originalStatusCode: null`: the first attempt is
    /// still running at Plunk. Retried later with the same key, whose answer will tell;
    /// not a sign that Plunk is failing.
    case firstAttemptRunning(detail: String)
    /// Track, 409 `IDEMPOTENCY_KEY_REUSED` whose first attempt failed (`originalStatusCode`
    /// 5xx): Plunk's newest contract stores a track event before it dispatches, keeps the
    /// key on a failed dispatch and finishes the stored event itself. Delivered, counted
    /// apart; a new key would make a second event.
    case acceptedRecovering(originalStatus: Int, detail: String)
    /// Email, the same 409: the send may have reached some recipients before it failed,
    /// and Plunk keeps the key so that a blind retry reaches none twice. Parked
    /// `uncertain`; only the operator sends it again, under a new key.
    case uncertain(originalStatus: Int, detail: String)
    /// Track, the same 409, where the operator chose `plunk.rekey_burned_track_keys` for a
    /// Plunk build (0.13–0.16) that answers 5xx without storing (the first-seen-contact
    /// race) and keeps the key: sent again under a new key derived from its id.
    case keyBurned(originalStatus: Int, detail: String)
    /// The event itself was refused (400, 404, 413, 422, other 4xx, 403 other than
    /// `PROJECT_DISABLED`): parked `rejected`.
    case rejected(status: Int, detail: String)
    /// The key or project was refused (401, 403 `PROJECT_DISABLED`): parked
    /// `unauthorized`, delivery held.
    case unauthorized(status: Int, detail: String)
    /// 402: the monthly quota is spent; delivery pauses until next month.
    case quotaExceeded(detail: String)
    /// 429: the whole destination waits `retryAfter` (seconds from now), or backs off.
    case rateLimited(retryAfter: Double?, detail: String)
    /// 408, 5xx, 3xx, a 409 of another kind, or no response: retried with backoff.
    case transient(status: Int?, detail: String)

    /// The label used for the `attempts_<outcome>_total` counters and logs.
    public var label: String {
        switch self {
        case .delivered: "delivered"
        case .duplicate: "duplicate"
        case .firstAttemptRunning: "first_attempt_running"
        case .acceptedRecovering: "accepted_recovering"
        case .uncertain: "uncertain"
        case .keyBurned: "rekeyed"
        case .rejected: "rejected"
        case .unauthorized: "unauthorized"
        case .quotaExceeded: "quota_exceeded"
        case .rateLimited: "rate_limited"
        case .transient: "transient"
        }
    }

    /// Every `label`, for metrics that must exist before the first attempt.
    public static let labels = [
        "delivered", "duplicate", "first_attempt_running", "accepted_recovering", "uncertain", "rekeyed", "rejected", "unauthorized",
        "quota_exceeded", "rate_limited", "transient",
    ]

    /// Plunk (or the path to it) asks for fewer requests at once: what makes an adaptive
    /// concurrency limit shrink. A plain 500 is not: it is one request's failure.
    var isBackPressure: Bool {
        switch self {
        case .rateLimited: true
        case .transient(let status, _): status == nil || status == 503 || status == 504
        default: false
        }
    }

    /// Whether its round trip says how loaded Plunk is, for `AdaptiveConcurrency`. Not a
    /// failure that is not back pressure (a 500 from a failing part of Plunk, often
    /// answered at once): its round trip dragged the learned baseline down until every
    /// success looked slow, and with 30 % of 500s the limit fell to 1 or 2 (0.10 of the
    /// healthy rate, seen from a client).
    var measuresLoad: Bool {
        if case .transient = self { return isBackPressure }
        return true
    }

    /// The HTTP status behind the outcome, when there was an answer.
    var status: Int? {
        switch self {
        case .delivered, .duplicate: 200
        case .firstAttemptRunning, .acceptedRecovering, .uncertain, .keyBurned: 409
        case .rejected(let status, _), .unauthorized(let status, _): status
        case .quotaExceeded: 402
        case .rateLimited: 429
        case .transient(let status, _): status
        }
    }
}

public enum OutcomeClassifier {
    /// Classifies an answer; `now` anchors an HTTP-date `Retry-After`.
    /// - Parameter kind: an email's 429 may be the monthly limit, which v2 answers on
    ///   `/v1/send` in place of a 402 (see `isMonthlyEmailLimit`); a burned key means
    ///   something else for an email than for a track event.
    /// - Parameter rekeyBurnedTrackKeys: `plunk.rekey_burned_track_keys`, for track only.
    public static func classify(
        _ answer: PlunkAnswer, now: Date, kind: EventKind = .track, rekeyBurnedTrackKeys: Bool = false
    ) -> DeliveryOutcome {
        switch answer {
        case .transportFailure(let reason):
            return .transient(status: nil, detail: reason)
        case .response(let status, let retryAfter, _, let body):
            // Any 2xx is delivered whatever the body says: nothing to read. (Two JSON parses
            // per success showed in the nginx drain's profile; with the request template and
            // the stored id as key, CPU per event went from 3.02 to 2.12 s per 10,000.)
            if (200..<300).contains(status) { return .delivered }
            let detail = Self.detail(status: status, body: body)
            let code = PlunkErrorReader.code(in: body)
            switch status {
            case 409 where code == "IDEMPOTENCY_KEY_REUSED":
                switch PlunkErrorReader.originalStatus(in: body) {
                case .stored: return .duplicate(confirmed: true)
                case .unknown: return .duplicate(confirmed: false)
                case .stillRunning: return .firstAttemptRunning(detail: detail)
                case .failed(let original):
                    // Never a new key by plunkd's own decision: what Plunk may have done
                    // already must not be done twice (shared/plunk-api.md, the newest contract).
                    switch kind {
                    case .email: return .uncertain(originalStatus: original, detail: detail)
                    case .track where rekeyBurnedTrackKeys: return .keyBurned(originalStatus: original, detail: detail)
                    case .track: return .acceptedRecovering(originalStatus: original, detail: detail)
                    }
                }
            case 401 where kind == .email && isEmailOwnRefusal(body: body):
                return .rejected(status: status, detail: detail)
            case 401:
                return .unauthorized(status: status, detail: detail)
            case 403 where code == "PROJECT_DISABLED":
                return .unauthorized(status: status, detail: detail)
            case 402:
                return .quotaExceeded(detail: detail)
            case 429 where kind == .email && retryAfter == nil && isMonthlyEmailLimit(code: code, body: body):
                return .quotaExceeded(detail: detail)
            case 429:
                return .rateLimited(retryAfter: retryAfter.flatMap { RetryAfter.seconds(from: $0, now: now) }, detail: detail)
            case 408, 409, 500..<600, 300..<400:
                return .transient(status: status, detail: detail)
            case 400..<500:
                return .rejected(status: status, detail: detail)
            default:
                return .transient(status: status, detail: detail)
            }
        }
    }

    /// The legacy host answers 401 "Custom from address must be from a verified domain"
    /// to one email's `from`: that email is refused, not the key, so it is parked
    /// `rejected` and the rest of the line goes on instead of being held.
    static func isEmailOwnRefusal(body: Data) -> Bool {
        PlunkErrorReader.message(in: body)?.lowercased().contains("from address") ?? false
    }

    /// v2's monthly email limit on `/v1/send`: a 429 without `Retry-After`, not coded
    /// `RATE_LIMIT_EXCEEDED` (the per-second bucket, which always sends `Retry-After`),
    /// whose message says a limit was reached. Retrying it before the month turns only
    /// asks again, so it pauses the email line as a 402 does.
    static func isMonthlyEmailLimit(code: String?, body: Data) -> Bool {
        guard code != "RATE_LIMIT_EXCEEDED", let message = PlunkErrorReader.message(in: body)?.lowercased() else { return false }
        return message.contains("limit") && (message.contains("month") || message.contains("reached"))
    }

    /// A one-line account of an answer for status and logs: the status and the message
    /// Plunk gave, or the start of a non-JSON body (a proxy's HTML page).
    static func detail(status: Int, body: Data) -> String {
        if let message = PlunkErrorReader.message(in: body) {
            return "\(status): \(message)"
        }
        let text = String(decoding: body.prefix(200), as: UTF8.self)
            .replacingOccurrences(of: "\n", with: " ").trimmingCharacters(in: .whitespaces)
        return text.isEmpty ? "\(status)" : "\(status): \(text)"
    }
}

/// Reads the error code and message out of either generation's error body:
/// legacy `{"code":401,"error":"Unauthorized","message":"…"}` and
/// v2 `{"success":false,"error":{"code":"INVALID_API_KEY","message":"…"}}`.
enum PlunkErrorReader {
    static func code(in body: Data) -> String? {
        guard let object = object(body) else { return nil }
        if let error = object["error"] as? [String: Any] { return error["code"] as? String }
        return object["code"] as? String
    }

    static func message(in body: Data) -> String? {
        guard let object = object(body) else { return nil }
        if let error = object["error"] as? [String: Any] {
            let code = error["code"] as? String
            let message = error["message"] as? String
            return [code, message].compactMap { $0 }.joined(separator: " ").nilIfEmpty
        }
        return (object["message"] as? String) ?? (object["error"] as? String)
    }

    /// What v2's 409 `IDEMPOTENCY_KEY_REUSED` says became of the first attempt, from
    /// `error.details.originalStatusCode`.
    enum OriginalStatus: Equatable {
        /// A 2xx: the first attempt stored the event.
        case stored
        /// `null`: the first attempt is still running.
        case stillRunning
        /// Any other status: it failed, and the key stays burned.
        case failed(Int)
        /// No details, or not a number or null: an older v2 or a proxy.
        case unknown
    }

    static func originalStatus(in body: Data) -> OriginalStatus {
        guard body.first == UInt8(ascii: "{"),
            let reading = try? JSONDecoder().decode(ConflictBody.self, from: body).error?.details?.originalStatusCode
        else { return .unknown }
        switch reading {
        case .none: return .stillRunning
        case .some(let status): return (200..<300).contains(status) ? .stored : .failed(status)
        }
    }

    /// `{"error":{"details":{"originalStatusCode":500}}}`; the field's absence and its
    /// `null` mean different things, so it is decoded by hand.
    private struct ConflictBody: Decodable {
        struct Failure: Decodable { let details: Details? }
        struct Details: Decodable {
            /// nil: absent or not a whole number; `.some(nil)`: null.
            let originalStatusCode: Int??
            enum CodingKeys: String, CodingKey { case originalStatusCode }
            init(from decoder: any Decoder) throws {
                let container = try decoder.container(keyedBy: CodingKeys.self)
                if !container.contains(.originalStatusCode) {
                    originalStatusCode = nil
                } else if try container.decodeNil(forKey: .originalStatusCode) {
                    originalStatusCode = .some(nil)
                } else {
                    originalStatusCode = (try? container.decode(Int.self, forKey: .originalStatusCode)).map { .some($0) }
                }
            }
        }
        let error: Failure?
    }

    private static func object(_ body: Data) -> [String: Any]? {
        guard body.first == UInt8(ascii: "{") else { return nil }
        return try? JSONSerialization.jsonObject(with: body) as? [String: Any]
    }
}

/// `Retry-After` as delta-seconds or an HTTP-date (RFC 9110 §10.2.3).
public enum RetryAfter {
    public static func seconds(from value: String, now: Date) -> Double? {
        let trimmed = value.trimmingCharacters(in: .whitespaces)
        if let seconds = Double(trimmed), seconds.isFinite {
            return max(0, seconds)
        }
        for format in ["EEE, dd MMM yyyy HH:mm:ss zzz", "EEEE, dd-MMM-yy HH:mm:ss zzz", "EEE MMM d HH:mm:ss yyyy"] {
            let formatter = DateFormatter()
            formatter.locale = Locale(identifier: "en_US_POSIX")
            formatter.timeZone = TimeZone(identifier: "GMT")
            formatter.dateFormat = format
            if let date = formatter.date(from: trimmed) {
                return max(0, date.timeIntervalSince(now))
            }
        }
        return nil
    }
}

extension String {
    fileprivate var nilIfEmpty: String? { isEmpty ? nil : self }
}
