import Foundation
import GRDB
import NIOConcurrencyHelpers
import PlunkdTestSupport
import Testing

@testable import PlunkdCore

/// `plunkd email`, and the email line's own proofs through the binary: its store survives
/// `kill -9`, and a refused secret key holds emails only.
@Suite("plunkd email and the email line's store", .timeLimit(.minutes(3)), .watchdog)
struct EmailCommandTests {
    static func emailStore(_ daemon: DaemonProcess) -> String { "\(daemon.directory)/outbox-email.sqlite" }

    @Test(
        "plunkd email: 0 with the id once stored in the email store, sent to /v1/send with the app's key; 1 refused naming the field; a repeat key prints the first id; --json sends a body as given; 75 unreachable"
    )
    func emailCommand() async throws {
        // 503 until the store has been read: a delivered email leaves the store.
        let fake = try await FakePlunk { _ in FakePlunk.legacyError(503, "Service Unavailable") }
        let daemon = try DaemonProcess(environment: TLSDeliveryTests.environment(fake, ["PLUNK_SECRET_KEY": "sk_cli_test_secret"]))
        defer { daemon.cleanUp() }
        try daemon.waitUntilServing()
        let socket = ["--socket", daemon.socketPath]
        let scratch = try DaemonProcess.makeScratchDirectory()
        defer { try? FileManager.default.removeItem(atPath: scratch) }
        try "<p>Your receipt</p>\n".write(toFile: "\(scratch)/body.html", atomically: true, encoding: .utf8)

        let before = Date()
        let sent = try DaemonProcess.command(
            [
                "email", "--to", "ann@example.com", "--subject", "Receipt", "--body-file", "\(scratch)/body.html", "--from", "shop@example.com",
                "--data", "order=1001", "--max-age", "15m", "--idempotency-key", "receipt-1001",
            ] + socket)
        #expect(sent.status == 0, "\(sent.stderr)")
        let id = sent.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        #expect(UUID(uuidString: id) != nil, "\(sent.stdout)")
        let store = try DatabaseQueue(path: Self.emailStore(daemon))
        let deadline = try await store.read { try Double.fetchOne($0, sql: "SELECT deadline FROM event WHERE id = ?", arguments: [id]) }
        let ageAllowed = try #require(deadline) - before.timeIntervalSince1970
        #expect(ageAllowed > 890 && ageAllowed < 960, "--max-age 15m sets the deadline: \(ageAllowed)")
        #expect(try await store.read { try Int.fetchOne($0, sql: "SELECT count(*) FROM event") } == 1)
        #expect(try await DatabaseQueue(path: daemon.storagePath).read { try Int.fetchOne($0, sql: "SELECT count(*) FROM event") } == 0)

        fake.respond(with: { _ in FakePlunk.legacySuccess() })
        #expect(await Poll.until(timeout: 30) { (try? await store.read { try Int.fetchOne($0, sql: "SELECT count(*) FROM event") }) == 0 })
        let delivered = try #require(fake.requests.last { $0.path.hasSuffix("/send") })
        #expect(delivered.path == "/v1/send")
        #expect(delivered.headers["authorization"] == "Bearer sk_cli_test_secret")
        #expect(delivered.idempotencyKey == "receipt-1001")
        let object = try #require(try JSONSerialization.jsonObject(with: delivered.body) as? [String: Any])
        #expect(object["to"] as? String == "ann@example.com")
        #expect(object["subject"] as? String == "Receipt")
        #expect(object["body"] as? String == "<p>Your receipt</p>\n")
        #expect(object["from"] as? String == "shop@example.com")
        #expect((object["data"] as? [String: String]) == ["order": "1001"])

        let repeated = try DaemonProcess.command(
            ["email", "--to", "ann@example.com", "--subject", "Receipt", "--body", "x", "--idempotency-key", "receipt-1001"] + socket)
        #expect(repeated.status == 0)
        #expect(repeated.stdout.trimmingCharacters(in: .whitespacesAndNewlines) == id)
        #expect(repeated.stderr.contains("already stored"))

        let refused = try DaemonProcess.command(["email", "--to", "ann@example.com", "--body", "no subject"] + socket)
        #expect(refused.status == 1)
        #expect(refused.stderr.contains("refused:") && refused.stderr.contains("subject"), "\(refused.stderr)")
        let badAge = try DaemonProcess.command(["email", "--to", "a@example.com", "--subject", "s", "--body", "b", "--max-age", "9d"] + socket)
        #expect(badAge.status == 1 && badAge.stderr.contains("Plunkd-Max-Age"), "\(badAge.stderr)")

        let whole = #"{"to":[{"name":"Bo","email":"bo@example.com"}],"template":"welcome-v2","custom":[1, 2]}"#
        try whole.write(toFile: "\(scratch)/message.json", atomically: true, encoding: .utf8)
        let fromFile = try DaemonProcess.command(["email", "--json", "\(scratch)/message.json"] + socket)
        #expect(fromFile.status == 0, "\(fromFile.stderr)")
        #expect(
            await fake.waitFor { $0.contains { $0.path.hasSuffix("/send") && String(decoding: $0.body, as: UTF8.self) == whole } },
            "stored and sent byte for byte")
        let mixed = try DaemonProcess.command(["email", "--json", "\(scratch)/message.json", "--to", "x@example.com"] + socket)
        #expect(mixed.status == 1 && mixed.stderr.contains("drop --to"), "\(mixed.stderr)")

