import Foundation
import GRDB
import NIOConcurrencyHelpers
import PlunkdTestSupport
import Testing

@testable import PlunkdCore

#if canImport(Glibc)
    import Glibc
#endif

/// Delivery through the real `plunkd` binary: killed mid-request, stopped mid-request, resumed.
@Suite("Delivery by the plunkd process", .serialized, .timeLimit(.minutes(2)), .watchdog)
struct DaemonDeliveryTests {
    func environment(_ fake: FakePlunk, timeout: String = "30") -> [String: String] {
        [
            "PLUNK_BASE_URL": fake.baseURL.absoluteString, "PLUNK_API_KEY": "pk_process_test", "PLUNK_REQUEST_TIMEOUT": timeout,
            "PLUNKD_RETRY_INITIAL_BACKOFF": "0.05", "PLUNKD_RETRY_MAX_BACKOFF": "0.5",
        ]
    }

    func submit(_ socketPath: String, event: String = "e") throws -> String {
        let client = try BlockingUnixSocket(path: socketPath)
        try client.write("{\"event\":\"\(event)\",\"email\":\"p@example.com\"}\n")
        return try #require(DaemonProcessTests.ackedID(try client.readLine()))
    }

    func storedCount(_ path: String) throws -> Int {
        try DatabaseQueue(path: path).read { try Int.fetchOne($0, sql: "SELECT count(*) FROM event") ?? -1 }
    }

    func counterValue(_ path: String, _ name: String) throws -> Int? {
        try DatabaseQueue(path: path).read { try Int.fetchOne($0, sql: "SELECT value FROM counter WHERE name = ?", arguments: [name]) }
    }

    func waitForStoredCount(_ path: String, _ expected: Int, timeout: Double = 30) async throws -> Bool {
        try await Poll.until(timeout: timeout, every: .milliseconds(20)) { try storedCount(path) == expected }
    }

    @Test("kill -9 with a request in flight: after restart the event is sent again with the same Idempotency-Key")
    func crashInFlight() async throws {
        let fake = try await FakePlunk { request in request.index == 0 ? .hang : FakePlunk.legacySuccess() }
        let daemon = try DaemonProcess(environment: environment(fake))
        defer { daemon.cleanUp() }
        try daemon.waitUntilServing()
        let id = try submit(daemon.socketPath)
        #expect(await fake.waitFor { $0.count == 1 })
        daemon.signal(SIGKILL)
        #expect(daemon.waitForExit(timeout: 20) != nil)

        let restarted = try DaemonProcess(directory: daemon.directory, environment: environment(fake))
        defer { restarted.cleanUp(removeDirectory: false) }
        try restarted.waitUntilServing()
        #expect(await fake.waitFor { $0.count >= 2 })
        #expect(fake.requests.map(\.idempotencyKey) == [id, id])
        #expect(try await waitForStoredCount(daemon.storagePath, 0))
        await fake.stop()
    }

    @Test(
        "Plunk stores the event and answers 500, kill -9 before the 409 comes: after the restart the 409 says 500, the event counts as delivered (accepted_recovering), and Plunk holds it once, under its own key"
    )
    func storedThen500ThenKill() async throws {
        let plunk = V2IdempotentPlunk { _ in .store(status: 500) }
        let killed = NIOLockedValueBox(false)
        // The retry after the 500 hangs until the kill: the 409 never reaches that daemon.
        let fake = try await FakePlunk { request in
            request.index == 0 || killed.withLockedValue({ $0 }) ? plunk.responder(request) : .hang
        }
        let daemon = try DaemonProcess(environment: environment(fake))
        defer { daemon.cleanUp() }
        try daemon.waitUntilServing()
        let id = try submit(daemon.socketPath)
        #expect(await fake.waitFor { $0.count >= 2 })
        daemon.signal(SIGKILL)
        #expect(daemon.waitForExit(timeout: 20) != nil)
        killed.withLockedValue { $0 = true }

        let restarted = try DaemonProcess(directory: daemon.directory, environment: environment(fake))
        defer { restarted.cleanUp(removeDirectory: false) }
        try restarted.waitUntilServing()
        #expect(try await waitForStoredCount(daemon.storagePath, 0))
        #expect(fake.requests.allSatisfy { $0.idempotencyKey == id }, "\(fake.requests.map(\.idempotencyKey))")
        #expect(plunk.stored == ["e"])
        #expect(plunk.conflicts.map(\.original).last == 500)
        #expect(try counterValue(daemon.storagePath, "attempts_accepted_recovering_total") == 1)
        #expect(try counterValue(daemon.storagePath, "delivered_total") == 1)
        #expect(restarted.waitForLog(containing: "not sent again under a new key"), "\(restarted.log)")
        await fake.stop()
    }

