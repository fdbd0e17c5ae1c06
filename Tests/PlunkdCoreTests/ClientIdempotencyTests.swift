import Foundation
import GRDB
import PlunkdTestSupport
import Synchronization
import Testing

@testable import PlunkdCore

/// A client's own `Idempotency-Key`: read at the door, remembered for
/// `ingest.idempotency_window`, sent on to Plunk in place of the id.
@Suite("Client idempotency keys", .serialized, .timeLimit(.minutes(3)), .watchdog)
struct ClientIdempotencyTests {
    let validator = EventValidator(maxEventBytes: 64 * 1024)

    func fields(_ data: Data) throws -> NSDictionary {
        try #require(try JSONSerialization.jsonObject(with: data) as? NSDictionary)
    }

    @Test(
        "the body's idempotencyKey is cut out wherever it stands, every occurrence, the rest of the object as it was",
        arguments: [
            #"{"idempotencyKey":"k-1","event":"e","email":"a@example.com"}"#,
            #"{"event":"e", "idempotencyKey" : "k-1" ,"email":"a@example.com"}"#,
            #"{"event":"e","email":"a@example.com","idempotencyKey":"k-1"}"#,
            #"{"event":"e","email":"a@example.com" , "idempotencyKey":"k-1" }"#,
            "{\n  \"event\": \"e\",\n  \"email\": \"a@example.com\",\n  \"idempotencyKey\": \"k-1\"\n}",
            #"{"idempotencyKey":{"a":[1,{"b":2}]},"event":"e","idempotencyKey":[],"email":"a@example.com","idempotencyKey":"k-1"}"#,
            #"{"idempot\u0065ncyKey":"k-1","event":"e","email":"a@example.com"}"#,
        ])
    func cutOut(_ text: String) throws {
        let event = try validator.validate(Data(text.utf8))
        #expect(event.clientKey == "k-1")
        #expect(try fields(event.body) == ["event": "e", "email": "a@example.com"] as NSDictionary, "\(String(decoding: event.body, as: UTF8.self))")
        #expect(!String(decoding: event.body, as: UTF8.self).contains("k-1"))
    }

    @Test("a body without the member is stored byte for byte; the header's key is taken as it is")
    func untouched() throws {
        let text = #"{ "event":"e","email":"a@example.com","data":{"idempotencyKey":"nested, kept"} }"#
        let event = try validator.validate(Data(text.utf8), idempotencyKey: "order-42/receipt")
        #expect(event.body == Data(text.utf8))
        #expect(event.clientKey == "order-42/receipt")
        #expect(try validator.validate(Data(text.utf8)).clientKey == nil)
    }