        let unreachable = try DaemonProcess.command(
            ["email", "--to", "a@example.com", "--subject", "s", "--body", "b", "--socket", "\(daemon.directory)/nobody.sock"])
        #expect(unreachable.status == 75)
        #expect(unreachable.stderr.contains("cannot reach plunkd"))
        #expect(!daemon.log.contains("sk_cli_test_secret"))
        await fake.stop()
    }

    @Test("an email over send.max_bytes: plunkd email exits 1 with the limit, and the refusal is counted on the email line's metric")
    func tooLargeEmail() async throws {
        let daemon = try DaemonProcess(environment: ["PLUNKD_SEND_MAX_BYTES": "1k"])
        defer { daemon.cleanUp() }
        try daemon.waitUntilServing()
        let large = try DaemonProcess.command(
            ["email", "--to", "a@example.com", "--subject", "s", "--body", String(repeating: "x", count: 2000), "--socket", daemon.socketPath])
        #expect(large.status == 1)
        #expect(large.stderr.contains("larger than 1024 bytes"), "\(large.stderr)")
        let scrape = try BlockingUnixSocket(path: daemon.socketPath)
        try scrape.write("GET /metrics HTTP/1.1\r\nHost: plunkd\r\n\r\n")
        let metrics = try #require(try scrape.readHTTPResponse()).body
        #expect(metrics.contains(#"plunkd_email_events_refused_total{reason="too_large"} 1"#), "\(metrics)")
        #expect(!metrics.contains(#"plunkd_events_refused_total{reason="too_large"} 1"#))
    }

    @Test(
        "an email's 200 comes only once it is committed: read from the email store at the moment of each 200, and kill -9 in the middle of a burst loses none acknowledged"
    )
    func emailAcknowledgedOnlyWhenStored() async throws {
        // No secret key: emails are kept, none sent, so every acknowledged one must be there.
        let daemon = try DaemonProcess()
        defer { daemon.cleanUp() }
        try daemon.waitUntilServing()
        let reader = try DatabaseQueue(path: Self.emailStore(daemon))
        let burst = EmailBurst(socketPath: daemon.socketPath, store: reader)
        let finished = DispatchSemaphore(value: 0)
        Thread {
            burst.run(upTo: 5_000)
            finished.signal()
        }.start()
        #expect(await Poll.until(timeout: 60) { burst.acknowledged.count >= 100 }, "the burst did not get going")
        daemon.signal(SIGKILL)
        #expect(daemon.waitForExit(timeout: 10) != nil)
        try Deadline.wait(finished, for: "the burst's end after the kill", within: 60)
        #expect(burst.missingAtTheirAck.isEmpty, "answered 200 before the commit: \(burst.missingAtTheirAck.prefix(5))")
        let acknowledged = burst.acknowledged
        #expect(acknowledged.count < 5_000, "the kill fell after the burst, not in it")
        let stored = Set(try await reader.read { try String.fetchAll($0, sql: "SELECT id FROM event") })
        let lost = Set(acknowledged).subtracting(stored)
        #expect(lost.isEmpty, "\(lost.count) of \(acknowledged.count) acknowledged emails lost in kill -9")
    }

    @Test(
        "an email whose send failed part-way (409, original 500) is parked uncertain, never re-keyed by plunkd; status warns (exit 1), list shows it, and only retry --new-key sends it again, once, with --yes for more than one"
    )
    func uncertainEmailWaitsForTheOperator() async throws {
        // Plunk's send reached its recipients (stored), then failed: 500, key kept.
        let plunk = V2IdempotentPlunk { _ in .store(status: 500) }
        let fake = try await FakePlunk(responder: plunk.responder)
        let daemon = try DaemonProcess(environment: TLSDeliveryTests.environment(fake, ["PLUNK_SECRET_KEY": "sk_uncertain_test_secret"]))
        defer { daemon.cleanUp() }
        try daemon.waitUntilServing()
        let socket = ["--socket", daemon.socketPath]
        var ids: [String] = []
        for recipient in ["ann@example.com", "bo@example.com"] {
            let sent = try DaemonProcess.command(["email", "--to", recipient, "--subject", "Receipt", "--body", "b"] + socket)
            #expect(sent.status == 0, "\(sent.stderr)")
            ids.append(sent.stdout.trimmingCharacters(in: .whitespacesAndNewlines))
        }
        let store = try DatabaseQueue(path: Self.emailStore(daemon))
        func parkedUncertain() async throws -> [String] {
            try await store.read { try String.fetchAll($0, sql: "SELECT id FROM event WHERE state = 'parked' AND park_reason = 'uncertain' ORDER BY seq") }
        }
        #expect(await Poll.until(timeout: 30) { (try? await parkedUncertain()) == ids }, "\(daemon.log)")
        // Each under its own key only: the 500, then the 409 that parked it.
        #expect(fake.requests.map(\.idempotencyKey).allSatisfy { ids.contains($0 ?? "") }, "\(fake.requests.map(\.idempotencyKey))")
        #expect(fake.requests.count == 4)

        let status = try DaemonProcess.command(["status"] + socket)
        #expect(status.status == 1, "a warning: \(status.stdout)")
        #expect(status.stdout.contains("2 emails parked uncertain"), "\(status.stdout)")
        #expect(status.stdout.contains("plunkd parked retry --email --new-key ID"), "\(status.stdout)")
        let listed = try DaemonProcess.command(["parked", "list", "--email", "--reason", "uncertain", "--json"] + socket)
        #expect(ids.allSatisfy { listed.stdout.contains($0) }, "\(listed.stdout)")

        // A plain retry keeps the key: Plunk answers 409 again, and it is uncertain again.
        let plain = try DaemonProcess.command(["parked", "retry", "--email", ids[1]] + socket)
        #expect(plain.status == 0, "\(plain.stderr)")
        #expect(await Poll.until(timeout: 30) { (try? await parkedUncertain()) == ids })
        #expect(fake.requests.allSatisfy { ids.contains($0.idempotencyKey ?? "") })

        let unconfirmed = try DaemonProcess.command(["parked", "retry", "--email", "--new-key", "--reason", "uncertain"] + socket)
        #expect(unconfirmed.status != 0)
        #expect(unconfirmed.stderr.contains("confirm with --yes"), "\(unconfirmed.stderr)")
        #expect(try await parkedUncertain() == ids)

        plunk.handleNext { _ in .store(status: 200) }
        let resent = try DaemonProcess.command(["parked", "retry", "--email", "--new-key", ids[0]] + socket)
        #expect(resent.status == 0, "\(resent.stderr)")
        #expect(await Poll.until(timeout: 30) { (try? await parkedUncertain()) == [ids[1]] })
        #expect(await fake.waitFor { $0.contains { $0.idempotencyKey == "\(ids[0]).r1" } })
        #expect(fake.requests.filter { $0.idempotencyKey == "\(ids[0]).r1" }.count == 1)
        #expect(!fake.requests.contains { $0.idempotencyKey == "\(ids[1]).r1" }, "the email not named was sent again")
        await fake.stop()
    }

    @Test(
        "a three-recipient email whose send fails for the second recipient: one request per recipient, each with its own key; the others are delivered once, the failed one is parked on its own, and retry --new-key reaches it once; nobody gets two"
    )
    func oneRequestPerRecipient() async throws {
        let sentTo = NIOLockedValueBox<[String]>([])
        let recipients = ["ann@example.com", "bo@example.com", "cy@example.com"]
        func handling(failing: String?) -> @Sendable (FakePlunk.Request) -> V2IdempotentPlunk.Handling {
            { request in
                let body = String(decoding: request.body, as: UTF8.self)
                // Plunk's loop: recipients one at a time; this one fails before its send.
                if let failing, body.contains(failing) { return .fail(status: 500) }
                sentTo.withLockedValue { $0 += recipients.filter { body.contains($0) } }
                return .store(status: 200)
            }
        }
        let plunk = V2IdempotentPlunk(handle: handling(failing: "bo@example.com"))
        let fake = try await FakePlunk(responder: plunk.responder)
        let daemon = try DaemonProcess(environment: TLSDeliveryTests.environment(fake, ["PLUNK_SECRET_KEY": "sk_split_test_secret"]))
        defer { daemon.cleanUp() }
        try daemon.waitUntilServing()
        let client = try BlockingUnixSocket(path: daemon.socketPath)
        let body = #"{"to":["ann@example.com",{"name":"Bo","email":"bo@example.com"},"cy@example.com"],"subject":"Receipt","body":"b"}"#
        try client.write(
            "POST /v1/send HTTP/1.1\r\nHost: plunkd\r\nContent-Type: application/json\r\nIdempotency-Key: receipt-9\r\nContent-Length: \(body.utf8.count)\r\n\r\n\(body)"
        )
        let answer = try #require(try client.readHTTPResponse())
        let object = try #require(try JSONSerialization.jsonObject(with: Data(answer.body.utf8)) as? [String: Any])
        let ids = try #require(object["ids"] as? [String], "\(answer.body)")
        #expect(ids.count == 3 && object["id"] as? String == ids[0])
        let store = try DatabaseQueue(path: Self.emailStore(daemon))
        func parked() async throws -> [String] {
            try await store.read { try String.fetchAll($0, sql: "SELECT id FROM event WHERE state = 'parked' AND park_reason = 'uncertain'") }
        }
        #expect(await Poll.until(timeout: 30) { (try? await parked()) == [ids[1]] }, "\(daemon.log)")
        #expect(await Poll.until(timeout: 30) { sentTo.withLockedValue { $0 }.sorted() == ["ann@example.com", "cy@example.com"] })
        #expect(Set(fake.requests.compactMap(\.idempotencyKey)) == ["receipt-9.1", "receipt-9.2", "receipt-9.3"])
        let listed = try DaemonProcess.command(["parked", "list", "--email", "--reason", "uncertain", "--socket", daemon.socketPath])
        #expect(listed.stdout.contains(ids[1]) && !listed.stdout.contains(ids[0]) && !listed.stdout.contains(ids[2]), "\(listed.stdout)")

        plunk.handleNext(handling(failing: nil))
        let resent = try DaemonProcess.command(["parked", "retry", "--email", "--new-key", ids[1], "--socket", daemon.socketPath])
        #expect(resent.status == 0, "\(resent.stderr)")
        #expect(await Poll.until(timeout: 30) { (try? await parked()) == [] })
        #expect(await Poll.until(timeout: 30) { sentTo.withLockedValue { $0 }.count == 3 })
        #expect(sentTo.withLockedValue { $0 }.sorted() == recipients, "each recipient exactly once")
        #expect(fake.requests.last?.idempotencyKey == "receipt-9.2.r1")
        await fake.stop()
    }

    @Test("kill -9: every email acknowledged before the kill is in the email store after it, and sent once the line can send")
    func emailsSurviveKill() async throws {
        // No secret key at first: emails are kept, none sent, so all of them wait in the store.
        let first = try DaemonProcess(environment: ["PLUNKD_RETRY_INITIAL_BACKOFF": "0.05"])
        try first.waitUntilServing()
        var acknowledged: [String] = []
        for index in 0..<20 {
            let client = try BlockingUnixSocket(path: first.socketPath)
            let body = #"{"to":"r\#(index % 4)@example.com","subject":"n\#(index)","body":"b"}"#
            try client.write(
                "POST /v1/send HTTP/1.1\r\nHost: plunkd\r\nContent-Type: application/json\r\nContent-Length: \(body.utf8.count)\r\n\r\n\(body)")
            let response = try #require(try client.readHTTPResponse())
            let object = try JSONSerialization.jsonObject(with: Data(response.body.utf8)) as? [String: Any]
            acknowledged.append(try #require(object?["id"] as? String, "\(response.body)"))
        }
        first.signal(SIGKILL)
        #expect(first.waitForExit(timeout: 10) != nil)
        first.cleanUp(removeDirectory: false)
        let stored = try await DatabaseQueue(path: Self.emailStore(first)).read { try String.fetchAll($0, sql: "SELECT id FROM event") }
        #expect(Set(stored) == Set(acknowledged))
        // With the daemon down, status reads both stores.
        let down = try DaemonProcess.command(
            ["status", "--json", "--socket", first.socketPath], environment: ["PLUNKD_STORAGE_PATH": first.storagePath])
        let report = try JSONSerialization.jsonObject(with: Data(down.stdout.utf8)) as? [String: Any]
        #expect(report?["state"] as? String == "not_running", "\(down.stdout)")
        let line = report?["email"] as? [String: Any]
        #expect(line?["pending"] as? Int == 20, "\(down.stdout)")
        #expect(line?["database"].flatMap { ($0 as? [String: Any])?["path"] as? String } == Self.emailStore(first))

        let fake = try await FakePlunk()
        let second = try DaemonProcess(
            directory: first.directory, environment: TLSDeliveryTests.environment(fake, ["PLUNK_SECRET_KEY": "sk_kill_test_secret"]))
        defer { second.cleanUp() }
        try second.waitUntilServing()
        #expect(await fake.waitFor { $0.filter { $0.path.hasSuffix("/send") }.count >= 20 })
        let sends = fake.requests.filter { $0.path.hasSuffix("/send") }
        let subjects = sends.compactMap { (try? JSONSerialization.jsonObject(with: $0.body) as? [String: Any])?["subject"] as? String }
        #expect(Set(subjects) == Set((0..<20).map { "n\($0)" }))
        // Per recipient, in the order acknowledged.
        for recipient in 0..<4 {
            let mine = subjects.filter { Int($0.dropFirst())! % 4 == recipient }.map { Int($0.dropFirst())! }
            #expect(mine == mine.sorted(), "recipient \(recipient): \(mine)")
        }
        await fake.stop()
    }

    @Test("SIGTERM with a request hung on each line: both lines wait out one shutdown_grace together, not one after the other; both stay stored")
    func bothLinesShareTheGrace() async throws {
        let fake = try await FakePlunk { _ in .hang }
        let daemon = try DaemonProcess(
            environment: TLSDeliveryTests.environment(
                fake, ["PLUNK_SECRET_KEY": "sk_grace_test_secret", "PLUNKD_SHUTDOWN_GRACE": "8s", "PLUNK_REQUEST_TIMEOUT": "60s"]))
        defer { daemon.cleanUp() }
        try daemon.waitUntilServing()
        let socket = ["--socket", daemon.socketPath]
        #expect(try DaemonProcess.command(["track", "--event", "e", "--email", "bo@example.com"] + socket).status == 0)
        #expect(try DaemonProcess.command(["email", "--to", "ann@example.com", "--subject", "s", "--body", "b"] + socket).status == 0)
        #expect(await fake.waitFor { requests in requests.contains { $0.path.hasSuffix("/send") } && requests.contains { $0.path.hasSuffix("/track") } })
        let stopping = Date()
        daemon.signal(SIGTERM)
        #expect(daemon.waitForExit(timeout: 60) == 0)
        // One grace is 8 s; the two lines after each other took 16 s and more. Halfway
        // between leaves 4 s for a slow machine's start and stop.
        let took = Date().timeIntervalSince(stopping)
        #expect(took < 12, "stopping took \(took) s")
        let track = try await DatabaseQueue(path: daemon.storagePath).read { try Int.fetchOne($0, sql: "SELECT count(*) FROM event") }
        let email = try await DatabaseQueue(path: Self.emailStore(daemon)).read { try Int.fetchOne($0, sql: "SELECT count(*) FROM event") }
        #expect(track == 1 && email == 1, "sent again at the next start")
        await fake.stop()
    }

    @Test("a 401 on /v1/send holds the email line only: track events keep flowing, and status names the held line")
    func refusedSecretKeyHoldsEmailsOnly() async throws {
        let fake = try await FakePlunk { request in
            request.path.hasSuffix("/send")
                ? FakePlunk.v2Error(401, "UNAUTHORIZED", "Invalid secret key") : FakePlunk.legacySuccess()
        }
        let daemon = try DaemonProcess(environment: TLSDeliveryTests.environment(fake, ["PLUNK_SECRET_KEY": "sk_wrong_secret"]))
        defer { daemon.cleanUp() }
        try daemon.waitUntilServing()
        for index in 0..<2 {
            let sent = try DaemonProcess.command(
                ["email", "--to", "ann@example.com", "--subject", "s\(index)", "--body", "b", "--socket", daemon.socketPath])
            #expect(sent.status == 0, "\(sent.stderr)")
        }
        #expect(await fake.waitFor { $0.contains { $0.path.hasSuffix("/send") } })
        for index in 0..<3 {
            let tracked = try DaemonProcess.command(
                ["track", "--event", "e\(index)", "--email", "bo@example.com", "--socket", daemon.socketPath])
            #expect(tracked.status == 0)
        }
        #expect(await fake.waitFor { $0.filter { $0.path.hasSuffix("/track") }.count == 3 })
        var line: [String: Any] = [:]
        var json: [String: Any] = [:]
        _ = await Poll.until(timeout: 30) {
            json = (try? TLSDeliveryTests.statusJSON(daemon).json) ?? [:]
            line = json["email"] as? [String: Any] ?? [:]
            return line["state"] as? String == "auth_held"
        }
        #expect(line["state"] as? String == "auth_held", "\(json)")
        #expect(json["state"] as? String != "auth_held", "track is not held")
        #expect(json["delivered_total"] as? Int == 3)
        let sends = fake.requests.filter { $0.path.hasSuffix("/send") }
        #expect(sends.count == 1, "a held line sends nothing more until the key changes: \(sends.count)")
        #expect(!daemon.log.contains("sk_wrong_secret"))
        await fake.stop()
    }
}

