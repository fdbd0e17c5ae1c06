// Delivery benchmark: `swift build -c release && .build/release/plunkd-delivery-bench`.
//
// Fills an outbox with a backlog, starts the release `plunkd` on it pointed at a loopback
// HTTP server, and times the drain:
//   - a stand-in for Plunk answering 200 after 20 ms, concurrency 16
//   - nginx answering a static 200 (Debian's nginx-light; skipped when nginx is absent)
//   - an instant stand-in, with a small and a large backlog: per-event cost and peak RSS
//   - a far-away Plunk (150 ms) that serves 32 requests at a time, with auto and with a
//     fixed 8: the rate against its capacity, and the time to reach 90 % of it
//   - a stand-in rate-limited as v2 can be (100/s, burst 200, RateLimit-* headers), 64 in
//     flight: the sustained rate and the share of requests answered 429
//   - over TLS against a stand-in offering h2: HTTP/2 (auto) and HTTP/1.1 (http1) pinned
//   - end to end beside syslog-ng, when it is installed (`SyslogNGComparison`): 16
//     producers, answers at once and after 20 ms, events/s and CPU s per 10,000 of each
// Options: --large N (default 1,000,000), --small N (default 10,000), --compare N
// (events of the syslog-ng comparison, default 20,000), --only-compare N (that alone, N rounds),
// --only-compare-tls N (the same through a TLS front, nginx, N rounds),
// --only-tls N (the TLS comparison alone, N rounds, medians last), --only-outage N (a
// partial outage through the socket beside a healthy run, N rounds; --outage-events N,
// default 10,000).
import Foundation
import GRDB
import NIOCore
import NIOHTTP1
import NIOPosix
import PlunkdCore
import PlunkdTestSupport
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

let option = BenchmarkSupport.option
let largeBacklog = option("--large", 1_000_000)
let smallBacklog = option("--small", 10_000)

/// The shared stand-in for Plunk, answering every request with 200 after `delay`, keeping
/// no requests (a million of them would weigh on the machine being measured).
func standIn(delay: TimeAmount) async throws -> FakePlunk {
    let body = #"{"success":true,"contact":"c","event":"e","timestamp":"2026-11-29T00:00:00Z"}"#
    return try await FakePlunk(keepsRequests: false) { _ in .answer(status: 200, body: body, delay: delay) }
}

/// Starts nginx answering a static 200 on a free loopback port, or returns nil without
/// nginx. It dies with the benchmark however that ends, and is recorded for Tests/sweep.
func startNginx(directory: String) -> (port: Int, process: SpawnedProcess)? {
    guard let binary = ["/usr/sbin/nginx", "/usr/bin/nginx"].first(where: { FileManager.default.isExecutableFile(atPath: $0) }) else {
        return nil
    }
    let port = 20000 + Int(getpid() % 20000)
    let config = """
        worker_processes 1; daemon off; pid \(directory)/nginx.pid; error_log \(directory)/nginx.err;
        events { worker_connections 1024; }
        http { access_log off; keepalive_requests 1000000;
          server { listen 127.0.0.1:\(port);
            location / { default_type application/json; return 200 '{"success":true}'; } } }
        """
    try? config.write(toFile: "\(directory)/nginx.conf", atomically: true, encoding: .utf8)
    guard
        let pid = try? SpawnedCommand.start(
            binary, ["-c", "\(directory)/nginx.conf", "-p", directory], outputPath: "\(directory)/nginx.out", endsWithCaller: true)
    else { return nil }
    let process = SpawnedProcess(pid: pid)
    usleep(300_000)
    return process.isRunning ? (port, process) : nil
}

