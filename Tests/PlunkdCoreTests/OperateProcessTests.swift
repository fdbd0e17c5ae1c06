import Foundation
import PlunkdTestSupport
import Testing

@testable import PlunkdCore

#if canImport(Glibc)
    import Glibc
#endif

/// The operator's commands against the real binary: status and its exit codes, metrics,
/// reload, check-config, and the peer policy with a real second user.
@Suite("Operating the plunkd process", .serialized, .timeLimit(.minutes(2)), .watchdog)
struct OperateProcessTests {
    func status(_ daemon: DaemonProcess, socket: String? = nil) throws -> (exit: Int32, json: [String: Any], text: String) {
        let run = try DaemonProcess.command(
            ["status", "--json", "--socket", socket ?? daemon.socketPath],
            environment: ["PLUNKD_STORAGE_PATH": daemon.storagePath])
        let object = (try? JSONSerialization.jsonObject(with: Data(run.stdout.utf8)) as? [String: Any]) ?? [:]
        return (run.status, object, run.stdout + run.stderr)
    }

    @Test("status: no_api_key exits 2 with the pending count; idle after delivery exits 0; not running exits 2 from the store")
    func statusExitCodes() async throws {
        let fake = try await FakePlunk()
        let directory = try DaemonProcess.makeScratchDirectory()
        do {
            let daemon = try DaemonProcess(directory: directory)
            defer { daemon.cleanUp(removeDirectory: false) }
            try daemon.waitUntilServing()
            _ = try DaemonDeliveryTests().submit(daemon.socketPath)
            let held = try status(daemon)
            #expect(held.exit == 2)
            #expect(held.json["state"] as? String == "no_api_key")
            #expect(held.json["pending"] as? Int == 1)
            let text = try DaemonProcess.command(["status", "--socket", daemon.socketPath])
            #expect(text.status == 2)
            #expect(text.stdout.contains("no_api_key (CRITICAL)"))
            daemon.signal(SIGTERM)
            #expect(daemon.waitForExit() == 0)
        }
        do {
            let daemon = try DaemonProcess(directory: directory, environment: DaemonDeliveryTests().environment(fake))
            defer { daemon.cleanUp(removeDirectory: false) }
            try daemon.waitUntilServing()
            #expect(await fake.waitFor { $0.count == 1 })
            _ = try DaemonDeliveryTests().submit(daemon.socketPath)
            #expect(await fake.waitFor { $0.count == 2 })
            #expect(try await DaemonDeliveryTests().waitForStoredCount(daemon.storagePath, 0))
            let healthy = try status(daemon)
            #expect(healthy.exit == 0, "\(healthy.text)")
            #expect(healthy.json["state"] as? String == "idle")
            #expect(healthy.json["delivered_total"] as? Int == 2)
            #expect(healthy.json["delivered_last_hour"] as? Int == 2)
            #expect(!healthy.text.contains("pk_process_test"))

            let scrape = try BlockingUnixSocket(path: daemon.socketPath)
            try scrape.write("GET /metrics HTTP/1.1\r\nHost: plunkd\r\n\r\n")
            let metrics = try #require(try scrape.readHTTPResponse())
            #expect(metrics.headers["content-type"]?.hasPrefix("text/plain") == true)
            #expect(metrics.body.contains("plunkd_events_received_total 1"))
            #expect(metrics.body.contains("plunkd_attempts_total{outcome=\"delivered\"} 2"))
            #expect(metrics.body.contains("plunkd_request_duration_seconds_count 2"))
            #expect(metrics.body.contains("plunkd_delivery_state{state=\"idle\"} 1"))
            #expect(!metrics.body.contains("pk_process_test"))
            daemon.signal(SIGTERM)
            #expect(daemon.waitForExit() == 0)
        }
        let stopped = try DaemonProcess.command(
            ["status", "--json", "--socket", "\(directory)/plunkd.sock"],
            environment: ["PLUNKD_STORAGE_PATH": "\(directory)/outbox.sqlite"])
        let object = try #require(try JSONSerialization.jsonObject(with: Data(stopped.stdout.utf8)) as? [String: Any])
        #expect(stopped.status == 2)
        #expect(object["state"] as? String == "not_running")
        #expect(object["delivered_total"] as? Int == 2)
        #expect(object["running"] as? Bool == false)
        try? FileManager.default.removeItem(atPath: directory)
        await fake.stop()
    }

