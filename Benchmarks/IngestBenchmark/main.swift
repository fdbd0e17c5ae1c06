// Ingest benchmark: run with `swift run -c release plunkd-ingest-bench`.
//
// Starts the release `plunkd` built next to this binary in a scratch directory and
// measures, in one run so the ratios are comparable on a noisy machine:
//   - single-row fsync'd SQLite commits (the floor for one client, one event at a time)
//   - one client sending one event at a time and waiting for each ack
//   - 16 clients pipelining NDJSON
//   - 16 HTTP keep-alive clients, one request at a time each
//   - ack latency p50/p99 at a steady offered 5,000 events/s (a 5 s window per round,
//     with the disk's slowest fsync in each window beside it)
//   - the daemon's peak RSS
// Each rate is the median of `--rounds` rounds (default 3); the single-client ratio is
// the median over 5 × rounds alternating blocks of 400 events.
import Foundation
import GRDB
import PlunkdTestSupport

#if canImport(Glibc)
    import Glibc
#endif

let option = BenchmarkSupport.option
let rounds = option("--rounds", 3)

func median(_ values: [Double]) -> Double {
    let sorted = values.sorted()
    return sorted.isEmpty ? 0 : sorted[sorted.count / 2]
}

func percentile(_ sorted: [Double], _ p: Double) -> Double {
    sorted.isEmpty ? 0 : sorted[min(sorted.count - 1, Int(Double(sorted.count) * p))]
}

func eventLine(_ n: Int, client: Int) -> String {
    "{\"event\":\"bench\",\"email\":\"user\(client)-\(n % 500)@example.com\",\"data\":{\"n\":\"\(n)\"}}\n"
}

/// Runs `body` on `count` threads at once and waits for all.
func concurrently(_ count: Int, _ body: @escaping @Sendable (Int) -> Void) {
    let group = DispatchGroup()
    for index in 0..<count {
        group.enter()
        Thread {
            body(index)
            group.leave()
        }.start()
    }
    // Every producer's loop is bounded in count; a stuck one fails the run, not hangs it.
    guard group.wait(timeout: .now() + 600) == .success else { fatalError("producers did not finish within 600 s") }
}

// MARK: Scenarios

/// The floor for one client: one row per fsync'd transaction (WAL, synchronous = FULL),
/// in a tight loop, with no socket and no other thread involved.
final class SingleRowCommits {
    let pool: DatabasePool
    let body = Data(eventLine(1, client: 1).utf8)

    init(path: String) throws {
        pool = try DatabasePool(path: path)
        try pool.writeWithoutTransaction { db in
            try db.execute(sql: "PRAGMA synchronous = FULL")
            try db.execute(sql: "CREATE TABLE t (seq INTEGER PRIMARY KEY, id TEXT, contact TEXT, body BLOB, received_at REAL, due_at REAL)")
        }
    }

    func rate(count: Int) throws -> Double {
        let start = BenchmarkSupport.now()
        for n in 0..<count {
            try pool.write { db in
                try db.execute(
                    sql: "INSERT INTO t (id, contact, body, received_at, due_at) VALUES (?, ?, ?, ?, ?)",
                    arguments: [UUID().uuidString, "user\(n)@example.com", body, 1.0, 1.0])
            }
        }
        return Double(count) / (BenchmarkSupport.now() - start)
    }
}

func oneAtATime(client: BlockingUnixSocket, count: Int) throws -> Double {
    let start = BenchmarkSupport.now()
    for n in 0..<count {
        try client.write(eventLine(n, client: 0))
        guard let reply = try client.readLine(), reply.hasPrefix("{\"ok\":true") else {
            throw BlockingUnixSocket.Failure(description: "unexpected reply")
        }
    }
    return Double(count) / (BenchmarkSupport.now() - start)
}

/// Doubles shared between a writer and a reader thread.
final class SharedDoubles: @unchecked Sendable {
    private let lock = NSLock()
    private var values: [Double]
    init(count: Int) { values = [Double](repeating: 0, count: count) }
    subscript(index: Int) -> Double {
        get {
            lock.lock()
            defer { lock.unlock() }
            return values[index]
        }
        set {
            lock.lock()
            values[index] = newValue
            lock.unlock()
        }
    }
    func append(_ more: [Double]) {
        lock.lock()
        values += more
        lock.unlock()
    }
    var all: [Double] {
        lock.lock()
        defer { lock.unlock() }
        return values
    }
}

final class Counter: @unchecked Sendable {
    private let lock = NSLock()
    private var value = 0
    func add(_ n: Int) {
        lock.lock()
        value += n
        lock.unlock()
    }
    var total: Int {
        lock.lock()
        defer { lock.unlock() }
        return value
    }
}

