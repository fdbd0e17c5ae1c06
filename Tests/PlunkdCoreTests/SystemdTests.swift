import Foundation
import PlunkdTestSupport
import Testing

@testable import PlunkdCore

#if canImport(Glibc)
    import Glibc
#endif

/// systemd integration of the real binary: notifications on a NOTIFY_SOCKET the test
/// makes, socket activation through systemd-socket-activate, and the unit files checked
/// by systemd's own tools.
@Suite("systemd", .serialized, .timeLimit(.minutes(2)), .watchdog)
struct SystemdTests {
    static var repositoryRoot: String {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().path
    }

    @Test("READY=1 once serving, STATUS= with the state, WATCHDOG=1 while the sender is alive, STOPPING=1 on SIGTERM")
    func notifications() throws {
        let directory = try DaemonProcess.makeScratchDirectory()
        let listener = try NotifyListener(path: "\(directory)/notify.sock")
        let daemon = try DaemonProcess(
            directory: directory,
            environment: [
                "NOTIFY_SOCKET": listener.path, "WATCHDOG_USEC": "200000",
            ])
        defer { daemon.cleanUp() }
        let ready = listener.receive(timeout: 60) { $0.contains("READY=1") }
        #expect(ready != nil, "\(daemon.log)")
        // It is serving by the time it says so.
        #expect((try? BlockingUnixSocket(path: daemon.socketPath)) != nil)
        #expect(ready?.contains("STATUS=no API key configured") == true)
        // WATCHDOG_USEC 0.2 s: pings every 0.1 s; several must come.
        var pings = 0
        let deadline = Date().addingTimeInterval(30)
        while pings < 3 && Date() < deadline {
            if listener.receive(timeout: 5, { $0.contains("WATCHDOG=1") }) != nil { pings += 1 }
        }
        #expect(pings == 3)
        daemon.signal(SIGTERM)
        #expect(listener.receive(timeout: 30) { $0.contains("STOPPING=1") } != nil)
        #expect(daemon.waitForExit() == 0)
    }

    @Test("a sender with a request stuck past its timeout stops feeding the watchdog")
    func wedgedSender() async throws {
        final class NeverAnswers: PlunkTransport, @unchecked Sendable {
            func post(body: Data, idempotencyKey: String, apiKey: APIKey, completion: @escaping @Sendable (PlunkAnswer) -> Void) {}
            func shutdown() async {}
        }
        let store = try ScratchStore()
        defer { store.remove() }
        let outbox = try store.open()
        let clock = ManualClock(Date(timeIntervalSince1970: 1_000_000))
        let sender = Sender(
            outbox: outbox, transport: NeverAnswers(),
            settings: .init(apiKey: APIKey("pk_x"), concurrency: 1, retry: RetryPolicy(initialBackoff: 1, maxBackoff: 2, maxAge: 100)),
            logger: .init(label: "test"), clock: { clock.now })
        try await sender.start()
        #expect(try await progress(sender, maxAge: 40))
        try outbox.enqueue([AcceptedEvent(contact: "a@b.io", body: Data("{}".utf8))], at: clock.now)
        sender.wake()
        _ = await Poll.until(timeout: 10) { sender.snapshot().inFlight > 0 }
        #expect(sender.snapshot().inFlight == 1)
        clock.advance(39)
        #expect(try await progress(sender, maxAge: 40))
        clock.advance(2)
        #expect(try await progress(sender, maxAge: 40) == false)
    }