    @Test("status on a damaged store with no daemon: storage_error, exit 2; never a healthy idle")
    func damagedStore() throws {
        let directory = try DaemonProcess.makeScratchDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let path = "\(directory)/outbox.sqlite"
        try Data(repeating: 0x41, count: 8192).write(to: URL(fileURLWithPath: path))
        let run = try DaemonProcess.command(
            ["status", "--json", "--socket", "\(directory)/none.sock"],
            environment: ["PLUNKD_STORAGE_PATH": path])
        let object = try #require(try JSONSerialization.jsonObject(with: Data(run.stdout.utf8)) as? [String: Any])
        #expect(run.status == 2)
        #expect(object["state"] as? String == "storage_error")
        #expect((object["storage_error"] as? String)?.contains(path) == true)
    }

    @Test("SIGHUP with a broken config: one log line, the old config stays, no connection dropped")
    func brokenReload() throws {
        let directory = try DaemonProcess.makeScratchDirectory()
        let config = "\(directory)/plunkd.yaml"
        // Plunk's address is a closed loopback port: nothing leaves the machine.
        let base = "plunk:\n  base_url: http://127.0.0.1:9/v1\n"
        try (base + "  concurrency: 4\n").write(toFile: config, atomically: true, encoding: .utf8)
        let daemon = try DaemonProcess(directory: directory, arguments: ["run", "--config", config])
        defer { daemon.cleanUp() }
        try daemon.waitUntilServing()
        let client = try BlockingUnixSocket(path: daemon.socketPath)
        try client.write("{\"event\":\"before\",\"email\":\"a@example.com\"}\n")
        #expect(DaemonProcessTests.ackedID(try client.readLine()) != nil)
        #expect(try state(of: daemon) == "no_api_key")
        // Broken: a key that would apply on reload, beside a value that cannot be read.
        try (base + "  api_key: pk_reload_test\n  concurrency: lots\n").write(toFile: config, atomically: true, encoding: .utf8)
        daemon.signal(SIGHUP)
        #expect(daemon.waitForLog(containing: "reload refused"))
        let refusals = daemon.log.components(separatedBy: "\n").filter { $0.contains("reload refused") }
        #expect(refusals.count == 1)
        #expect(refusals.first?.contains("plunk.concurrency") == true)
        // The same connection still works, and the daemon still runs on the old configuration.
        try client.write("{\"event\":\"after\",\"email\":\"a@example.com\"}\n")
        #expect(DaemonProcessTests.ackedID(try client.readLine()) != nil)
        #expect(daemon.process.isRunning)
        // Nothing of the refused file was applied: still no key.
        #expect(try state(of: daemon) == "no_api_key")
        // A good config applies (the key is in force); a setting that needs a restart is named.
        try (base + "  api_key: pk_reload_test\n  concurrency: 4\nsocket:\n  admin_uids: [0]\nretry:\n  max_backoff: 60\nlog:\n  level: debug\n").write(
            toFile: config, atomically: true, encoding: .utf8)
        daemon.signal(SIGHUP)
        #expect(daemon.waitForLog(containing: "configuration reloaded"))
        #expect(daemon.log.contains("needs a restart to take effect: log.level"))
        #expect(try state(of: daemon) != "no_api_key")
    }

    /// The daemon's state as `plunkd status --json` reports it.
    func state(of daemon: DaemonProcess) throws -> String? {
        let run = try DaemonProcess.command(["status", "--json", "--socket", daemon.socketPath])
        let object = try JSONSerialization.jsonObject(with: Data(run.stdout.utf8)) as? [String: Any]
        return object?["state"] as? String
    }

    @Test("check-config explains what a burned key does: Plunk's contract by default, re-keying track only when chosen, emails never")
    func checkConfigBurnedKeys() throws {
        let followed = try DaemonProcess.command(["check-config"])
        #expect(followed.status == 0, "\(followed.stderr)")
        #expect(followed.stdout.contains("burned keys      follow Plunk (plunk.rekey_burned_track_keys: false)"), "\(followed.stdout)")
        let rekeyed = try DaemonProcess.command(["check-config"], environment: ["PLUNK_REKEY_BURNED_TRACK_KEYS": "true"])
        #expect(rekeyed.stdout.contains("burned keys      re-key track (plunk.rekey_burned_track_keys: true)"), "\(rekeyed.stdout)")
        #expect(rekeyed.stdout.contains("emails are parked uncertain and sent again only by plunkd parked retry --email --new-key"))
        let wrong = try DaemonProcess.command(["check-config"], environment: ["PLUNK_REKEY_BURNED_TRACK_KEYS": "sometimes"])
        #expect(wrong.status == 1)
        #expect(wrong.stderr.contains("PLUNK_REKEY_BURNED_TRACK_KEYS"), "\(wrong.stderr)")
    }