func pipelinedNDJSON(socket: String, clients: Int, perClient: Int) throws -> Double {
    let acked = Counter()
    let start = BenchmarkSupport.now()
    concurrently(clients) { index in
        guard let client = try? BlockingUnixSocket(path: socket) else { return }
        let writer = Thread {
            var chunk = ""
            for n in 0..<perClient {
                chunk += eventLine(n, client: index)
                if chunk.utf8.count > 16_384 || n == perClient - 1 {
                    try? client.write(chunk)
                    chunk = ""
                }
            }
        }
        writer.start()
        var ok = 0
        for _ in 0..<perClient {
            guard let line = try? client.readLine() else { break }
            if line.hasPrefix("{\"ok\":true") { ok += 1 }
        }
        acked.add(ok)
    }
    let elapsed = BenchmarkSupport.now() - start
    guard acked.total == clients * perClient else {
        fatalError("only \(acked.total) of \(clients * perClient) pipelined events were acknowledged")
    }
    return Double(acked.total) / elapsed
}

func httpKeepAlive(socket: String, clients: Int, perClient: Int) throws -> Double {
    let acked = Counter()
    let start = BenchmarkSupport.now()
    concurrently(clients) { index in
        guard let client = try? BlockingUnixSocket(path: socket) else { return }
        var ok = 0
        for n in 0..<perClient {
            let body = eventLine(n, client: index).dropLast()
            let request = "POST /v1/track HTTP/1.1\r\nHost: plunkd\r\nContent-Type: application/json\r\nContent-Length: \(body.utf8.count)\r\n\r\n\(body)"
            guard (try? client.write(request)) != nil, let response = try? client.readHTTPResponse() else { break }
            if response.status == 200 { ok += 1 }
        }
        acked.add(ok)
    }
    let elapsed = BenchmarkSupport.now() - start
    guard acked.total == clients * perClient else {
        fatalError("only \(acked.total) of \(clients * perClient) HTTP events were acknowledged")
    }
    return Double(acked.total) / elapsed
}

/// Offers `rate` events/s for `seconds` over `connections` connections on a fixed
/// schedule (open loop: a slow ack does not slow the offering), and returns sorted
/// latencies from the scheduled send time to the ack, in seconds.
func steadyLatencies(socket: String, rate: Int, seconds: Double, connections: Int) throws -> [Double] {
    let perConnection = Int(Double(rate) * seconds) / connections
    let interval = Double(connections) / Double(rate)
    let all = SharedDoubles(count: 0)
    let begin = BenchmarkSupport.now() + 0.05
    concurrently(connections) { index in
        guard let client = try? BlockingUnixSocket(path: socket) else { return }
        let offset = interval * Double(index) / Double(connections)
        let scheduled = SharedDoubles(count: perConnection)
        let writer = Thread {
            for n in 0..<perConnection {
                let due = begin + offset + Double(n) * interval
                let wait = due - BenchmarkSupport.now()
                if wait > 0 { usleep(useconds_t(wait * 1e6)) }
                scheduled[n] = due
                try? client.write(eventLine(n, client: index))
            }
        }
        writer.start()
        var latencies: [Double] = []
        latencies.reserveCapacity(perConnection)
        for n in 0..<perConnection {
            guard let line = try? client.readLine(), line.hasPrefix("{\"ok\":true") else { break }
            let acked = BenchmarkSupport.now()
            while scheduled[n] == 0 { usleep(10) }
            latencies.append(acked - scheduled[n])
        }
        all.append(latencies)
    }
    return all.all.sorted()
}

/// fsyncs a small file next to the store every 20 ms while a latency window runs, so a
/// p99 that the disk caused (this VM's shared disk stalls now and then) can be told
/// from one that plunkd caused: both show in the same window.
final class DiskProbe: @unchecked Sendable {
    private let lock = NSLock()
    private var durations: [Double] = []
    private var running = true
    private let done = DispatchSemaphore(value: 0)

    init(path: String) {
        Thread { [self] in
            let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
            var block = [UInt8](repeating: 0x2A, count: 4096)
            while lock.withLock({ running }) {
                let start = BenchmarkSupport.now()
                _ = pwrite(fd, &block, block.count, 0)
                _ = fdatasync(fd)
                let took = BenchmarkSupport.now() - start
                lock.withLock { durations.append(took) }
                usleep(20_000)
            }
            close(fd)
            done.signal()
        }.start()
    }

    /// Stops the probe; returns the slowest fsync it saw, in seconds.
    func stop() -> Double {
        lock.withLock { running = false }
        guard done.wait(timeout: .now() + 60) == .success else { fatalError("the fsync probe did not stop within 60 s") }
        return lock.withLock { durations.max() ?? 0 }
    }
}

