import Foundation
import PlunkdTestSupport
import Testing

@testable import PlunkdCore

/// Transactional email (`/v1/send`): checked at the door, time-bound, on a line of its own.
@Suite("the email line", .timeLimit(.minutes(3)), .watchdog)
struct EmailLineTests {
    static func validate(_ body: String, maxAge: String? = nil) throws(EventRejection) -> AcceptedEvent {
        try EmailValidator(maxBytes: 4096, maxAge: 3600).validate(Data(body.utf8), maxAgeHeader: maxAge)
    }

    static func refusal(_ body: String, maxAge: String? = nil) -> String? {
        do {
            _ = try validate(body, maxAge: maxAge)
            return nil
        } catch {
            return error.message
        }
    }

    /// What an answer means, by its label (`DeliveryOutcome.label`).
    static func outcome(_ answer: PlunkAnswer, now: Date, kind: EventKind) -> String {
        OutcomeClassifier.classify(answer, now: now, kind: kind).label
    }

    @Test("accepted: an address, {name,email}, a list, a template; the first recipient orders; unknown members kept byte for byte")
    func accepts() throws {
        let one = try Self.validate(#"{"to":"Ann@Example.com","subject":"Reset","body":"<p>hi</p>","custom":[1,2]}"#)
        #expect(one.contact == "ann@example.com")
        #expect(one.maxAge == 3600)
        #expect(String(decoding: one.body, as: UTF8.self) == #"{"to":"Ann@Example.com","subject":"Reset","body":"<p>hi</p>","custom":[1,2]}"#)
        let listed = try Self.validate(
            #"{"to":[{"name":"Bo","email":"bo@example.com"},"cy@example.com"],"template":"tpl-1","subscribed":false,"headers":{"X-A":"1"}}"#)
        #expect(listed.contact == "bo@example.com")
        let own = try Self.validate(#"{"to":"d@example.com","subject":"s","body":"b","idempotencyKey":"mail-7"}"#, maxAge: "10m")
        #expect(own.maxAge == 600)
        #expect(own.clientKey == "mail-7")
        #expect(String(decoding: own.body, as: UTF8.self) == #"{"to":"d@example.com","subject":"s","body":"b"}"#)
    }

    @Test(
        "refused with a message that names the field",
        arguments: [
            (#"{"subject":"s","body":"b"}"#, "\"to\" is required"),
            (#"{"to":[],"subject":"s","body":"b"}"#, "at least one recipient"),
            (#"{"to":"not-an-address","subject":"s","body":"b"}"#, "\"to\" is not a valid email address"),
            (#"{"to":["a@example.com",{"name":"x"}],"subject":"s","body":"b"}"#, "\"to\"[1] must have an \"email\""),
            (#"{"to":"a@example.com","body":"b"}"#, "\"subject\" is required"),
            (#"{"to":"a@example.com","subject":"s"}"#, "\"body\" is required"),
            (#"{"to":"a@example.com","template":""}"#, "\"template\" must not be empty"),
            (#"{"to":"a@example.com","subject":"s","body":"b","subscribed":1}"#, "\"subscribed\" must be true or false"),
            (#"{"to":"a@example.com","subject":"s","body":"b","headers":{"X":1}}"#, "\"headers\" must be an object of strings"),
            (#"{"to":"a@example.com","subject":"s","body":"b","from":"nobody"}"#, "\"from\" is not a valid email address"),
            (#"{"to":"a@example.com","subject":"s","body":"b""#, "not valid JSON"),
            (#"["a@example.com"]"#, "must be a JSON object"),
        ])
    func refuses(body: String, expected: String) {
        let message = Self.refusal(body)
        #expect(message?.contains(expected) == true, "\(message ?? "accepted")")
    }

    @Test("Plunkd-Max-Age: seconds or a unit, 1 s to 7 d; anything else refused")
    func maxAgeHeader() throws {
        #expect(try EmailValidator.maxAge("90") == 90)
        #expect(try EmailValidator.maxAge("2h") == 7200)
        #expect(try EmailValidator.maxAge("7d") == 7 * 86_400)
        for bad in ["0", "-5", "8d", "soon", ""] {
            #expect(Self.refusal(#"{"to":"a@example.com","subject":"s","body":"b"}"#, maxAge: bad)?.contains("Plunkd-Max-Age") == true, "\(bad)")
        }
        #expect(Self.refusal(String(repeating: " ", count: 5000) + "{}")?.contains("send.max_bytes") == true)
    }

    @Test("an email's monthly-limit 429 (no Retry-After) pauses like a 402; track's 429 and the send bucket's stay rate limits")
    func monthlyLimit() {
        let limit = Data(#"{"success":false,"error":{"code":"INTERNAL_SERVER_ERROR","message":"Monthly email limit reached for this month"}}"#.utf8)
        let bucket = Data(#"{"success":false,"error":{"code":"RATE_LIMIT_EXCEEDED","message":"Too many requests, limit reached"}}"#.utf8)
        let now = Date()
        #expect(
            Self.outcome(.response(status: 429, retryAfter: nil, body: limit), now: now, kind: .email) == "quota_exceeded",
            "the monthly limit on send must pause")
        #expect(Self.outcome(.response(status: 429, retryAfter: nil, body: limit), now: now, kind: .track) == "rate_limited", "track's 429 is a rate limit")
        #expect(
            Self.outcome(.response(status: 429, retryAfter: nil, body: bucket), now: now, kind: .email) == "rate_limited",
            "the send bucket's 429 is a rate limit")
        #expect(
            Self.outcome(.response(status: 429, retryAfter: "3", body: limit), now: now, kind: .email) == "rate_limited",
            "a 429 with Retry-After is a rate limit")
    }

    @Test("the legacy host's 401 for one email's from address parks that email; a 401 for the key still holds the line")
    func fromAddressRefusal() {
        let from = Data(#"{"code":401,"error":"Unauthorized","message":"Custom from address must be from a verified domain"}"#.utf8)
        let key = Data(#"{"code":401,"error":"Unauthorized","message":"Incorrect Bearer token specified"}"#.utf8)
        let now = Date()
        #expect(
            OutcomeClassifier.classify(.response(status: 401, retryAfter: nil, body: from), now: now, kind: .email)
                == .rejected(status: 401, detail: "401: Custom from address must be from a verified domain"))
        #expect(
            Self.outcome(.response(status: 401, retryAfter: nil, body: key), now: now, kind: .email) == "unauthorized", "a refused key holds the email line")
        #expect(Self.outcome(.response(status: 401, retryAfter: nil, body: from), now: now, kind: .track) == "unauthorized", "track's 401 is the key's")
    }

    @Test("an email claimed past its deadline is parked expired without being sent; one within it is sent; a failure past it expires")
    func deadline() {
        var drive = DeliveryMachineTests.Drive(concurrency: 4)
        let start = drive.now
        let late = ClaimedEvent(
            seq: 1, key: "late", contact: "a@example.com", body: Data("{}".utf8), attempts: 0, receivedAt: start.addingTimeInterval(-7200),
            deadline: start.addingTimeInterval(-3600))
        let fresh = ClaimedEvent(
            seq: 2, key: "fresh", contact: "b@example.com", body: Data("{}".utf8), attempts: 0, receivedAt: start,
            deadline: start.addingTimeInterval(60))
        var available = [late, fresh]
        drive.machine.requestTurn()
        drive.collect()
        drive.turn()
        drive.finishStore(available: &available)
        #expect(drive.sent.map(\.key) == ["fresh"])
        drive.now = start.addingTimeInterval(120)
        drive.answer(fresh, .transportFailure("connection refused"))
        let recorded = drive.machine.moves
        let parked = recorded.compactMap { move -> (Int64, ParkReason)? in
            if case .park(let seq, let reason, _, _) = move { return (seq, reason) }
            return nil
        }
        #expect(Set(parked.map(\.0)) == [1, 2], "\(recorded)")
        #expect(parked.allSatisfy { $0.1 == .expired })
    }
}

/// The email line through the binary, against the fake Plunk.
@Suite("the email line through the binary", .timeLimit(.minutes(3)), .watchdog)
struct EmailLineProcessTests {
    @Test(
        "/v1/send is stored before its 200, delivered to {base}/send with the secret key; its monthly limit pauses emails only, while track events keep flowing; status and metrics say so per line"
    )
    func separateLines() async throws {
        let monthlyLimit =
            #"{"success":false,"error":{"code":"INTERNAL_SERVER_ERROR","message":"Monthly email limit reached for this month","statusCode":429}}"#
        let fake = try await FakePlunk { request in
            request.path.hasSuffix("/send")
                ? .answer(status: 429, body: monthlyLimit) : FakePlunk.legacySuccess()
        }
        let daemon = try DaemonProcess(
            environment: TLSDeliveryTests.environment(fake, ["PLUNK_SECRET_KEY": "sk_email_test_secret"]))
        defer { daemon.cleanUp() }
        try daemon.waitUntilServing()
        func post(_ path: String, _ body: String, headers: String = "") throws -> (status: Int, body: String) {
            let client = try BlockingUnixSocket(path: daemon.socketPath)
            try client.write(
                "POST \(path) HTTP/1.1\r\nHost: plunkd\r\n\(headers)Content-Type: application/json\r\nContent-Length: \(body.utf8.count)\r\n\r\n\(body)")
            let response = try #require(try client.readHTTPResponse())
            return (response.status, response.body)
        }
        let bad = try post("/v1/send", #"{"to":"ann@example.com","body":"no subject"}"#)
        #expect(bad.status == 400 && bad.body.contains("\\\"subject\\\" is required"), "\(bad)")
        let email = try post("/v1/send", #"{"to":"ann@example.com","subject":"Reset","body":"link"}"#, headers: "Plunkd-Max-Age: 2h\r\n")
        #expect(email.status == 200 && email.body.contains(#""queued":true"#), "\(email)")
        #expect(await fake.waitFor(timeout: 30) { $0.contains { $0.path.hasSuffix("/send") } })
        // The email line is now paused; track goes on.
        for index in 0..<3 {
            #expect(try post("/v1/track", #"{"event":"e\#(index)","email":"bo@example.com"}"#).status == 200)
        }
        #expect(await fake.waitFor(timeout: 30) { $0.filter { $0.path.hasSuffix("/track") }.count == 3 })
        let requests = fake.requests
        let sends = requests.filter { $0.path.hasSuffix("/send") }
        #expect(sends.count == 1, "a paused line asks no more")
        #expect(sends.allSatisfy { $0.headers["authorization"] == "Bearer sk_email_test_secret" })
        #expect(requests.filter { $0.path.hasSuffix("/track") }.allSatisfy { $0.headers["authorization"] == "Bearer pk_tls_test_secret" })
        let (json, text) = try TLSDeliveryTests.statusJSON(daemon)
        let line = try #require(json["email"] as? [String: Any], "\(text)")
        #expect(line["state"] as? String == "quota_paused", "\(line)")
        #expect(line["pending"] as? Int == 1)
        #expect(json["state"] as? String != "quota_paused", "track is not paused")
        #expect(json["delivered_total"] as? Int == 3)
        let human = try DaemonProcess.command(["status", "--socket", daemon.socketPath])
        #expect(human.stdout.contains("Email:") && human.stdout.contains("monthly email limit"), "\(human.stdout)")
        let scrape = try BlockingUnixSocket(path: daemon.socketPath)
        try scrape.write("GET /metrics HTTP/1.1\r\nHost: plunkd\r\n\r\n")
        let metrics = try #require(try scrape.readHTTPResponse()).body
        #expect(metrics.contains("plunkd_email_pending_events 1"), "\(metrics.prefix(400))")
        #expect(metrics.contains("plunkd_email_delivery_state{state=\"quota_paused\"} 1"))
        #expect(metrics.contains("plunkd_delivered_total 3"))
        let log = daemon.log
        #expect(!log.contains("sk_email_test_secret") && !human.stdout.contains("sk_email_test_secret"), "the secret key never shows")
        await fake.stop()
    }
}