    @Test("check-config: exit 0 for a valid file, 1 with the key named for a wrong one; sk_ on a v2 host warned; the key never printed")
    func checkConfig() throws {
        let directory = try DaemonProcess.makeScratchDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let good = "\(directory)/good.yaml"
        try "plunk:\n  base_url: https://next-api.useplunk.com/v1\n  api_key: sk_secret_value_123\n".write(toFile: good, atomically: true, encoding: .utf8)
        let ok = try DaemonProcess.command(["check-config", "--config", good])
        #expect(ok.status == 0)
        #expect(ok.stdout.contains("warning:") && ok.stdout.contains("pk_"))
        // Plunk's newest /track takes sk_ too; only v2 0.13-0.16 refuse it.
        #expect(ok.stdout.contains("its newest releases take it on /track, but v2 0.13-0.16 refuse it with 401"), "\(ok.stdout)")
        #expect(!(ok.stdout + ok.stderr).contains("sk_secret_value_123"))
        let bad = "\(directory)/bad.yaml"
        try "storage:\n  max_pending: -3\n".write(toFile: bad, atomically: true, encoding: .utf8)
        let refused = try DaemonProcess.command(["check-config", "--config", bad])
        #expect(refused.status == 1)
        #expect(refused.stderr.contains("storage.max_pending"))
        let missing = try DaemonProcess.command(["check-config", "--config", "\(directory)/none.yaml"])
        #expect(missing.status == 1)
    }

    @Test(
        "a real second user: refused by socket.allowed_uids, refused control commands, allowed status",
        .enabled(
            if: getuid() == 0 && FileManager.default.isExecutableFile(atPath: "/usr/bin/setpriv"),
            "needs root and setpriv to act as another user"))
    func secondUser() throws {
        let directory = try DaemonProcess.makeScratchDirectory()
        chmod(directory, 0o755)
        let config = "\(directory)/plunkd.yaml"
        try "socket:\n  mode: 0666\n  allowed_uids: [0]\n".write(toFile: config, atomically: true, encoding: .utf8)
        let daemon = try DaemonProcess(directory: directory, arguments: ["run", "--config", config])
        defer { daemon.cleanUp() }
        try daemon.waitUntilServing()
        let asNobody = ["--reuid=65534", "--regid=65534", "--clear-groups", DaemonProcess.binaryPath]
        let send = try DaemonProcess.command(
            asNobody + ["track", "--socket", daemon.socketPath, "--event", "x", "--email", "a@b.io"],
            executable: "/usr/bin/setpriv")
        #expect(send.status == 1)
        #expect(send.stderr.contains("uid 65534 may not use plunkd's socket"))
        let resume = try DaemonProcess.command(asNobody + ["resume", "--socket", daemon.socketPath], executable: "/usr/bin/setpriv")
        #expect(resume.status != 0)
        #expect(resume.stderr.contains("uid 65534 may not use plunkd's socket"))
        // Root (the allowed uid) still may.
        #expect(try DaemonProcess.command(["track", "--socket", daemon.socketPath, "--event", "x", "--email", "a@b.io"]).status == 0)
        #expect(daemon.log.contains("client refused: uid 65534"))

        // Without allowed_uids, nobody may submit but still not run control commands.
        try "socket:\n  mode: 0666\n".write(toFile: config, atomically: true, encoding: .utf8)
        daemon.signal(SIGHUP)
        #expect(daemon.waitForLog(containing: "configuration reloaded"))
        let allowed = try DaemonProcess.command(
            asNobody + ["track", "--socket", daemon.socketPath, "--event", "x", "--email", "a@b.io"],
            executable: "/usr/bin/setpriv")
        #expect(allowed.status == 0, "\(allowed.stderr)")
        let status = try DaemonProcess.command(asNobody + ["status", "--json", "--socket", daemon.socketPath], executable: "/usr/bin/setpriv")
        #expect(status.stdout.contains("\"state\" : \"no_api_key\""), "\(status.stdout) \(status.stderr)")
        #expect(status.stdout.contains("\"running\" : true"))
        let drop = try DaemonProcess.command(asNobody + ["parked", "drop", "--all", "--socket", daemon.socketPath], executable: "/usr/bin/setpriv")
        #expect(drop.status == 1)
        #expect(drop.stderr.contains("uid 65534 may not run control commands"))
    }

