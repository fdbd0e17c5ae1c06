import Foundation
import PlunkdTestSupport
import Testing

@testable import PlunkdCore

/// `ingest.listen` through the binary: the HTTP routes on loopback TCP, for clients that
/// only speak to a URL, each request admitted by a bearer token from `ingest.tokens`.
@Suite("The loopback TCP listener", .serialized, .timeLimit(.minutes(3)), .watchdog)
struct TCPListenerTests {
    static let token = "local-token-0123456789abcdef"
    static let plunkKey = "pk_tcp_listener_secret"

    static func start(_ fake: FakePlunk?, port: Int, _ extra: [String: String] = [:]) throws -> DaemonProcess {
        var environment = ["PLUNKD_INGEST_LISTEN": "127.0.0.1:\(port)", "PLUNKD_INGEST_TOKENS": token]
        if let fake { environment.merge(TLSDeliveryTests.environment(fake, ["PLUNK_API_KEY": plunkKey])) { _, new in new } }
        environment.merge(extra) { _, new in new }
        let daemon = try DaemonProcess(environment: environment)
        try daemon.waitUntilServing()
        return daemon
    }

    /// What a client written the way `@plunk/node` 3.0.3 is (its `fetch` on
    /// `new URL(route, baseUrl)`, the key as a bearer token) gets from each call.
    static let nodeClient = #"""
        class PlunkLike {
          constructor(key, baseUrl) { this.key = key; this.baseUrl = baseUrl; }
          async post(route, json) {
            const res = await fetch(new URL(route, this.baseUrl).toString(), {
              method: "POST",
              headers: { Authorization: `Bearer ${this.key}`, "Content-Type": "application/json" },
              body: JSON.stringify(json),
            });
            const text = await res.text();
            let data;
            try { data = JSON.parse(text); } catch { data = text; }
            return { status: res.status, data };
          }
        }
        const [port, token] = process.argv.slice(2);
        (async () => {
          const results = [];
          const withV1 = new PlunkLike(token, `http://127.0.0.1:${port}/v1/`);
          results.push(await withV1.post("track", { event: "signed-up", email: "node@example.com", data: { plan: "pro" } }));
          const bare = new PlunkLike(token, `http://127.0.0.1:${port}`);
          results.push(await bare.post("track", { event: "upgraded", email: "node@example.com" }));
          results.push(await withV1.post("track", { event: "no-email" }));
          results.push(await new PlunkLike("pk_the_plunk_key_by_mistake", `http://127.0.0.1:${port}/v1/`).post("track", { event: "e", email: "x@example.com" }));
          console.log(JSON.stringify(results));
        })().catch((error) => { console.log(JSON.stringify({ thrown: String(error) })); process.exit(3); });
        """#

    @Test("a Node client calling fetch on a baseUrl, as Plunk's SDK does, tracks through the listener; Plunk gets the Plunk key, never the token")
    func nodeClient() async throws {
        let node = "/usr/bin/node"
        try #require(FileManager.default.isExecutableFile(atPath: node), "Node.js is needed (apt-get install nodejs; .ci/run installs it)")
        let fake = try await FakePlunk()
        let port = try OperateProcessTests.freePort()
        let daemon = try Self.start(fake, port: port)
        defer { daemon.cleanUp() }
        let script = "\(daemon.directory)/client.mjs"
        try Self.nodeClient.write(toFile: script, atomically: true, encoding: .utf8)
        let run = try DaemonProcess.command([script, String(port), Self.token], executable: node)
        #expect(run.status == 0, "\(run.stdout)\(run.stderr)")
        let results = try #require(try JSONSerialization.jsonObject(with: Data(run.stdout.utf8)) as? [[String: Any]], "\(run.stdout)")
        try #require(results.count == 4)
        let statuses = results.map { $0["status"] as? Int }
        #expect(statuses == [200, 200, 400, 401], "\(run.stdout)")
        let accepted = results.prefix(2).compactMap { $0["data"] as? [String: Any] }
        #expect(accepted.allSatisfy { $0["success"] as? Bool == true && ($0["id"] as? String)?.count == 36 }, "\(run.stdout)")
        let invalid = (results[2]["data"] as? [String: Any])?["message"] as? String
        #expect(invalid?.contains("email") == true, "\(run.stdout)")
        let refused = (results[3]["data"] as? [String: Any])?["message"] as? String
        #expect(refused?.contains("not one of plunkd's ingest.tokens") == true, "\(run.stdout)")

        #expect(await fake.waitFor(timeout: 30) { $0.count >= 2 }, "\(fake.requests.count) arrived")
        #expect(try await DaemonDeliveryTests().waitForStoredCount(daemon.storagePath, 0))
        let events = try fake.requests.map { try #require(try JSONSerialization.jsonObject(with: $0.body) as? [String: Any])["event"] as? String }
        #expect(events == ["signed-up", "upgraded"])
        #expect(fake.requests.allSatisfy { $0.headers["authorization"] == "Bearer \(Self.plunkKey)" })
        #expect(!daemon.log.contains(Self.token) && !daemon.log.contains("pk_the_plunk_key_by_mistake") && !daemon.log.contains(Self.plunkKey))
        #expect(!run.stdout.contains(Self.plunkKey))
        await fake.stop()
    }

    @Test("without a token, or with a wrong one: 401 in Plunk's shape and nothing stored; control routes and NDJSON stay on the socket")
    func refusals() throws {
        let port = try OperateProcessTests.freePort()
        let daemon = try Self.start(nil, port: port)
        defer { daemon.cleanUp() }
        let event = #"{"event":"e","email":"a@example.com"}"#
        let none = try Self.request(port: port, "POST", "/v1/track", body: event)
        #expect(none.hasPrefix("HTTP/1.1 401"), "\(none)")
        #expect(none.contains("WWW-Authenticate: Bearer") && none.contains(#""code":401"#) && none.contains("no Authorization header"), "\(none)")
        let wrong = try Self.request(port: port, "POST", "/v1/track", headers: ["Authorization: Bearer \(Self.token)x"], body: event)
        #expect(wrong.hasPrefix("HTTP/1.1 401"), "\(wrong)")
        let basic = try Self.request(port: port, "POST", "/v1/track", headers: ["Authorization: Basic \(Self.token)"], body: event)
        #expect(basic.hasPrefix("HTTP/1.1 401"), "\(basic)")
        // Refused before its body is read or the size limit is told: no 100 Continue, no 413.
        let large = try Self.raw(
            port: port,
            "POST /v1/track HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 10000000\r\n\r\n")
        #expect(large.hasPrefix("HTTP/1.1 401") && !large.contains("100 Continue") && large.contains("Connection: close"), "\(large)")
        let status = try Self.request(port: port, "GET", "/status", headers: ["Authorization: Bearer \(Self.token)"])
        #expect(status.hasPrefix("HTTP/1.1 404"), "\(status)")
        let ndjson = try Self.raw(port: port, event + "\n")
        #expect(ndjson.hasPrefix("HTTP/1.1 400"), "\(ndjson)")
        #expect(try DaemonDeliveryTests().storedCount(daemon.storagePath) == 0)

        let good = try Self.request(port: port, "POST", "/v1/track", headers: ["Authorization: bearer \(Self.token)"], body: event)
        #expect(good.hasPrefix("HTTP/1.1 200") && good.contains(#""queued":true"#), "\(good)")
        #expect(try DaemonDeliveryTests().storedCount(daemon.storagePath) == 1)

        let scrape = try BlockingUnixSocket(path: daemon.socketPath)
        try scrape.write("GET /metrics HTTP/1.1\r\nHost: plunkd\r\n\r\n")
        let metrics = try #require(try scrape.readHTTPResponse()).body
        #expect(metrics.contains(#"plunkd_events_refused_total{reason="token"} 4"#), "\(metrics)")
        let text = try DaemonProcess.command(["status", "--socket", daemon.socketPath]).stdout
        #expect(text.contains("TCP:") && text.contains("127.0.0.1:\(port)"), "\(text)")
        #expect(!daemon.log.contains(Self.token), "\(daemon.log)")
        #expect(daemon.log.contains("TCP client refused: no Authorization header"), "\(daemon.log)")
    }

    @Test("SIGHUP rotates the tokens in ingest.tokens_file: the old one is refused, the new one admitted, without a restart")
    func tokenRotation() throws {
        let port = try OperateProcessTests.freePort()
        let directory = try DaemonProcess.makeScratchDirectory()
        let file = "\(directory)/tokens"
        let old = "old-token-aaaaaaaaaaaaaaaa"
        let new = "new-token-bbbbbbbbbbbbbbbb"
        try "# plunkd's local tokens\n\(old)\n".write(toFile: file, atomically: true, encoding: .utf8)
        chmod(file, 0o600)
        let daemon = try DaemonProcess(
            directory: directory,
            environment: ["PLUNKD_INGEST_LISTEN": "127.0.0.1:\(port)", "PLUNKD_INGEST_TOKENS_FILE": file])
        defer { daemon.cleanUp() }
        try daemon.waitUntilServing()
        let event = #"{"event":"e","email":"a@example.com"}"#
        func track(_ token: String) throws -> String {
            try Self.request(port: port, "POST", "/v1/track", headers: ["Authorization: Bearer \(token)"], body: event)
        }
        #expect(try track(old).hasPrefix("HTTP/1.1 200"))
        #expect(try track(new).hasPrefix("HTTP/1.1 401"))
        try "\(new)\n".write(toFile: file, atomically: true, encoding: .utf8)
        daemon.signal(SIGHUP)
        #expect(daemon.waitForLog(containing: "ingest tokens applied"), "\(daemon.log)")
        #expect(try track(old).hasPrefix("HTTP/1.1 401"))
        #expect(try track(new).hasPrefix("HTTP/1.1 200"))
        #expect(!daemon.log.contains(old) && !daemon.log.contains(new), "\(daemon.log)")
    }

    @Test("check-config refuses a listener without tokens, beyond loopback unless forced, and a short token, never showing it")
    func configurationRefusals() throws {
        func check(_ environment: [String: String]) throws -> (status: Int32, output: String) {
            let run = try DaemonProcess.command(["check-config"], environment: environment)
            return (run.status, run.stdout + run.stderr)
        }
        let noTokens = try check(["PLUNKD_INGEST_LISTEN": "127.0.0.1:18080"])
        #expect(noTokens.status != 0 && noTokens.output.contains("needs at least one token"), "\(noTokens.output)")
        let open = try check(["PLUNKD_INGEST_LISTEN": "0.0.0.0:18080", "PLUNKD_INGEST_TOKENS": Self.token])
        #expect(open.status != 0 && open.output.contains("ingest.listen_beyond_loopback"), "\(open.output)")
        let forced = try check([
            "PLUNKD_INGEST_LISTEN": "0.0.0.0:18080", "PLUNKD_INGEST_TOKENS": Self.token, "PLUNKD_INGEST_LISTEN_BEYOND_LOOPBACK": "true",
        ])
        #expect(forced.status == 0, "\(forced.output)")
        let short = try check(["PLUNKD_INGEST_LISTEN": "18080", "PLUNKD_INGEST_TOKENS": "\(Self.token),hunter2"])
        #expect(short.status != 0 && short.output.contains("token 2 is shorter than 16"), "\(short.output)")
        #expect(!short.output.contains("hunter2") && !short.output.contains(Self.token), "\(short.output)")
    }

    @Test("the listener's port already taken: start-up fails, naming ingest.listen")
    func portTaken() throws {
        let (fd, port) = try OperateProcessTests.boundLoopbackSocket(listening: true)
        defer { close(fd) }
        let daemon = try DaemonProcess(environment: ["PLUNKD_INGEST_LISTEN": "127.0.0.1:\(port)", "PLUNKD_INGEST_TOKENS": Self.token])
        defer { daemon.cleanUp() }
        #expect(daemon.waitForExit() == 1)
        #expect(daemon.log.contains("ingest.listen 127.0.0.1:\(port): cannot listen"), "\(daemon.log)")
    }

    /// One HTTP/1.1 request over loopback TCP; the whole answer as text.
    static func request(port: Int, _ method: String, _ path: String, headers: [String] = [], body: String = "") throws -> String {
        var text = "\(method) \(path) HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
        for header in headers { text += header + "\r\n" }
        if !body.isEmpty { text += "Content-Type: application/json\r\nContent-Length: \(body.utf8.count)\r\n" }
        return try raw(port: port, text + "\r\n" + body)
    }

    /// Sends `bytes` over loopback TCP, then reads until the server closes (10 s at most).
    static func raw(port: Int, _ bytes: String) throws -> String {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = UInt16(port).bigEndian
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard connected == 0 else { throw DaemonProcess.Failure(description: "cannot connect to 127.0.0.1:\(port)") }
        var timeout = timeval(tv_sec: 10, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        let request = Array(bytes.utf8)
        _ = request.withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
        var received: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            let count = recv(fd, &chunk, chunk.count, 0)
            if count <= 0 { break }
            received += chunk.prefix(count)
        }
        return String(decoding: received, as: UTF8.self)
    }
}