    @Test("the watchdog's check covers both lines: a request stuck on the email line withholds the ping while track is healthy")
    func wedgedEmailLine() async throws {
        final class NeverAnswers: PlunkTransport, @unchecked Sendable {
            func post(body: Data, idempotencyKey: String, apiKey: APIKey, completion: @escaping @Sendable (PlunkAnswer) -> Void) {}
            func shutdown() async {}
        }
        let clock = ManualClock(Date(timeIntervalSince1970: 1_000_000))
        let settings = DeliverySettings(apiKey: APIKey("sk_x"), concurrency: 1, retry: RetryPolicy(initialBackoff: 1, maxBackoff: 2, maxAge: 100))
        let trackStore = try ScratchStore()
        let emailStore = try ScratchStore()
        defer {
            trackStore.remove()
            emailStore.remove()
        }
        let track = Sender(outbox: try trackStore.open(), transport: NeverAnswers(), settings: settings, logger: .init(label: "test"), clock: { clock.now })
        let emailOutbox = try emailStore.open()
        var emailSettings = settings
        emailSettings.kind = .email
        let email = Sender(outbox: emailOutbox, transport: NeverAnswers(), settings: emailSettings, logger: .init(label: "test"), clock: { clock.now })
        try await track.start()
        try await email.start()
        func bothAlive() async throws -> Bool {
            try await Deadline.callback("both senders' progress check") { answered in
                DeliveryWatchdog.checkProgress(of: [track, email], maxRequestAge: 40, reply: answered)
            }
        }
        #expect(try await bothAlive())
        try emailOutbox.enqueue([AcceptedEvent(contact: "a@b.io", body: Data("{}".utf8))], at: clock.now)
        email.wake()
        _ = await Poll.until(timeout: 10) { email.snapshot().inFlight > 0 }
        clock.advance(41)
        #expect(try await progress(track, maxAge: 40), "track alone is healthy")
        #expect(try await bothAlive() == false)
    }

    func progress(_ sender: Sender, maxAge: TimeInterval) async throws -> Bool {
        try await Deadline.callback("the sender's progress check") { answered in
            sender.checkProgress(maxRequestAge: maxAge, reply: answered)
        }
    }

    // systemd-socket-activate closes every descriptor it inherited, among them the one
    // Foundation's `Process` watches for the child's end: Foundation then cleans up twice,
    // and its second `close` hits whatever descriptor reused the number (an event loop's
    // epoll of another test, once in CI). So it runs under perl's `system` (perl-base is
    // part of every Debian), which keeps its copies open until the child exits and waits
    // with a plain waitpid: a shell's `wait` hangs, as the shell inherits this process's
    // blocked SIGCHLD. The test signals plunkd itself, the launcher's child.

    @Test("socket activation: an event sent before the daemon runs is stored and acknowledged by it")
    func socketActivation() throws {
        let activate = "/usr/bin/systemd-socket-activate"
        try #require(FileManager.default.isExecutableFile(atPath: activate), "systemd-socket-activate is missing (apt-get install systemd)")
        let directory = try DaemonProcess.makeScratchDirectory()
        let socketPath = "\(directory)/activated.sock"
        let daemon = try DaemonProcess(
            directory: directory, arguments: ["run"],
            environment: ["PLUNKD_SOCKET_PATH": socketPath],
            launcher: [
                "/usr/bin/perl", "-e", "exit(system(@ARGV) >> 8)",
                activate, "-l", socketPath, "-E", "PLUNKD_SOCKET_PATH", "-E", "PLUNKD_STORAGE_PATH", "-E", "HOME", "-E", "PATH",
            ])
        defer { daemon.cleanUp() }
        // systemd-socket-activate listens first and starts plunkd at the first connection.
        var client: BlockingUnixSocket?
        let deadline = Date().addingTimeInterval(30)
        while client == nil && Date() < deadline {
            client = try? BlockingUnixSocket(path: socketPath)
            if client == nil { usleep(20_000) }
        }
        let connected = try #require(client)
        try connected.write("{\"event\":\"activated\",\"email\":\"a@example.com\"}\n")
        let id = try #require(DaemonProcessTests.ackedID(try connected.readLine()), "\(daemon.log)")
        // The "listening" line is written once start-up returns, which can be after the
        // queued connection was already served.
        #expect(daemon.waitForLog(containing: "activated_by_systemd=true"), "\(daemon.log)")
        // Asked over the socket from here: systemd-socket-activate closes Foundation's
        // process-monitoring descriptor, so this test spawns nothing else while it runs.
        let statusClient = try BlockingUnixSocket(path: socketPath)
        try statusClient.write("GET /status HTTP/1.1\r\nHost: plunkd\r\n\r\n")
        let status = try #require(try statusClient.readHTTPResponse())
        #expect(status.status == 200)
        #expect(status.body.contains("\"pending\":1"))
        #expect(status.body.contains("\"socket\":\"\(socketPath)\""))
        #expect(!id.isEmpty)
        // The shell's child is plunkd (systemd-socket-activate executed it).
        let children = try String(contentsOfFile: "/proc/\(daemon.pid)/task/\(daemon.pid)/children", encoding: .utf8)
        let plunkd = try #require(children.split(separator: " ").first.flatMap { Int32($0) })
        kill(plunkd, SIGTERM)
        #expect(daemon.waitForExit() == 0)
    }

