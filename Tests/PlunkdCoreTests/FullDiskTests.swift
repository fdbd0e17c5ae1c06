import Foundation
import PlunkdTestSupport
import Testing

@testable import PlunkdCore

#if canImport(Glibc)
    import Glibc
#endif

/// A real full filesystem under the binary: a small tmpfs holds the store, and the kernel's
/// ENOSPC (not `storage.max_bytes`) is what fills it. Mounting needs root; CI runs as root.
@Suite(
    "A real full disk", .serialized, .timeLimit(.minutes(2)), .watchdog,
    .enabled(if: getuid() == 0, "mounting a tmpfs needs root (CI runs as root)"))
struct FullDiskTests {
    /// A tmpfs of `size` at `directory/disk`, unmounted by `unmount()`.
    struct SmallDisk {
        let path: String

        init(in directory: String, size: String) throws {
            path = directory + "/disk"
            try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
            let run = try SpawnedCommand.run(
                "/bin/mount", ["-t", "tmpfs", "-o", "size=\(size),mode=0700", "plunkd-full-disk", path], environment: ["PATH": "/usr/bin:/bin"])
            guard run.status == 0 else { throw DaemonProcess.Failure(description: "mount tmpfs: \(run.stderr)") }
        }

        /// The store's files and the filesystem's use, for a failure's message.
        func listing() -> String {
            (try? SpawnedCommand.run("/bin/sh", ["-c", "ls -l \(path); df \(path)"], environment: ["PATH": "/usr/bin:/bin"]).stdout) ?? ""
        }

        func unmount() {
            _ = try? SpawnedCommand.run("/bin/umount", ["-l", path], environment: ["PATH": "/usr/bin:/bin"])
        }
    }

    /// Writes padded events on one connection until the daemon refuses one; returns the
    /// acknowledged ids and the refusal.
    func fill(_ client: BlockingUnixSocket, prefix: String, limit: Int = 30000) throws -> (acked: [String], refusal: String?) {
        let padding = String(repeating: "p", count: 900)
        var acked: [String] = []
        for n in 0..<limit {
            try client.write("{\"event\":\"\(prefix)\(n)\",\"email\":\"\(prefix)\(n % 5)@example.com\",\"data\":{\"p\":\"\(padding)\"}}\n")
            let line = try #require(try client.readLine())
            guard let id = DaemonProcessTests.ackedID(line) else { return (acked, line) }
            acked.append(id)
        }
        return (acked, nil)
    }

    @Test(
        "the disk fills: events are refused retryably, saying so; the daemon and other clients carry on; room made by the operator or by delivery lets ingest resume by itself; everything acknowledged is delivered"
    )
    func tmpfsFills() async throws {
        try await fillAndRecover(reserve: "4m")
    }

