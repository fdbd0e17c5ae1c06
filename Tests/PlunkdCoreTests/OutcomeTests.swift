import Foundation
import Testing

@testable import PlunkdCore

@Suite("What each Plunk answer means", .timeLimit(.minutes(2)), .watchdog)
struct OutcomeTests {
    let now = Date(timeIntervalSince1970: 1_800_000_000)

    func classify(_ status: Int, _ body: String = "", retryAfter: String? = nil) -> DeliveryOutcome {
        OutcomeClassifier.classify(.response(status: status, retryAfter: retryAfter, body: Data(body.utf8)), now: now)
    }

    @Test("every 2xx is delivered, whatever the body", arguments: [200, 201, 202, 204, 299])
    func success(status: Int) {
        #expect(classify(status, "not even json") == .delivered)
    }

    static func conflict(details: String?) -> String {
        let tail = details.map { #","details":"# + $0 } ?? ""
        return #"{"success":false,"error":{"code":"IDEMPOTENCY_KEY_REUSED","message":"reused","statusCode":409,"requestId":"r1"\#(tail)},"timestamp":"t"}"#
    }

    @Test(
        "409 IDEMPOTENCY_KEY_REUSED is read by what became of the first attempt",
        arguments: [
            (#"{"originalStatusCode":200}"#, DeliveryOutcome.duplicate(confirmed: true)),
            (#"{"originalStatusCode":201}"#, .duplicate(confirmed: true)),
            (#"{"originalStatusCode":null}"#, .firstAttemptRunning(detail: "409: IDEMPOTENCY_KEY_REUSED reused")),
            // A track event Plunk stored and finishes itself (the newest contract).
            (#"{"originalStatusCode":500}"#, .acceptedRecovering(originalStatus: 500, detail: "409: IDEMPOTENCY_KEY_REUSED reused")),
            (#"{"originalStatusCode":503}"#, .acceptedRecovering(originalStatus: 503, detail: "409: IDEMPOTENCY_KEY_REUSED reused")),
            (#"{"originalStatusCode":302}"#, .acceptedRecovering(originalStatus: 302, detail: "409: IDEMPOTENCY_KEY_REUSED reused")),
            // Unreadable details: delivered as the best reading (and warned about once).
            (#"{}"#, .duplicate(confirmed: false)),
            (#"{"originalStatusCode":"500"}"#, .duplicate(confirmed: false)),
            (#"{"originalStatusCode":true}"#, .duplicate(confirmed: false)),
            (#""text""#, .duplicate(confirmed: false)),
        ])
    func conflict(details: String, expected: DeliveryOutcome) {
        #expect(classify(409, Self.conflict(details: details)) == expected)
    }

    @Test(
        "a burned key (409, the first attempt a 5xx) is never re-keyed by plunkd's own decision: an email is uncertain, track re-keys only where the operator opted in"
    )
    func burnedKeyByLine() {
        let answer = PlunkAnswer.response(status: 409, retryAfter: nil, body: Data(Self.conflict(details: #"{"originalStatusCode":500}"#).utf8))
        let detail = "409: IDEMPOTENCY_KEY_REUSED reused"
        #expect(OutcomeClassifier.classify(answer, now: Date(), kind: .email) == .uncertain(originalStatus: 500, detail: detail))
        #expect(
            OutcomeClassifier.classify(answer, now: Date(), kind: .email, rekeyBurnedTrackKeys: true) == .uncertain(originalStatus: 500, detail: detail),
            "the email line never re-keys, whatever the setting")
        #expect(OutcomeClassifier.classify(answer, now: Date(), kind: .track) == .acceptedRecovering(originalStatus: 500, detail: detail))
        #expect(OutcomeClassifier.classify(answer, now: Date(), kind: .track, rekeyBurnedTrackKeys: true) == .keyBurned(originalStatus: 500, detail: detail))
    }

    @Test("a 409 IDEMPOTENCY_KEY_REUSED without details is an unconfirmed duplicate; another 409 is transient")
    func conflictWithoutDetails() {
        #expect(classify(409, Self.conflict(details: nil)) == .duplicate(confirmed: false))
        if case .transient(409, _) = classify(409, #"{"success":false,"error":{"code":"SOMETHING_ELSE","details":{"originalStatusCode":200}}}"#) {
        } else {
            Issue.record("other 409 not transient")
        }
        if case .transient(409, _) = classify(409, "<html>409 Conflict</html>") {
        } else {
            Issue.record("an HTML 409 not transient")
        }
    }

    @Test(
        "refusals of the event itself are rejected, in both generations' shapes",
        arguments: [
            (400, #"{"code":400,"error":"Bad Request","message":"Email is required","time":1}"#),
            (422, #"{"success":false,"error":{"code":"VALIDATION_ERROR","message":"Invalid","errors":[{"field":"email"}]}}"#),
            (404, #"{"code":404,"error":"Not Found","message":"Unknown route","time":1}"#),
            (413, "<html>too large</html>"),
            (403, #"{"code":403,"error":"Forbidden","message":"subscribe is a reserved event name","time":1}"#),
            (410, ""),
        ])
    func rejected(status: Int, body: String) {
        guard case .rejected(let got, let detail) = classify(status, body) else {
            Issue.record("\(status) not rejected")
            return
        }
        #expect(got == status)
        #expect(detail.hasPrefix("\(status)"))
    }

    @Test("a refused key or disabled project is unauthorized")
    func unauthorized() {
        guard case .unauthorized(401, let legacy) = classify(401, #"{"code":401,"error":"Unauthorized","message":"Invalid API key","time":1}"#) else {
            Issue.record("legacy 401")
            return
        }
        #expect(legacy.contains("Invalid API key"))
        guard case .unauthorized(401, _) = classify(401, #"{"success":false,"error":{"code":"INVALID_API_KEY","message":"Use a public key"}}"#) else {
            Issue.record("v2 401")
            return
        }
        guard case .unauthorized(403, _) = classify(403, #"{"success":false,"error":{"code":"PROJECT_DISABLED","message":"disabled"}}"#) else {
            Issue.record("PROJECT_DISABLED")
            return
        }
    }

    @Test("402 is the monthly quota")
    func quota() {
        guard case .quotaExceeded = classify(402, #"{"code":402,"error":"Payment Required","message":"You have hit your plan's monthly limit"}"#) else {
            Issue.record("402")
            return
        }
    }

    @Test("429 carries Retry-After in seconds or as an HTTP date")
    func rateLimited() {
        #expect(classify(429, "", retryAfter: "7") == .rateLimited(retryAfter: 7, detail: "429"))
        // RFC 9110's example date is 784111777 seconds after the epoch.
        #expect(RetryAfter.seconds(from: "Sun, 06 Nov 1994 08:49:37 GMT", now: Date(timeIntervalSince1970: 784_111_767)) == 10)
        #expect(RetryAfter.seconds(from: "Sun, 06 Nov 1994 08:49:37 GMT", now: Date(timeIntervalSince1970: 784_111_800)) == 0)
        #expect(RetryAfter.seconds(from: "soon", now: now) == nil)
        if case .rateLimited(nil, _) = classify(429, "") {} else { Issue.record("429 without Retry-After") }
    }

    @Test("408, 5xx, HTML error pages and transport failures are transient", arguments: [408, 500, 502, 503, 504, 301])
    func transient(status: Int) {
        guard case .transient(status, let detail) = classify(status, "<html><body><h1>\(status) Bad Gateway</h1></body></html>") else {
            Issue.record("\(status) not transient")
            return
        }
        #expect(detail.contains("\(status)"))
    }

    @Test("a transport failure is transient with its reason")
    func transport() {
        #expect(OutcomeClassifier.classify(.transportFailure("connection refused"), now: now) == .transient(status: nil, detail: "connection refused"))
    }
}

@Suite("Backoff and the month", .timeLimit(.minutes(2)), .watchdog)
struct RetryPolicyTests {
    let policy = RetryPolicy(initialBackoff: 1, maxBackoff: 300, maxAge: 604_800)

    @Test("the ceiling doubles from the initial backoff up to the maximum")
    func ceiling() {
        #expect(policy.ceiling(afterFailures: 1) == 1)
        #expect(policy.ceiling(afterFailures: 2) == 2)
        #expect(policy.ceiling(afterFailures: 5) == 16)
        #expect(policy.ceiling(afterFailures: 9) == 256)
        #expect(policy.ceiling(afterFailures: 10) == 300)
        #expect(policy.ceiling(afterFailures: 1000) == 300)
    }

    @Test("full jitter: the delay spans 0 up to the ceiling, driven by the random source", arguments: [1, 3, 8, 40])
    func jitter(failures: Int) {
        let ceiling = policy.ceiling(afterFailures: failures)
        #expect(policy.delay(afterFailures: failures, unit: { 0 }) == 0)
        #expect(policy.delay(afterFailures: failures, unit: { 0.5 }) == ceiling / 2)
        let high = policy.delay(afterFailures: failures, unit: { 0.999_999 })
        #expect(high < ceiling && high > ceiling * 0.99)
        for _ in 0..<1000 {
            let delay = policy.delay(afterFailures: failures, unit: { Double.random(in: 0..<1) })
            #expect(delay >= 0 && delay < ceiling)
        }
    }

    func date(_ text: String) -> Date { ISO8601DateFormatter().date(from: text)! }

    @Test(
        "a 402 pause ends at 00:00 UTC on the first day of the next month",
        arguments: [
            ("2026-12-31T23:59:59Z", "2027-01-01T00:00:00Z"),
            ("2027-02-10T12:00:00Z", "2027-03-01T00:00:00Z"),
            ("2028-02-29T08:30:00Z", "2028-03-01T00:00:00Z"),
            ("2027-06-30T23:59:59Z", "2027-07-01T00:00:00Z"),
            ("2027-01-31T00:00:00Z", "2027-02-01T00:00:00Z"),
            ("2027-04-01T00:00:00Z", "2027-05-01T00:00:00Z"),
        ])
    func nextMonth(from: String, to: String) {
        #expect(MonthBoundary.startOfNextMonth(after: date(from)) == date(to))
    }
}