/// Fills a fresh outbox with `count` events over 1,000 contacts, in big transactions.
func fillBacklog(path: String, count: Int) throws {
    let outbox = try Outbox(path: path)
    var done = 0
    while done < count {
        let batch = min(20_000, count - done)
        try outbox.enqueue(
            (done..<done + batch).map { n in
                let email = "user\(n % 1000)@example.com"
                return AcceptedEvent(contact: email, body: Data(#"{"event":"bench","email":"\#(email)","data":{"n":"\#(n)"}}"#.utf8))
            })
        done += batch
    }
}

func cpuSeconds(pid: Int32) -> Double {
    guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
        let fields = stat.split(separator: ")").last?.split(separator: " "), fields.count > 13
    else { return 0 }
    return (Double(fields[11])! + Double(fields[12])!) / Double(sysconf(Int32(_SC_CLK_TCK)))
}

func delivered(path: String) -> Int {
    (try? DatabaseQueue(
        path: path,
        configuration: {
            var c = Configuration()
            c.readonly = true
            return c
        }()
    ).read {
        try Int.fetchOne($0, sql: "SELECT value FROM counter WHERE name = 'delivered_total'")
    }) ?? nil ?? 0
}

struct Drain {
    let events: Int
    let seconds: Double
    let cpu: Double
    let peakRSS: Int
    var rate: Double { Double(events) / seconds }
    var cpuPer10k: Double { cpu / Double(events) * 10_000 }
}

/// Starts plunkd on a prefilled backlog and waits until all of it is delivered, or for
/// `window` seconds: a steady rate, without the tail of retries still waiting their backoff.
func drain(backlog: Int, port: Int, concurrency: Int, window: Double? = nil, extra: [String: String] = [:]) throws -> Drain {
    let directory = try DaemonProcess.makeScratchDirectory()
    defer { try? FileManager.default.removeItem(atPath: directory) }
    try fillBacklog(path: "\(directory)/outbox.sqlite", count: backlog)
    let daemon = try DaemonProcess(
        directory: directory,
        environment: [
            "PLUNK_BASE_URL": "http://127.0.0.1:\(port)/v1", "PLUNK_API_KEY": "pk_bench_key",
            "PLUNK_CONCURRENCY": String(concurrency), "PLUNKD_LOG_LEVEL": "warning",
            "PLUNKD_STORAGE_MAX_PENDING": String(max(5_000_000, backlog * 2)),
        ].merging(extra) { _, new in new })
    defer { daemon.cleanUp(removeDirectory: false) }
    try daemon.waitUntilServing(timeout: 300)
    let start = BenchmarkSupport.now()
    let cpuStart = cpuSeconds(pid: daemon.pid)
    let deadline = start + (window ?? 3600)
    while delivered(path: daemon.storagePath) < backlog && BenchmarkSupport.now() < deadline {
        usleep(50_000)
    }
    let seconds = BenchmarkSupport.now() - start
    let result = Drain(
        events: delivered(path: daemon.storagePath), seconds: seconds,
        cpu: cpuSeconds(pid: daemon.pid) - cpuStart, peakRSS: daemon.peakResidentBytes() ?? 0)
    return result
}

let show = BenchmarkSupport.show

let machine = BenchmarkSupport.machine
print("plunkd delivery benchmark; machine: \(machine)")

/// Over TLS (a test CA), a stand-in offering h2 and answering at once: HTTP/2 (`auto`,
/// every request a stream of one connection) against HTTP/1.1 pinned (16 connections),
/// alternating, `rounds` times each; the medians are printed last.
func tlsComparison(backlog: Int, rounds: Int) async throws {
    let certificates = try TestCertificates()
    defer { certificates.remove() }
    let tlsStand = try await FakePlunk(tls: try certificates.serverTLS(.trusted), offersHTTP2: true, keepsRequests: false) { _ in
        .answer(status: 200, body: #"{"success":true,"contact":"c","event":"e","timestamp":"2026-12-03T00:00:00Z"}"#)
    }
    var results: [String: [Drain]] = [:]
    for _ in 0..<rounds {
        for version in ["auto", "http1"] {
            let tls = try drain(
                backlog: backlog, port: tlsStand.port, concurrency: 16,
                extra: [
                    "PLUNK_BASE_URL": tlsStand.baseURL.absoluteString, "PLUNK_CA_FILE": certificates.caFile,
                    "PLUNK_HTTP_VERSION": version,
                ])
            results[version, default: []].append(tls)
            show(
                "TLS stand-in at once, \(version == "auto" ? "HTTP/2 (auto)" : "HTTP/1.1 (http1)"), 16, \(backlog)",
                String(
                    format: "%7.0f events/s, %.2f CPU s per 10,000, peak RSS %.1f MB", tls.rate, tls.cpuPer10k,
                    Double(tls.peakRSS) / 1e6))
        }
    }
    if rounds > 1 {
        for (version, drains) in results.sorted(by: { $0.key < $1.key }) {
            let median = { (values: [Double]) in values.sorted()[values.count / 2] }
            show(
                "median of \(rounds), TLS, \(version)",
                String(
                    format: "%7.0f events/s, %.2f CPU s per 10,000", median(drains.map(\.rate)), median(drains.map(\.cpuPer10k))))
        }
    }
    await tlsStand.stop()
}

if option("--only-tls", 0) > 0 {
    try await tlsComparison(backlog: smallBacklog, rounds: option("--only-tls", 0))
    exit(0)
}

if option("--only-outage", 0) > 0 {
    try await PartialOutage.compare(events: option("--outage-events", 10_000), rounds: option("--only-outage", 0))
    exit(0)
}

if option("--only-compare-tls", 0) > 0 {
    for _ in 0..<option("--only-compare-tls", 0) { try await SyslogNGComparison.compare(events: option("--compare", 20_000), overTLS: true) }
    exit(0)
}
if option("--only-compare", 0) > 0 {
    for _ in 0..<option("--only-compare", 0) { try await SyslogNGComparison.compare(events: option("--compare", 20_000)) }
    exit(0)
}

let slow = try await standIn(delay: .milliseconds(20))
let slowDrain = try drain(backlog: 5_000, port: slow.port, concurrency: 16)
show("stand-in answering after 20 ms, concurrency 16", String(format: "%7.0f events/s (%.0f%% of 16 / 0.020 s)", slowDrain.rate, slowDrain.rate / 800 * 100))

// A partial outage: 30 % of requests answered 500 (chosen by a hash of the request's
// number, so every run fails the same ones), the rest 200, all after 20 ms.
let flaky = try await FakePlunk(keepsRequests: false) { request in
    let failing = ((UInt64(request.index) &* 0x9E37_79B9_7F4A_7C15) >> 32) % 100 < 30
    return failing
        ? FakePlunk.htmlPage(500)
        : .answer(status: 200, body: #"{"success":true,"contact":"c","event":"e","timestamp":"2026-11-29T00:00:00Z"}"#, delay: .milliseconds(20))
}
// Both over the same 8 s of a backlog larger than they can drain in it.
let healthyWindow = try drain(backlog: 20_000, port: slow.port, concurrency: 16, window: 8)
let flakyWindow = try drain(backlog: 20_000, port: flaky.port, concurrency: 16, window: 8)
show(
    "30 % answered 500 at once, 20 ms answers, 16, 8 s",
    String(format: "%7.0f events/s (%.0f%% of %.0f events/s healthy)", flakyWindow.rate, flakyWindow.rate / healthyWindow.rate * 100, healthyWindow.rate))

// Adaptive concurrency against a far-away Plunk with a capacity: 32 workers taking
// 150 ms per request, first come first served; a request arriving while all are busy
// waits in line. So 213 events/s at most, and a round trip grows with the queue.
let farWorkers = Mutex<(free: [Date], answers: [Date])>(([Date](repeating: .distantPast, count: 32), []))
let far = try await FakePlunk(keepsRequests: false) { _ in
    let now = Date()
    let done = farWorkers.withLock { state in
        let worker = state.free.indices.min { state.free[$0] < state.free[$1] }!
        let done = max(now, state.free[worker]).addingTimeInterval(0.150)
        state.free[worker] = done
        state.answers.append(done)
        return done
    }
    return .answer(status: 200, body: #"{"success":true}"#, delay: .nanoseconds(Int64(done.timeIntervalSince(now) * 1e9)))
}
let farCapacity = 32 / 0.150
for (label, concurrency) in [("auto", "auto"), ("fixed 8", "8")] {
    farWorkers.withLock { $0 = ([Date](repeating: .distantPast, count: 32), []) }
    _ = try drain(backlog: 20_000, port: far.port, concurrency: 0, window: 15, extra: ["PLUNK_CONCURRENCY": concurrency])
    let answers = farWorkers.withLock { $0.answers }.sorted()
    guard let first = answers.first else { continue }
    var perSecond = [Int](repeating: 0, count: 16)
    for at in answers { perSecond[min(15, Int(at.timeIntervalSince(first)))] += 1 }
    let reached = perSecond.firstIndex { Double($0) >= 0.9 * farCapacity }
    let steady = Double(perSecond[5..<14].reduce(0, +)) / 9
    show(
        "150 ms, 32 at a time (\(Int(farCapacity))/s), \(label)",
        String(
            format: "%7.0f events/s from 5 s on (%.0f%% of capacity), 90%% reached %@", steady, steady / farCapacity * 100,
            reached.map { "in second \($0 + 1)" } ?? "never"))
}

// Pacing: 20 s of a backlog larger than the limiter lets through. The first 200 events
// are the limiter's burst; the rate after them is what the limit allows.
let limiter = RateLimitedPlunk(rate: 100, burst: 200)
let limited = try await FakePlunk(keepsRequests: false) { _ in limiter.answer(delay: .milliseconds(20)) }
_ = try drain(backlog: 5_000, port: limited.port, concurrency: 64, window: 20)
let sustained = limiter.acceptedAt.dropFirst(200)
let sustainedRate = Double(sustained.count - 1) / max(0.001, sustained.last!.timeIntervalSince(sustained.first!))
show(
    "rate-limited stand-in (100/s, burst 200), 20 ms, 64, 20 s",
    String(
        format: "%7.1f events/s after the burst, %.2f%% of %d requests answered 429", sustainedRate,
        Double(limiter.refused) / Double(max(1, limiter.accepted + limiter.refused)) * 100, limiter.accepted + limiter.refused))

let scratch = try DaemonProcess.makeScratchDirectory()
defer { try? FileManager.default.removeItem(atPath: scratch) }
if let nginx = startNginx(directory: scratch) {
    defer {
        kill(nginx.process.pid, SIGTERM)
        if !Poll.blockingUntil(timeout: 10, { !nginx.process.isRunning }) { kill(nginx.process.pid, SIGKILL) }
    }
    let fast = try drain(backlog: 50_000, port: nginx.port, concurrency: 16)
    show("nginx static 200, concurrency 16", String(format: "%7.0f events/s, %.2f CPU s per 10,000", fast.rate, fast.cpuPer10k))
} else {
    show("nginx static 200", "skipped: nginx not installed (apt-get install nginx-light)")
}

try await tlsComparison(backlog: smallBacklog, rounds: 1)

let instant = try await standIn(delay: .zero)
let small = try drain(backlog: smallBacklog, port: instant.port, concurrency: 16)
let large = try drain(backlog: largeBacklog, port: instant.port, concurrency: 16)
show(
    "instant stand-in, \(smallBacklog)-event backlog",
    String(format: "%7.0f events/s, %.2f CPU s per 10,000, peak RSS %.1f MB", small.rate, small.cpuPer10k, Double(small.peakRSS) / 1e6))
show(
    "instant stand-in, \(largeBacklog)-event backlog",
    String(format: "%7.0f events/s, %.2f CPU s per 10,000, peak RSS %.1f MB", large.rate, large.cpuPer10k, Double(large.peakRSS) / 1e6))
show(
    "per-event cost, large vs small backlog",
    String(format: "%+.0f%% wall, %+.0f%% CPU", (small.rate / large.rate - 1) * 100, (large.cpuPer10k / small.cpuPer10k - 1) * 100))

try await SyslogNGComparison.compare(events: option("--compare", 20_000))
try await SyslogNGComparison.compare(events: option("--compare", 20_000), overTLS: true)