    func fillAndRecover(reserve: String) async throws {
        let directory = try DaemonProcess.makeScratchDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let disk = try SmallDisk(in: directory, size: "16m")
        defer { disk.unmount() }
        // What an operator frees first: another file on the same filesystem.
        let ballast = disk.path + "/ballast"
        try Data(count: 1024 * 1024).write(to: URL(fileURLWithPath: ballast))

        let fake = try await FakePlunk { _ in FakePlunk.htmlPage(503) }
        var environment = DaemonDeliveryTests().environment(fake)
        environment["PLUNKD_STORAGE_PATH"] = disk.path + "/outbox.sqlite"
        environment["PLUNKD_STORAGE_RESERVE_BYTES"] = reserve
        let daemon = try DaemonProcess(directory: directory, environment: environment)
        defer { daemon.cleanUp(removeDirectory: false) }
        try daemon.waitUntilServing()
        let client = try BlockingUnixSocket(path: daemon.socketPath)

        let first = try fill(client, prefix: "a")
        let refusal = try #require(first.refusal, "30,000 events of 1 KB fitted on a 16 MB disk")
        #expect(refusal.contains("storage full"), "\(refusal)")
        #expect(refusal.contains("\"retryable\":true"), "\(refusal)")
        #expect(first.acked.count > 200, "the disk filled before it held anything: \(first.acked.count)")

        // Another client, over HTTP, is told the same (the room it finds may first take a
        // few more: the log's space given back) and the daemon is still there.
        let other = try BlockingUnixSocket(path: daemon.socketPath)
        let padded = "{\"event\":\"http\",\"email\":\"h@example.com\",\"data\":{\"p\":\"\(String(repeating: "p", count: 900))\"}}"
        var httpAcked: [String] = []
        var httpRefusal: (status: Int, body: String)?
        for _ in 0..<3000 where httpRefusal == nil {
            try other.write(
                "POST /v1/track HTTP/1.1\r\nHost: plunkd\r\nContent-Type: application/json\r\nContent-Length: \(padded.utf8.count)\r\n\r\n\(padded)")
            let answer = try #require(try other.readHTTPResponse())
            if answer.status == 200, let id = (try? JSONSerialization.jsonObject(with: Data(answer.body.utf8)) as? [String: Any])?["id"] as? String {
                httpAcked.append(id)
            } else {
                httpRefusal = (answer.status, answer.body)
            }
        }
        let httpAnswer = try #require(httpRefusal, "the disk never filled for the HTTP client")
        #expect(httpAnswer.status == 503 || httpAnswer.status == 507, "\(httpAnswer.status) \(httpAnswer.body)")
        #expect(httpAnswer.body.contains("storage full"), "\(httpAnswer.body)")
        let status = try TLSDeliveryTests.statusJSON(daemon)
        // `pending` leaves out what is in flight; together they are everything stored.
        let stored = (status.json["pending"] as? Int ?? 0) + (status.json["in_flight"] as? Int ?? 0)
        #expect(stored == first.acked.count + httpAcked.count, "\(status.text)")

        // The operator frees room: the same connection is accepted again, with no restart.
        try FileManager.default.removeItem(atPath: ballast)
        let padding = String(repeating: "p", count: 900)
        var resumed: String?
        #expect(
            try await Poll.until(timeout: 30, every: .milliseconds(100)) {
                try client.write("{\"event\":\"b\",\"email\":\"b@example.com\",\"data\":{\"p\":\"\(padding)\"}}\n")
                resumed = DaemonProcessTests.ackedID(try client.readLine())
                return resumed != nil
            })
        var acked = first.acked + httpAcked + (resumed.map { [$0] } ?? [])

        // Full again, and this time only delivery can make room.
        let second = try fill(client, prefix: "c")
        #expect(second.refusal?.contains("storage full") == true, "\(second.refusal ?? "no refusal")")
        acked += second.acked
        fake.respond { _ in FakePlunk.legacySuccess() }
        #expect(
            await fake.waitFor(timeout: 60) { requests in
                Set(requests.compactMap(\.idempotencyKey)).isSuperset(of: acked)
            },
            "delivery could not record its progress on a full disk: \(daemon.log.suffix(3000)) \(fake.requestCount) requests, \(acked.count) acked; \(disk.listing()) \((try? TLSDeliveryTests.statusJSON(daemon).text) ?? "")"
        )
        #expect(try await DaemonDeliveryTests().waitForStoredCount(disk.path + "/outbox.sqlite", 0))
        var after: String?
        let resumedAfterDelivery = try await Poll.until(timeout: 30, every: .milliseconds(100)) {
            try client.write("{\"event\":\"after\",\"email\":\"a@example.com\",\"data\":{\"p\":\"\(padding)\"}}\n")
            after = try client.readLine()
            return DaemonProcessTests.ackedID(after) != nil
        }
        #expect(resumedAfterDelivery, "ingest did not resume after delivery made room: \(after ?? "closed") \(disk.listing())")
        #expect(daemon.process.isRunning)
        await fake.stop()
    }
}