/// Emails posted one after another on one connection, until the daemon goes away. Each
/// 200's id is looked up in the email store the moment the answer is read: the daemon
/// commits before it answers, so the row is there already.
final class EmailBurst: @unchecked Sendable {
    private let socketPath: String
    private let store: DatabaseQueue
    private let lock = NSLock()
    // Guarded by `lock`.
    private var ids: [String] = []
    private var notStored: [String] = []

    init(socketPath: String, store: DatabaseQueue) {
        self.socketPath = socketPath
        self.store = store
    }

    var acknowledged: [String] { lock.withLock { ids } }
    var missingAtTheirAck: [String] { lock.withLock { notStored } }

    func run(upTo count: Int) {
        guard let client = try? BlockingUnixSocket(path: socketPath, receiveTimeout: 10) else { return }
        for index in 0..<count {
            let body = #"{"to":"burst\#(index % 7)@example.com","subject":"n\#(index)","body":"b"}"#
            let request =
                "POST /v1/send HTTP/1.1\r\nHost: plunkd\r\nContent-Type: application/json\r\nContent-Length: \(body.utf8.count)\r\n\r\n\(body)"
            guard (try? client.write(request)) != nil, let answer = try? client.readHTTPResponse(), answer.status == 200,
                let object = try? JSONSerialization.jsonObject(with: Data(answer.body.utf8)) as? [String: Any],
                let id = object["id"] as? String
            else { return }
            let stored = (try? store.read { try Int.fetchOne($0, sql: "SELECT count(*) FROM event WHERE id = ?", arguments: [id]) }) ?? 0
            lock.withLock {
                ids.append(id)
                if stored != 1 { notStored.append(id) }
            }
        }
    }
}