    @Test("the units pass systemd-analyze verify, the service's exposure is 2.0 or lower, sysusers creates the users")
    func units() throws {
        let analyze = "/usr/bin/systemd-analyze"
        try #require(FileManager.default.isExecutableFile(atPath: analyze), "systemd-analyze is missing (apt-get install systemd)")
        let directory = try DaemonProcess.makeScratchDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let source = "\(Self.repositoryRoot)/systemd"
        // verify checks that ExecStart exists: point it at the binary under test.
        let service = try String(contentsOfFile: "\(source)/plunkd.service", encoding: .utf8)
            .replacingOccurrences(of: "/usr/bin/plunkd", with: DaemonProcess.binaryPath)
        try service.write(toFile: "\(directory)/plunkd.service", atomically: true, encoding: .utf8)
        try FileManager.default.copyItem(atPath: "\(source)/plunkd.socket", toPath: "\(directory)/plunkd.socket")
        let verify = try DaemonProcess.command(["verify", "\(directory)/plunkd.socket", "\(directory)/plunkd.service"], executable: analyze)
        #expect(verify.status == 0, "\(verify.stderr)")
        #expect(!verify.stderr.contains("plunkd."), "\(verify.stderr)")
        let security = try DaemonProcess.command(["security", "--offline=true", "--threshold=20", "\(directory)/plunkd.service"], executable: analyze)
        #expect(security.status == 0, "\(security.stdout.suffix(400))")
        let level = security.stdout.split(separator: "\n").last { $0.contains("Overall exposure level") }
        let score = level.flatMap { line in line.split(separator: " ").compactMap { Double($0) }.first }
        #expect(score.map { $0 <= 2.0 } == true, "\(String(describing: level))")
        for required in [
            "Type=notify", "WatchdogSec=", "Environment=PLUNK_API_KEY_FILE=/etc/plunkd/api-key\n", "StateDirectory=plunkd",
            "ConfigurationDirectory=plunkd", "SystemCallFilter=setpriority\n", "Restart=on-failure", "StartLimitIntervalSec=0", "CapabilityBoundingSet=\n",
        ] {
            #expect(service.contains(required), "\(required)")
        }
        // A runtime directory would be handed to plunkd:plunkd at every start, socket and all.
        #expect(!service.split(separator: "\n").contains { $0.hasPrefix("RuntimeDirectory") })
        let socket = try String(contentsOfFile: "\(source)/plunkd.socket", encoding: .utf8)
        #expect(socket.contains("Backlog=4096\n"))

        let sysroot = "\(directory)/root"
        try FileManager.default.createDirectory(atPath: "\(sysroot)/etc", withIntermediateDirectories: true)
        let sysusers = try DaemonProcess.command(["--root=\(sysroot)", "\(source)/plunkd.sysusers.conf"], executable: "/usr/bin/systemd-sysusers")
        #expect(sysusers.status == 0, "\(sysusers.stderr)")
        let passwd = try String(contentsOfFile: "\(sysroot)/etc/passwd", encoding: .utf8)
        let group = try String(contentsOfFile: "\(sysroot)/etc/group", encoding: .utf8)
        #expect(passwd.contains("plunkd:x:"))
        #expect(group.contains("plunkd-clients:x:"))
    }