// MARK: Run
let directory = try DaemonProcess.makeScratchDirectory()
defer { try? FileManager.default.removeItem(atPath: directory) }
let daemon = try DaemonProcess(directory: directory, environment: ["PLUNKD_LOG_LEVEL": "warning"])
defer { daemon.cleanUp(removeDirectory: false) }
try daemon.waitUntilServing()

/// Samples the daemon's private (anonymous) resident memory every 20 ms. VmHWM, the
/// kernel's peak RSS, also counts the clean, shared, file-backed pages of the Swift
/// runtime, Foundation and the binary's own code (about 29 MB here, the same for every
/// Swift daemon and reclaimable); the private part is what grows with load.
final class PrivateMemorySampler: @unchecked Sendable {
    private let lock = NSLock()
    private var peak = 0
    private var running = true
    init(pid: Int32) {
        Thread { [self] in
            while lock.withLock({ running }) {
                if let status = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8),
                    let line = status.split(separator: "\n").first(where: { $0.hasPrefix("RssAnon:") }),
                    let kilobytes = line.split(separator: " ").dropFirst().first.flatMap({ Int($0) })
                {
                    lock.withLock { peak = max(peak, kilobytes * 1024) }
                }
                usleep(20_000)
            }
        }.start()
    }
    func stop() -> Int {
        lock.withLock {
            running = false
            return peak
        }
    }
}
let privateMemory = PrivateMemorySampler(pid: daemon.pid)

let machine = BenchmarkSupport.machine
print("plunkd ingest benchmark: \(rounds) rounds, medians; machine: \(machine)")

// The floor and the single client alternate in short blocks, so that the machine's
// noise (shared disk, neighbours) hits both alike; their ratio is taken per pair.
var baseline: [Double] = []
var single: [Double] = []
var ratios: [Double] = []
let floor = try SingleRowCommits(path: "\(directory)/baseline.sqlite")
let singleClient = try BlockingUnixSocket(path: daemon.socketPath)
for _ in 0..<(rounds * 5) {
    let floorRate = try floor.rate(count: 400)
    let singleRate = try oneAtATime(client: singleClient, count: 400)
    baseline.append(floorRate)
    single.append(singleRate)
    ratios.append(singleRate / floorRate)
}

var pipelined: [Double] = []
var http: [Double] = []
for _ in 0..<rounds {
    pipelined.append(try pipelinedNDJSON(socket: daemon.socketPath, clients: 16, perClient: 10_000))
    http.append(try httpKeepAlive(socket: daemon.socketPath, clients: 16, perClient: 1_000))
}
// Latency: one 5 s window per round; medians over the rounds, like the rates.
var p50s: [Double] = []
var p99s: [Double] = []
var slowestDisk: [Double] = []
var latencyCount = 0
for round in 0..<rounds {
    let probe = DiskProbe(path: "\(directory)/probe-\(round)")
    let latencies = try steadyLatencies(socket: daemon.socketPath, rate: 5000, seconds: 5, connections: 8)
    slowestDisk.append(probe.stop())
    p50s.append(percentile(latencies, 0.5))
    p99s.append(percentile(latencies, 0.99))
    latencyCount += latencies.count
}
let rss = daemon.peakResidentBytes() ?? 0
let privatePeak = privateMemory.stop()

let show = BenchmarkSupport.show
show("single-row fsync'd SQLite commits (floor)", String(format: "%8.0f commits/s", median(baseline)))
show(
    "1 client, one event at a time",
    String(format: "%8.0f events/s  (%.0f%% of the floor, median of %d paired blocks)", median(single), 100 * median(ratios), ratios.count))
show("16 clients pipelining NDJSON", String(format: "%8.0f events/s", median(pipelined)))
show("16 HTTP keep-alive clients", String(format: "%8.0f events/s", median(http)))
show(
    "ack latency, 5,000 events/s offered (\(latencyCount) events)",
    String(format: "p50 %.2f ms, p99 %.2f ms", median(p50s) * 1000, median(p99s) * 1000))
show(
    "  p99 of each window; the disk's slowest 4 KiB fsync in it",
    zip(p99s, slowestDisk).map { String(format: "%.2f; %.1f ms", $0 * 1000, $1 * 1000) }.joined(separator: "  "))
show("daemon peak RSS (VmHWM)", String(format: "%8.1f MB", Double(rss) / 1_000_000))
show("  of which private (peak anonymous RSS, sampled)", String(format: "%8.1f MB", Double(privatePeak) / 1_000_000))
