import Foundation
import GRDB
import PlunkdTestSupport
import Testing

@testable import PlunkdCore

#if canImport(Glibc)
    import Glibc
#endif

/// A reload is all or nothing across the lines: one that a line cannot take leaves every
/// line under the running configuration's keys, and the same reload taken later applies.
@Suite("Reload across lines", .serialized, .timeLimit(.minutes(2)), .watchdog)
struct ReloadAllOrNothingTests {
    @Test(
        "a SIGHUP whose new secret key the email line cannot store (its store locked) is refused whole: track keeps its key, the email line its auth hold; once the lock is gone the same reload applies to both"
    )
    func failedReloadPutsEveryKeyBack() async throws {
        let fake = try await FakePlunk { request in
            request.path.hasSuffix("/send") && request.headers["authorization"] == "Bearer sk_old_secret"
                ? FakePlunk.v2Error(401, "INVALID_API_KEY", "Invalid API key") : FakePlunk.v2Success()
        }
        let directory = try DaemonProcess.makeScratchDirectory()
        let (trackKey, secretKey) = ("\(directory)/api-key", "\(directory)/secret-key")
        try "pk_old_public\n".write(toFile: trackKey, atomically: true, encoding: .utf8)
        try "sk_old_secret\n".write(toFile: secretKey, atomically: true, encoding: .utf8)
        let daemon = try DaemonProcess(
            directory: directory,
            environment: [
                "PLUNK_BASE_URL": fake.baseURL.absoluteString, "PLUNK_API_KEY_FILE": trackKey, "PLUNK_SECRET_KEY_FILE": secretKey,
                "PLUNKD_RETRY_INITIAL_BACKOFF": "0.05",
            ])
        defer { daemon.cleanUp() }
        try daemon.waitUntilServing()
        let socket = ["--socket", daemon.socketPath]
        let emailStore = "\(directory)/outbox-email.sqlite"
        func status() throws -> String { try DaemonProcess.command(["status", "--json"] + socket).stdout }

        // The secret key is refused: the email line holds, its email parked.
        let sent = try DaemonProcess.command(["email", "--to", "ann@example.com", "--subject", "Receipt", "--body", "x"] + socket)
        #expect(sent.status == 0, "\(sent.stderr)")
        #expect(await Poll.until(timeout: 30) { (try? status().contains("\"auth_held\"")) == true })

        // New keys for both lines, while another connection holds the email store's write lock.
        let lock = try DatabaseQueue(path: emailStore)
        let (locked, release) = (DispatchSemaphore(value: 0), DispatchSemaphore(value: 0))
        DispatchQueue.global().async {
            try? lock.inDatabase { db in
                try db.execute(sql: "BEGIN IMMEDIATE")
                locked.signal()
                _ = release.wait(timeout: .now() + 60)
                try db.execute(sql: "ROLLBACK")
            }
        }
        #expect(locked.wait(timeout: .now() + 30) == .success)
        try "pk_new_public\n".write(toFile: trackKey, atomically: true, encoding: .utf8)
        try "sk_new_secret\n".write(toFile: secretKey, atomically: true, encoding: .utf8)
        daemon.signal(SIGHUP)
        #expect(daemon.waitForLog(containing: "configuration reload could not be applied", timeout: 60), "\(daemon.log)")
        #expect(try status().contains("\"auth_held\""), "the email line's hold stands: its lift was not stored")
        release.signal()

        // Track still sends with the running configuration's key.
        let client = try BlockingUnixSocket(path: daemon.socketPath)
        try client.write("{\"event\":\"after-refused-reload\",\"email\":\"p@example.com\"}\n")
        _ = try client.readLine()
        #expect(await fake.waitFor { $0.contains { String(decoding: $0.body, as: UTF8.self).contains("after-refused-reload") } })
        let tracked = try #require(fake.requests.last { String(decoding: $0.body, as: UTF8.self).contains("after-refused-reload") })
        #expect(tracked.headers["authorization"] == "Bearer pk_old_public", "track runs under the key the reload was refused with")

        // So does the email line: resumed by hand, it tries the refused key again and holds.
        func sends(_ requests: [FakePlunk.Request]) -> [FakePlunk.Request] { requests.filter { $0.path.hasSuffix("/send") } }
        let sendsBefore = sends(fake.requests).count
        #expect(try DaemonProcess.command(["resume"] + socket).status == 0)
        #expect(await fake.waitFor { sends($0).count > sendsBefore })
        #expect(sends(fake.requests).last?.headers["authorization"] == "Bearer sk_old_secret", "the email line runs under its old key")
        #expect(await Poll.until(timeout: 30) { (try? status().contains("\"auth_held\"")) == true })

        // The same reload, now storable, applies to both lines: the email goes out under the new key.
        daemon.signal(SIGHUP)
        #expect(await fake.waitFor { $0.contains { $0.path.hasSuffix("/send") && $0.headers["authorization"] == "Bearer sk_new_secret" } })
        #expect(await Poll.until(timeout: 30) { (try? status().contains("\"auth_held\"")) == false })
        try client.write("{\"event\":\"after-reload\",\"email\":\"p@example.com\"}\n")
        _ = try client.readLine()
        #expect(await fake.waitFor { $0.contains { String(decoding: $0.body, as: UTF8.self).contains("after-reload\"") } })
        let retracked = try #require(fake.requests.last { String(decoding: $0.body, as: UTF8.self).contains("after-reload\"") })
        #expect(retracked.headers["authorization"] == "Bearer pk_new_public")
        let keys = ["pk_old_public", "pk_new_public", "sk_old_secret", "sk_new_secret"]
        #expect(keys.allSatisfy { !daemon.log.contains($0) }, "no key in the log")
        await fake.stop()
    }
}