    @Test("the instance template: verify passes, exposure 2.0 or lower, its hardening is plunkd.service's line for line, its paths are InstanceName's")
    func instanceUnits() throws {
        let analyze = "/usr/bin/systemd-analyze"
        try #require(FileManager.default.isExecutableFile(atPath: analyze), "systemd-analyze is missing (apt-get install systemd)")
        let directory = try DaemonProcess.makeScratchDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let source = "\(Self.repositoryRoot)/systemd"
        let template = try String(contentsOfFile: "\(source)/plunkd@.service", encoding: .utf8)
        try template.replacingOccurrences(of: "/usr/bin/plunkd", with: DaemonProcess.binaryPath)
            .write(toFile: "\(directory)/plunkd@.service", atomically: true, encoding: .utf8)
        try FileManager.default.copyItem(atPath: "\(source)/plunkd@.socket", toPath: "\(directory)/plunkd@.socket")
        let verify = try DaemonProcess.command(
            ["verify", "\(directory)/plunkd@ci.socket", "\(directory)/plunkd@ci.service"], executable: analyze)
        #expect(verify.status == 0, "\(verify.stderr)")
        #expect(!verify.stderr.contains("plunkd@"), "\(verify.stderr)")
        let security = try DaemonProcess.command(["security", "--offline=true", "--threshold=20", "\(directory)/plunkd@ci.service"], executable: analyze)
        let level = security.stdout.split(separator: "\n").last { $0.contains("Overall exposure level") }
        let score = level.flatMap { line in line.split(separator: " ").compactMap { Double($0) }.first }
        #expect(score.map { $0 <= 2.0 } == true, "\(String(describing: level))")

        // Every sandboxing line of the plain service, from NoNewPrivileges= to [Install], in the same order.
        func hardening(_ unit: String) -> [Substring] {
            let lines = unit.split(separator: "\n")
            guard let first = lines.firstIndex(of: "NoNewPrivileges=yes"), let last = lines.firstIndex(of: "[Install]") else { return [] }
            return Array(lines[first..<last])
        }
        let plain = try String(contentsOfFile: "\(source)/plunkd.service", encoding: .utf8)
        #expect(hardening(plain).count > 20)
        #expect(hardening(template) == hardening(plain))

        let ci = try InstanceName("ci")
        let socket = try String(contentsOfFile: "\(source)/plunkd@.socket", encoding: .utf8).replacingOccurrences(of: "%i", with: "ci")
        #expect(socket.contains("ListenStream=\(ci.socketPath)\n"))
        #expect(socket.contains("SocketGroup=plunkd-ci\n"))
        let service = template.replacingOccurrences(of: "%i", with: "ci")
        #expect(service.contains("ExecStart=/usr/bin/plunkd run --instance ci\n"))
        #expect(service.contains("StateDirectory=\(URL(fileURLWithPath: ci.storagePath).deletingLastPathComponent().lastPathComponent)\n"))
        #expect(service.contains("Environment=PLUNK_API_KEY_FILE=/etc/plunkd/ci/api-key\n"))
    }
}

/// The receiving end of sd_notify: a datagram socket the test binds, as systemd would.
final class NotifyListener {
    let path: String
    private let fd: Int32

    init(path: String) throws {
        self.path = path
        fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue), 0)
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { $0.copyBytes(from: Array(path.utf8)) }
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard bound == 0 else { throw DaemonProcess.Failure(description: "cannot bind \(path)") }
        var timeout = timeval(tv_sec: 0, tv_usec: 200_000)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
    }

    deinit { close(fd) }

    /// The first datagram that satisfies `matching`, within `timeout` seconds.
    func receive(timeout: Double, _ matching: (String) -> Bool) -> String? {
        let deadline = Date().addingTimeInterval(timeout)
        var buffer = [UInt8](repeating: 0, count: 4096)
        while Date() < deadline {
            let count = recv(fd, &buffer, buffer.count, 0)
            if count > 0 {
                let message = String(decoding: buffer.prefix(count), as: UTF8.self)
                if matching(message) { return message }
            }
        }
        return nil
    }
}

/// A clock the test moves by hand.
final class ManualClock: @unchecked Sendable {
    private let lock = NSLock()
    private var current: Date
    init(_ start: Date) { current = start }
    var now: Date {
        lock.lock()
        defer { lock.unlock() }
        return current
    }
    func advance(_ seconds: TimeInterval) {
        lock.lock()
        current += seconds
        lock.unlock()
    }
}