    @Test("keys that cannot serve are refused at the door, saying why")
    func refusals() {
        let long = String(repeating: "k", count: EventValidator.maxClientKeyLength + 1)
        let cases: [(body: String, header: String?, message: String)] = [
            (#"{"event":"e","email":"a@example.com","idempotencyKey":7}"#, nil, #""idempotencyKey" must be a string of 1 to 240"#),
            (#"{"event":"e","email":"a@example.com","idempotencyKey":""}"#, nil, #""idempotencyKey" must be a string"#),
            (#"{"event":"e","email":"a@example.com","idempotencyKey":"caf\u00e9"}"#, nil, #""idempotencyKey" must be"#),
            (#"{"event":"e","email":"a@example.com","idempotencyKey":"a\tb"}"#, nil, #""idempotencyKey" must be"#),
            (#"{"event":"e","email":"a@example.com","idempotencyKey":"\#(long)"}"#, nil, #""idempotencyKey" must be"#),
            (#"{"event":"e","email":"a@example.com"}"#, long, "Idempotency-Key must be a string of 1 to 240"),
            (#"{"event":"e","email":"a@example.com","idempotencyKey":"one"}"#, "two", "the Idempotency-Key header and the body's"),
        ]
        for (body, header, message) in cases {
            #expect(throws: EventRejection.self) { try validator.validate(Data(body.utf8), idempotencyKey: header) }
            do {
                _ = try validator.validate(Data(body.utf8), idempotencyKey: header)
            } catch {
                #expect(error.message.hasPrefix(message), "\(body): \(error.message)")
            }
        }
        // The reference validator (Foundation's parser, for the fuzzer) agrees.
        let reference = ReferenceEventValidator(emailProblem: EmailShape.problem(with:))
        #expect(reference.verdict(Data(cases[0].body.utf8)) == .refused(#""idempotencyKey" must be a string of 1 to 240 printable ASCII characters"#))
        #expect(reference.verdict(Data(#"{"event":"e","email":"a@example.com","idempotencyKey":"k"}"#.utf8)) == .accepted(contact: "a@example.com"))
    }

    @Test("ingest.idempotency_window: a duration, 24 h by default; shorter than Plunk's 24 h is advised against")
    func window() async throws {
        func load(_ environment: [String: String]) async throws(ConfigurationError) -> DaemonConfiguration {
            try await ConfigLoader.load(file: nil, environment: environment, uid: 1000, defaultFile: nil).configuration
        }
        #expect(try await load([:]).idempotencyWindow == 86_400)
        #expect(!ConfigAdvice.warnings(for: try await load([:])).contains { $0.contains("idempotency_window") })
        let short = try await load(["PLUNKD_INGEST_IDEMPOTENCY_WINDOW": "1h"])
        #expect(short.idempotencyWindow == 3600)
        #expect(ConfigAdvice.warnings(for: short).contains { $0.contains("ingest.idempotency_window is shorter than Plunk's 24 h") })
        await #expect(throws: ConfigurationError.self) { try await load(["PLUNKD_INGEST_IDEMPOTENCY_WINDOW": "0"]) }
        await #expect(throws: ConfigurationError.self) { try await load(["PLUNKD_INGEST_IDEMPOTENCY_WINDOW": "31d"]) }
    }

    func keyed(_ key: String?, _ email: String = "a@example.com") -> AcceptedEvent {
        AcceptedEvent(contact: email, body: Data(#"{"event":"e","email":"\#(email)"}"#.utf8), clientKey: key)
    }

    func clientKeyRows(_ outbox: Outbox) throws -> Int {
        try outbox.pool.read { try Int.fetchOne($0, sql: "SELECT count(*) FROM client_key") ?? -1 }
    }

    @Test("the outbox stores a key's first event once: a repeat in the same commit or a later one gets the first id, until the window ends")
    func outboxRepeats() throws {
        let store = try ScratchStore()
        defer { store.remove() }
        let outbox = try Outbox(path: store.path, idempotencyWindow: 3600)
        let start = Date(timeIntervalSince1970: 1_800_000_000)
        let first = keyed("k1")
        let sameBatch = keyed("k1")
        let unkeyed = keyed(nil, "b@example.com")
        let receipt = try outbox.enqueue([first, sameBatch, unkeyed, keyed("k2", "c@example.com")], at: start)
        #expect(receipt.repeats == [sameBatch.id: first.id])
        #expect(outbox.storedCount == 3)
        let later = keyed("k1")
        #expect(try outbox.enqueue([later], at: start.addingTimeInterval(3599)).acknowledgedID(of: later) == first.id)
        #expect(outbox.storedCount == 3)
        // Past the window the key is free again: a new event, remembered anew.
        let afterWindow = keyed("k1")
        #expect(try outbox.enqueue([afterWindow], at: start.addingTimeInterval(3601)).repeats.isEmpty)
        #expect(outbox.storedCount == 4)
        let again = keyed("k1")
        #expect(try outbox.enqueue([again], at: start.addingTimeInterval(3602)).acknowledgedID(of: again) == afterWindow.id)
        // Claimed for delivery, an event carries its client's key as its Idempotency-Key.
        let claimed = try outbox.recordAndClaim(moves: [], counters: [:], claimLimit: 10, now: start.addingTimeInterval(4000)).claimed
        #expect(claimed.first { $0.key == first.id.lowercasedText }?.idempotencyKey == "k1")
        #expect(claimed.first { $0.key == unkeyed.id.lowercasedText }?.idempotencyKey == unkeyed.id.lowercasedText)
    }

    @Test("expired keys leave as keyed events arrive, through the index, at least 64 a commit: the table stays at one window's keys")
    func expiredKeysPruned() throws {
        let store = try ScratchStore()
        defer { store.remove() }
        let outbox = try Outbox(path: store.path, idempotencyWindow: 60)
        let start = Date(timeIntervalSince1970: 1_800_000_000)
        try outbox.enqueue((0..<200).map { keyed("old-\($0)") }, at: start)
        #expect(try clientKeyRows(outbox) == 200)
        // A commit without keys does no work on the table.
        try outbox.enqueue([keyed(nil)], at: start.addingTimeInterval(120))
        #expect(try clientKeyRows(outbox) == 200)
        for round in 0..<4 {
            try outbox.enqueue([keyed("new-\(round)")], at: start.addingTimeInterval(120 + Double(round)))
        }
        #expect(try clientKeyRows(outbox) == 4, "200 expired keys, 64 let go per keyed commit, and the 4 live ones kept")
    }

    @Test("plunkd track --idempotency-key run twice (a cron job retrying): one event stored, the same id printed, the repeat said")
    func trackCommand() throws {
        let daemon = try DaemonProcess()
        defer { daemon.cleanUp() }
        try daemon.waitUntilServing()
        let arguments = [
            "track", "--event", "nightly-report", "--email", "ops@example.com", "--idempotency-key", "report-2026-12-03",
            "--socket", daemon.socketPath,
        ]
        let first = try DaemonProcess.command(arguments)
        let second = try DaemonProcess.command(arguments)
        #expect(first.status == 0 && second.status == 0, "\(first.stderr) \(second.stderr)")
        #expect(first.stdout.count == 37 && second.stdout == first.stdout, "\(first.stdout) / \(second.stdout)")
        #expect(!first.stderr.contains("already stored") && second.stderr.contains("already stored"), "\(second.stderr)")
        #expect(try DaemonDeliveryTests().storedCount(daemon.storagePath) == 1)
        let body = try DatabaseQueue(path: daemon.storagePath).read { try String.fetchOne($0, sql: "SELECT CAST(body AS TEXT) FROM event") }
        #expect(body?.contains("report-2026-12-03") == false, "\(body ?? "none")")
        let refused = try DaemonProcess.command(arguments.map { $0 == "report-2026-12-03" ? "caf\u{e9}" : $0 })
        #expect(refused.status == 1 && refused.stderr.contains("idempotencyKey"), "\(refused.stderr)")
    }

    @Test(
        "through the binary: the header and the NDJSON member, a repeat across kill -9 and after delivery, Plunk getting the client's key and a body without it"
    )
    func endToEnd() async throws {
        let fake = try await FakePlunk()
        let directory = try DaemonProcess.makeScratchDirectory()
        // No key at first: events wait in the store, so the repeats meet them there.
        var daemon = try DaemonProcess(directory: directory)
        try daemon.waitUntilServing()
        let body = #"{"event":"paid","email":"ann@example.com"}"#
        func post(_ key: String) throws -> String {
            let client = try BlockingUnixSocket(path: daemon.socketPath)
            try client.write(
                "POST /v1/track HTTP/1.1\r\nHost: plunkd\r\nIdempotency-Key: \(key)\r\nContent-Type: application/json\r\nContent-Length: \(body.utf8.count)\r\n\r\n\(body)"
            )
            return try #require(try client.readHTTPResponse()).body
        }
        let firstAnswer = try post("order-1001")
        let id = try #require(firstAnswer.firstMatch(of: /"id":"([0-9a-f-]{36})"/)?.1).description
        #expect(!firstAnswer.contains("repeated"))
        #expect(try post("order-1001").contains(#""id":"\#(id)","repeated":true"#))
        let ndjson = try BlockingUnixSocket(path: daemon.socketPath)
        try ndjson.write(#"{"event":"shipped","email":"ann@example.com","idempotencyKey":"ship-1001"}"# + "\n")
        let shipped = try #require(try ndjson.readLine())
        let shippedID = try #require(shipped.firstMatch(of: /"id":"([0-9a-f-]{36})"/)?.1).description
        try ndjson.write(#"{"idempotencyKey":"ship-1001","event":"shipped","email":"ann@example.com"}"# + "\n")
        #expect(try ndjson.readLine() == #"{"ok":true,"id":"\#(shippedID)","repeated":true}"#)
        #expect(try DaemonDeliveryTests().storedCount(daemon.storagePath) == 2)

        daemon.signal(SIGKILL)
        _ = daemon.waitForExit()
        daemon.cleanUp(removeDirectory: false)
        daemon = try DaemonProcess(directory: directory, environment: TLSDeliveryTests.environment(fake))
        defer { daemon.cleanUp() }
        try daemon.waitUntilServing()
        #expect(try post("order-1001").contains(#""id":"\#(id)","repeated":true"#), "remembered across kill -9")
        #expect(await fake.waitFor(timeout: 30) { $0.count >= 2 }, "\(fake.requests.count) arrived")
        #expect(try await DaemonDeliveryTests().waitForStoredCount(daemon.storagePath, 0))
        #expect(try post("order-1001").contains(#""id":"\#(id)","repeated":true"#), "remembered after delivery")
        let requests = fake.requests
        #expect(requests.count == 2)
        #expect(Set(requests.compactMap(\.idempotencyKey)) == ["order-1001", "ship-1001"])
        for request in requests {
            #expect(try fields(request.body)["idempotencyKey"] == nil, "\(String(decoding: request.body, as: UTF8.self))")
        }
        let scrape = try BlockingUnixSocket(path: daemon.socketPath)
        try scrape.write("GET /metrics HTTP/1.1\r\nHost: plunkd\r\n\r\n")
        #expect(try #require(try scrape.readHTTPResponse()).body.contains("plunkd_events_repeated_total 2"))
        await fake.stop()
    }

    @Test("one key across lines: a key the track store holds is not taken by the email store, nor the other way round, until the window ends")
    func keysSpanLines() throws {
        let store = try ScratchStore()
        defer { store.remove() }
        let track = try Outbox(path: store.path, idempotencyWindow: 3600)
        let email = try Outbox(path: "\(store.directory)/outbox-email.sqlite", idempotencyWindow: 3600)
        let scope = ClientKeyScope()
        scope.register(line: .track, outbox: track)
        scope.register(line: .email, outbox: email)
        let start = Date(timeIntervalSince1970: 1_800_000_000)
        let first = keyed("receipt-7")
        #expect(try track.enqueue([first], at: start, scope: scope).claimedElsewhere.isEmpty)
        let second = keyed("receipt-7")
        let other = keyed("receipt-8")
        let receipt = try email.enqueue([second, other], at: start.addingTimeInterval(60), scope: scope)
        #expect(receipt.claimedElsewhere == [second.id: .init(line: .track, key: "receipt-7", firstID: first.id)])
        #expect(email.storedCount == 1)
        #expect(try clientKeyRows(email) == 1)
        // The email store's own key is the track store's no more.
        #expect(try track.enqueue([keyed("receipt-8")], at: start.addingTimeInterval(61), scope: scope).claimedElsewhere.count == 1)
        // Same line: still a repeat, as before.
        #expect(try track.enqueue([keyed("receipt-7")], at: start.addingTimeInterval(62), scope: scope).repeats.count == 1)
        // Past the window the key is free for the other line.
        #expect(try email.enqueue([keyed("receipt-7")], at: start.addingTimeInterval(3601), scope: scope).claimedElsewhere.isEmpty)
        #expect(email.storedCount == 2)
    }

    @Test("the same keys sent to both lines at once, from two threads: each key is stored in exactly one line, the other refused")
    func keysSpanLinesUnderRace() throws {
        let store = try ScratchStore()
        defer { store.remove() }
        let track = try Outbox(path: store.path)
        let email = try Outbox(path: "\(store.directory)/outbox-email.sqlite")
        let scope = ClientKeyScope()
        scope.register(line: .track, outbox: track)
        scope.register(line: .email, outbox: email)
        let keys = (0..<300).map { "race-\($0)" }
        let claimed = Mutex<[String: Int]>([:])
        DispatchQueue.concurrentPerform(iterations: 2) { side in
            let outbox = side == 0 ? track : email
            for key in keys {
                let event = keyed(key)
                guard let receipt = try? outbox.enqueue([event], scope: scope) else { continue }
                if receipt.claimedElsewhere.isEmpty { claimed.withLock { $0[key, default: 0] += 1 } }
            }
        }
        #expect(claimed.withLock { $0 }.filter { $0.value != 1 }.isEmpty, "keys taken by both lines or by none")
        #expect(track.storedCount + email.storedCount == keys.count)
    }

    @Test("through the binary: a key used on /v1/track and then on /v1/send is refused there with 409 in plain words, and nothing is stored for it")
    func keysSpanLinesEndToEnd() throws {
        let daemon = try DaemonProcess()
        defer { daemon.cleanUp() }
        try daemon.waitUntilServing()
        func post(_ path: String, key: String, body: String) throws -> (status: Int, headers: [String: String], body: String) {
            let client = try BlockingUnixSocket(path: daemon.socketPath)
            try client.write(
                "POST \(path) HTTP/1.1\r\nHost: plunkd\r\nIdempotency-Key: \(key)\r\nContent-Type: application/json\r\nContent-Length: \(body.utf8.count)\r\n\r\n\(body)"
            )
            return try #require(try client.readHTTPResponse())
        }
        let tracked = try post("/v1/track", key: "receipt-7", body: #"{"event":"paid","email":"ann@example.com"}"#)
        #expect(tracked.status == 200, "\(tracked.body)")
        let email = #"{"to":"ann@example.com","subject":"Your receipt","body":"<p>Thanks</p>"}"#
        let refused = try post("/v1/send", key: "receipt-7", body: email)
        #expect(refused.status == 409, "\(refused.body)")
        #expect(
            refused.body.contains("already used by an event sent to /v1/track") && refused.body.contains("per project across /v1/track and /v1/send"),
            "\(refused.body)")
        let sent = try post("/v1/send", key: "receipt-7-mail", body: email)
        #expect(sent.status == 200, "\(sent.body)")
        // The other way: NDJSON track with the email's key.
        let ndjson = try BlockingUnixSocket(path: daemon.socketPath)
        try ndjson.write(#"{"event":"mailed","email":"ann@example.com","idempotencyKey":"receipt-7-mail"}"# + "\n")
        let line = try #require(try ndjson.readLine())
        #expect(
            line.hasPrefix(#"{"ok":false,"error":"Idempotency-Key \"receipt-7-mail\" is already used by an email sent to /v1/send"#)
                && line.hasSuffix(#""retryable":false}"#), "\(line)")
        #expect(try DaemonDeliveryTests().storedCount(daemon.storagePath) == 1)
        let scrape = try BlockingUnixSocket(path: daemon.socketPath)
        try scrape.write("GET /metrics HTTP/1.1\r\nHost: plunkd\r\n\r\n")
        let metrics = try #require(try scrape.readHTTPResponse()).body
        #expect(metrics.contains(#"plunkd_email_events_refused_total{reason="key_used_elsewhere"} 1"#), "\(metrics)")
        #expect(metrics.contains(#"plunkd_events_refused_total{reason="key_used_elsewhere"} 1"#), "\(metrics)")
    }
}