    @Test(
        "plunk.rekey_burned_track_keys against the first-seen-contact race (500 without storing, key kept), kill -9 after the 409: after restart the event goes under the same derived key, stored once"
    )
    func crashAfterRekey() async throws {
        let before = V2IdempotentPlunk { request in
            request.idempotencyKey?.contains(".r") == true ? .hang : .fail(status: 500)
        }
        let fake = try await FakePlunk(responder: before.responder)
        let daemon = try DaemonProcess(environment: environment(fake).merging(["PLUNK_REKEY_BURNED_TRACK_KEYS": "true"]) { $1 })
        defer { daemon.cleanUp() }
        try daemon.waitUntilServing()
        let id = try submit(daemon.socketPath)
        #expect(await fake.waitFor { $0.contains { $0.idempotencyKey == "\(id).r1" } })
        daemon.signal(SIGKILL)
        #expect(daemon.waitForExit(timeout: 20) != nil)

        let after = V2IdempotentPlunk { _ in .store(status: 200) }
        fake.respond(with: after.responder)
        let restarted = try DaemonProcess(
            directory: daemon.directory, environment: environment(fake).merging(["PLUNK_REKEY_BURNED_TRACK_KEYS": "true"]) { $1 })
        defer { restarted.cleanUp(removeDirectory: false) }
        try restarted.waitUntilServing()
        #expect(try await waitForStoredCount(daemon.storagePath, 0))
        #expect(fake.requests.map(\.idempotencyKey) == [id, id, "\(id).r1", "\(id).r1"])
        #expect(before.stored.isEmpty)
        #expect(after.stored == ["e"])
        #expect(try counterValue(daemon.storagePath, "rekeyed_total") == 1)
        await fake.stop()
    }

    @Test("SIGTERM with a request in flight waits for its answer, records it, and exits 0")
    func gracefulShutdown() async throws {
        let fake = try await FakePlunk { _ in .answer(status: 200, body: "{}", delay: .milliseconds(800)) }
        let daemon = try DaemonProcess(environment: environment(fake))
        defer { daemon.cleanUp() }
        try daemon.waitUntilServing()
        _ = try submit(daemon.socketPath)
        #expect(await fake.waitFor { $0.count == 1 })
        daemon.signal(SIGTERM)
        #expect(daemon.waitForExit(timeout: 30) == 0)
        #expect(try storedCount(daemon.storagePath) == 0)
        #expect(try counterValue(daemon.storagePath, "delivered_total") == 1)
        await fake.stop()
    }