    @Test("plunkd parked list / drop / retry through the binary: drop of several needs --yes; retry delivers")
    func parkedCommands() async throws {
        let fake = try await FakePlunk { _ in FakePlunk.legacyError(422, "Invalid event") }
        let daemon = try DaemonProcess(environment: DaemonDeliveryTests().environment(fake))
        defer { daemon.cleanUp() }
        try daemon.waitUntilServing()
        let ids = try (0..<3).map { try DaemonDeliveryTests().submit(daemon.socketPath, event: "p\($0)") }
        let socket = ["--socket", daemon.socketPath]
        let deadline = Date().addingTimeInterval(30)
        var listed: [[String: Any]] = []
        while listed.count < 3 && Date() < deadline {
            let list = try DaemonProcess.command(["parked", "list", "--json"] + socket)
            listed = (try? JSONSerialization.jsonObject(with: Data(list.stdout.utf8)) as? [[String: Any]]) ?? []
            if listed.count < 3 { usleep(50_000) }
        }
        #expect(listed.compactMap { $0["id"] as? String } == ids)
        #expect(listed.first?["reason"] as? String == "rejected")
        #expect(listed.first?["last_status"] as? Int == 422)
        let text = try DaemonProcess.command(["parked", "list"] + socket)
        #expect(text.stdout.contains(ids[0]) && text.stdout.contains("Invalid event"))

        let unconfirmed = try DaemonProcess.command(["parked", "drop", "--all"] + socket)
        #expect(unconfirmed.status == 1)
        #expect(unconfirmed.stderr.contains("--yes"))
        let dropOne = try DaemonProcess.command(["parked", "drop", ids[2]] + socket)
        #expect(dropOne.status == 0, "\(dropOne.stderr)")
        #expect(dropOne.stdout.contains("1 parked events dropped"))
        let noSelection = try DaemonProcess.command(["parked", "retry"] + socket)
        #expect(noSelection.status == 1)

        fake.respond { _ in FakePlunk.legacySuccess() }
        let retry = try DaemonProcess.command(["parked", "retry", "--reason", "rejected"] + socket)
        #expect(retry.status == 0, "\(retry.stderr)")
        #expect(
            await fake.waitFor { requests in
                requests.filter { $0.idempotencyKey == ids[0] }.count == 2 && requests.filter { $0.idempotencyKey == ids[1] }.count == 2
            })
        #expect(try await DaemonDeliveryTests().waitForStoredCount(daemon.storagePath, 0))
        let status = try status(daemon)
        #expect(status.json["dropped_total"] as? Int == 1)
        #expect(status.exit == 0, "\(status.text)")
        await fake.stop()
    }

    @Test("metrics.listen serves /metrics over loopback TCP, and nothing else")
    func metricsOverTCP() throws {
        let port = try Self.freePort()
        let daemon = try DaemonProcess(environment: ["PLUNKD_METRICS_LISTEN": "127.0.0.1:\(port)"])
        defer { daemon.cleanUp() }
        try daemon.waitUntilServing()
        _ = try DaemonDeliveryTests().submit(daemon.socketPath)
        let metrics = try Self.httpGet(port: port, path: "/metrics")
        #expect(metrics.contains("200 OK"))
        #expect(metrics.contains("plunkd_events_received_total 1"))
        #expect(metrics.contains("plunkd_pending_events 1"))
        #expect(try Self.httpGet(port: port, path: "/status").contains("404"))
    }

    static func freePort() throws -> Int {
        let (fd, port) = try boundLoopbackSocket(listening: false)
        close(fd)
        return port
    }

    /// A TCP socket bound to a free port on 127.0.0.1 (listening when asked); the caller closes it.
    static func boundLoopbackSocket(listening: Bool) throws -> (fd: Int32, port: Int) {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) } }
        guard bound == 0, !listening || listen(fd, 1) == 0 else {
            close(fd)
            throw DaemonProcess.Failure(description: "cannot bind a loopback port: \(String(cString: strerror(errno)))")
        }
        _ = withUnsafeMutablePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) } }
        return (fd, Int(UInt16(bigEndian: address.sin_port)))
    }

    /// One request over loopback TCP; the whole answer as text.
    static func httpGet(port: Int, path: String) throws -> String {
        try TCPListenerTests.raw(port: port, "GET \(path) HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    }
}
