import Foundation
import GRDB
import PlunkdTestSupport
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// Tests of the real `plunkd` binary: killed, corrupted, started twice.
@Suite("The plunkd process", .serialized, .timeLimit(.minutes(2)), .watchdog)
struct DaemonProcessTests {
    @Test("kill -9 while 16 clients write: every acknowledged id is in the database")
    func killNineLosesNothingAcked() throws {
        let daemon = try DaemonProcess()
        defer { daemon.cleanUp() }
        try daemon.waitUntilServing()
        let acked = AckedIDs()
        let perClient = 4000
        let socketPath = daemon.socketPath
        let group = DispatchGroup()
        for clientIndex in 0..<16 {
            group.enter()
            Thread {
                defer { group.leave() }
                guard let client = try? BlockingUnixSocket(path: socketPath, receiveTimeout: 20) else { return }
                let writer = Thread {
                    for batch in stride(from: 0, to: perClient, by: 50) {
                        let lines = (batch..<batch + 50).map {
                            "{\"event\":\"k\($0)\",\"email\":\"c\(clientIndex)@example.com\"}\n"
                        }
                        guard (try? client.write(lines.joined())) != nil else { return }
                    }
                }
                writer.start()
                while let reply = try? client.readLine() {
                    if let id = Self.ackedID(reply) { acked.insert(id) }
                }
            }.start()
        }
        // Kill mid-stream: once a good share of events is acknowledged, not at a quiet moment.
        #expect(Poll.blockingUntil(timeout: 60, every: .milliseconds(1)) { acked.count >= 8000 }, "only \(acked.count) acknowledged")
        daemon.signal(SIGKILL)
        #expect(daemon.waitForExit(timeout: 20) != nil)
        #expect(group.wait(timeout: .now() + 60) == .success)
        let ackedIDs = acked.all
        #expect(ackedIDs.count >= 8000)
        #expect(ackedIDs.count < 16 * perClient, "the kill came after every event was acked; it proves nothing")
        let queue = try DatabaseQueue(path: daemon.storagePath)
        let stored = Set(try queue.read { try String.fetchAll($0, sql: "SELECT id FROM event") })
        let lost = ackedIDs.subtracting(stored)
        #expect(lost.isEmpty, "\(lost.count) acknowledged events are missing after kill -9")
    }

    @Test("a corrupt database stops start-up with exit != 0 and a message naming the file")
    func corruptDatabase() throws {
        let store = try ScratchStore()
        defer { store.remove() }
        let storage = store.path
        try Data("this is not a database, not at all".utf8 + [UInt8](repeating: 7, count: 5000)).write(to: URL(fileURLWithPath: storage))
        let daemon = try DaemonProcess(directory: store.directory)
        defer { daemon.cleanUp(removeDirectory: false) }
        let status = daemon.waitForExit(timeout: 60)
        #expect(status != nil && status != 0)
        #expect(daemon.log.contains(storage))
        #expect(!socketIsServed(daemon.socketPath))
    }

    @Test("a second daemon on the same socket refuses to start and the first keeps serving")
    func secondDaemon() throws {
        let first = try DaemonProcess()
        defer { first.cleanUp() }
        try first.waitUntilServing()
        let second = try DaemonProcess(directory: first.directory)
        defer { second.cleanUp(removeDirectory: false) }
        let status = second.waitForExit(timeout: 60)
        #expect(status != nil && status != 0)
        // The store is locked before the socket is looked at: the holder is named.
        #expect(second.log.contains("another plunkd (pid \(first.pid)) holds this store"), "\(second.log)")
        let client = try BlockingUnixSocket(path: first.socketPath)
        try client.write("{\"event\":\"e\",\"email\":\"a@b.io\"}\n")
        #expect(Self.ackedID(try client.readLine()) != nil)
    }

    @Test("SIGTERM ends the daemon with exit 0, removes its socket, and every line it wrote is its own (none from NIO)")
    func sigterm() throws {
        let daemon = try DaemonProcess()
        defer { daemon.cleanUp() }
        try daemon.waitUntilServing()
        let client = try BlockingUnixSocket(path: daemon.socketPath)
        try client.write("{\"event\":\"e\",\"email\":\"a@b.io\"}\n")
        let id = try #require(Self.ackedID(try client.readLine()))
        daemon.signal(SIGTERM)
        #expect(daemon.waitForExit(timeout: 30) == 0)
        #expect(!FileManager.default.fileExists(atPath: daemon.socketPath))
        let queue = try DatabaseQueue(path: daemon.storagePath)
        #expect(try queue.read { try String.fetchAll($0, sql: "SELECT id FROM event") } == [id])
        // NIO prints straight to stderr when a promise completes on an event loop already
        // shut down: a part let go of too late in the shutdown order.
        let foreign = daemon.log.split(separator: "\n").filter { !$0.contains(" plunkd: ") && !$0.isEmpty }
        #expect(foreign.isEmpty, "lines not written by plunkd's logger: \(foreign)")
    }