    @Test("after a 402, plunkd resume lifts the pause and delivery goes on")
    func resumeAfterQuota() async throws {
        let fake = try await FakePlunk { request in
            request.index == 0 ? FakePlunk.legacyError(402, "You have hit your plan's monthly limit") : FakePlunk.legacySuccess()
        }
        let daemon = try DaemonProcess(environment: environment(fake))
        defer { daemon.cleanUp() }
        try daemon.waitUntilServing()
        _ = try submit(daemon.socketPath)
        #expect(await fake.waitFor { $0.count == 1 })
        let paused = await SenderTests.eventually {
            ((try? DatabaseQueue(path: daemon.storagePath).read {
                try Double.fetchOne($0, sql: "SELECT value FROM delivery_hold WHERE name = 'paused_until'")
            }) ?? nil) != nil
        }
        #expect(paused)
        let resume = try DaemonProcessTests().run(["resume", "--socket", daemon.socketPath])
        #expect(resume.status == 0)
        #expect(resume.stdout.contains("quota pause"))
        #expect(try await waitForStoredCount(daemon.storagePath, 0))
        #expect(fake.requests.count == 2)
        await fake.stop()
    }
}

extension DaemonDeliveryTests {
    @Test("after a 401, status says auth_held; plunkd resume lifts the hold with the same key and the parked event is delivered")
    func resumeAfterAuthHold() async throws {
        let fake = try await FakePlunk { request in
            request.index == 0 ? FakePlunk.v2Error(401, "INVALID_API_KEY", "Invalid API key") : FakePlunk.v2Success()
        }
        let daemon = try DaemonProcess(environment: environment(fake))
        defer { daemon.cleanUp() }
        try daemon.waitUntilServing()
        _ = try submit(daemon.socketPath)
        #expect(await fake.waitFor { $0.count == 1 })
        let held = await SenderTests.eventually {
            ((try? DatabaseQueue(path: daemon.storagePath).read {
                try String.fetchOne($0, sql: "SELECT value FROM delivery_hold WHERE name = 'refused_key'")
            }) ?? nil) != nil
        }
        #expect(held)
        let status = try DaemonProcess.command(["status", "--json", "--socket", daemon.socketPath])
        #expect(status.status == 2)
        #expect(status.stdout.contains("\"state\" : \"auth_held\""), "\(status.stdout)")
        let resume = try DaemonProcessTests().run(["resume", "--socket", daemon.socketPath])
        #expect(resume.status == 0, "\(resume.stderr)")
        #expect(resume.stdout.contains("auth hold"), "\(resume.stdout)")
        #expect(try await waitForStoredCount(daemon.storagePath, 0))
        #expect(fake.requests.count == 2)
        #expect(try counterValue(daemon.storagePath, "delivered_total") == 1)
        await fake.stop()
    }

    @Test("SIGHUP with a new key in the key file ends the auth hold and the parked events are delivered")
    func hangupWithNewKey() async throws {
        let fake = try await FakePlunk { request in
            request.headers["authorization"] == "Bearer pk_new_key"
                ? FakePlunk.v2Success()
                : FakePlunk.v2Error(401, "INVALID_API_KEY", "Invalid API key")
        }
        let directory = try DaemonProcess.makeScratchDirectory()
        let keyFile = "\(directory)/api-key"
        try "pk_old_key\n".write(toFile: keyFile, atomically: true, encoding: .utf8)
        var env = environment(fake)
        env["PLUNK_API_KEY"] = nil
        env["PLUNK_API_KEY_FILE"] = keyFile
        let daemon = try DaemonProcess(directory: directory, environment: env)
        defer { daemon.cleanUp() }
        try daemon.waitUntilServing()
        let id = try submit(daemon.socketPath)
        let parked = await SenderTests.eventually {
            ((try? DatabaseQueue(path: daemon.storagePath).read {
                try String.fetchOne($0, sql: "SELECT park_reason FROM event")
            }) ?? nil) == "unauthorized"
        }
        #expect(parked)
        try "pk_new_key\n".write(toFile: keyFile, atomically: true, encoding: .utf8)
        daemon.signal(SIGHUP)
        #expect(try await waitForStoredCount(daemon.storagePath, 0))
        #expect(fake.requests.last?.idempotencyKey == id)
        #expect(fake.requests.last?.headers["authorization"] == "Bearer pk_new_key")
        #expect(!daemon.log.contains("pk_new_key") && !daemon.log.contains("pk_old_key"))
        await fake.stop()
    }
}