    @Test("plunkd track: exit 0 with the id once stored, 1 when refused, 75 when the daemon is unreachable")
    func trackCommand() throws {
        let daemon = try DaemonProcess()
        defer { daemon.cleanUp() }
        try daemon.waitUntilServing()
        let ok = try run([
            "track", "--socket", daemon.socketPath, "--event", "signup", "--email", "ann@example.com",
            "--subscribed", "true", "--data", "plan=pro", "--data", "note=a=b",
        ])
        #expect(ok.status == 0)
        let id = ok.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        let queue = try DatabaseQueue(path: daemon.storagePath)
        let body = try queue.read { try String.fetchOne($0, sql: "SELECT CAST(body AS TEXT) FROM event WHERE id = ?", arguments: [id]) }
        let object = try JSONSerialization.jsonObject(with: Data((body ?? "").utf8)) as? [String: Any]
        #expect(object?["event"] as? String == "signup")
        #expect(object?["subscribed"] as? Bool == true)
        #expect((object?["data"] as? [String: String]) == ["plan": "pro", "note": "a=b"])

        let refused = try run(["track", "--socket", daemon.socketPath, "--event", "x", "--email", "not-an-address"])
        #expect(refused.status == 1)
        #expect(refused.stderr.contains("not a valid email address"))

        let unreachable = try run(["track", "--socket", "\(daemon.directory)/nobody.sock", "--event", "x", "--email", "a@b.io"])
        #expect(unreachable.status == 75)
        #expect(unreachable.stderr.contains("cannot reach plunkd"))
    }

    @Test("plunkd send, the old name of track, still queues the event and says it is deprecated; help lists track, not send")
    func deprecatedSend() throws {
        let daemon = try DaemonProcess()
        defer { daemon.cleanUp() }
        try daemon.waitUntilServing()
        let old = try run(["send", "--socket", daemon.socketPath, "--event", "legacy", "--email", "ann@example.com"])
        #expect(old.status == 0, "\(old.stderr)")
        let id = old.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        let queue = try DatabaseQueue(path: daemon.storagePath)
        #expect(try queue.read { try String.fetchAll($0, sql: "SELECT id FROM event") } == [id])
        #expect(old.stderr.contains("deprecated") && old.stderr.contains("plunkd track"), "\(old.stderr)")
        let help = try run(["--help"])
        #expect(help.stdout.contains("track"))
        #expect(!help.stdout.contains("  send "), "\(help.stdout)")
    }

    // MARK: Helpers

    static func ackedID(_ reply: String?) -> String? {
        guard let reply, let object = try? JSONSerialization.jsonObject(with: Data(reply.utf8)) as? [String: Any],
            object["ok"] as? Bool == true
        else { return nil }
        return object["id"] as? String
    }

    func run(_ arguments: [String]) throws -> (status: Int32, stdout: String, stderr: String) {
        try DaemonProcess.command(arguments)
    }
}

/// Ids acknowledged to any client, collected from many threads.
final class AckedIDs: @unchecked Sendable {
    private let lock = NSLock()
    private var ids: Set<String> = []
    func insert(_ id: String) {
        lock.lock()
        ids.insert(id)
        lock.unlock()
    }
    var count: Int {
        lock.lock()
        defer { lock.unlock() }
        return ids.count
    }
    var all: Set<String> {
        lock.lock()
        defer { lock.unlock() }
        return ids
    }
}

private func socketIsServed(_ path: String) -> Bool {
    (try? BlockingUnixSocket(path: path)) != nil
}

@Suite("One store, one daemon", .serialized, .timeLimit(.minutes(2)), .watchdog)
struct StoreLockTests {
    @Test("a second daemon on the same store exits at once naming the first; status works beside it; kill -9 leaves no stale lock")
    func secondDaemonRefused() async throws {
        let first = try DaemonProcess()
        defer { first.cleanUp() }
        try first.waitUntilServing()
        let second = try DaemonProcess.command(
            ["run"],
            environment: [
                "PLUNKD_SOCKET_PATH": "\(first.directory)/second.sock", "PLUNKD_STORAGE_PATH": first.storagePath,
            ])
        #expect(second.status != 0)
        #expect(second.stderr.contains("another plunkd (pid \(first.pid)) holds this store"), "\(second.stderr)")
        #expect(!FileManager.default.fileExists(atPath: "\(first.directory)/second.sock"))
        let status = try DaemonProcess.command(["status", "--json", "--socket", first.socketPath])
        #expect(status.stdout.contains("\"running\" : true"))
        // A daemon killed with -9 leaves the lock file, not the lock.
        first.signal(SIGKILL)
        #expect(first.waitForExit(timeout: 20) != nil)
        let after = try DaemonProcess(directory: first.directory)
        defer { after.cleanUp(removeDirectory: false) }
        try after.waitUntilServing()
    }
}
