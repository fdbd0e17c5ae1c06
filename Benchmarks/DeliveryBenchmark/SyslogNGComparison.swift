import Foundation
import NIOCore
import PlunkdTestSupport

#if canImport(Glibc)
    import Glibc
#endif

/// End to end beside syslog-ng (issue 14's comparison): 16 producers hand `events` JSON
/// lines to a Unix stream socket, and the daemon behind it forwards each as one POST to
/// the same in-process stand-in for Plunk. plunkd commits each line before its ack, and
/// the producers read the acks; syslog-ng takes a `unix-stream()` source into an `http()`
/// destination with `workers(16)` and a reliable disk buffer, and acknowledges nothing.
/// The time runs from the first line written to the last request's arrival; the CPU is
/// the daemon's own (every thread), from `/proc/<pid>/stat`.
enum SyslogNGComparison {
    struct Run {
        let events: Int
        let seconds: Double
        let cpu: Double
        var rate: Double { Double(events) / seconds }
        var cpuPer10k: Double { cpu / Double(events) * 10_000 }
    }

    static let binary = ["/usr/sbin/syslog-ng", "/usr/bin/syslog-ng"].first { FileManager.default.isExecutableFile(atPath: $0) }

    /// 16 producers, each writing its share in blocks of 100 lines; with `readsAcks`, each
    /// block's replies are read before the next block is written.
    static func produce(socketPath: String, events: Int, readsAcks: Bool) {
        let producers = 16
        let share = events / producers
        DispatchQueue.concurrentPerform(iterations: producers) { producer in
            guard let client = try? BlockingUnixSocket(path: socketPath) else { return }
            var written = 0
            while written < share {
                let block = min(100, share - written)
                let text = (written..<written + block).map { n in
                    let email = "user\((producer * share + n) % 1000)@example.com"
                    return #"{"event":"bench","email":"\#(email)","data":{"n":"\#(n)"}}"# + "\n"
                }.joined()
                guard (try? client.write(text)) != nil else { return }
                if readsAcks {
                    for _ in 0..<block { _ = try? client.readLine() }
                }
                written += block
            }
        }
    }

    static func waitForArrivals(_ fake: FakePlunk, _ count: Int, timeout: Double = 600) -> Double {
        let start = BenchmarkSupport.now()
        while fake.requestCount < count && BenchmarkSupport.now() - start < timeout { usleep(2_000) }
        return BenchmarkSupport.now()
    }

    /// plunkd on its defaults but for 16 in flight, sending to `front` (the stand-in, or
    /// the TLS front before it, trusted through `caFile`).
    static func plunkd(events: Int, stand: FakePlunk, front: URL, caFile: String?) throws -> Run {
        var environment = [
            "PLUNK_BASE_URL": front.absoluteString, "PLUNK_API_KEY": "pk_bench_key",
            "PLUNK_CONCURRENCY": "16", "PLUNKD_LOG_LEVEL": "warning",
        ]
        environment["PLUNK_CA_FILE"] = caFile
        let daemon = try DaemonProcess(environment: environment)
        defer { daemon.cleanUp() }
        try daemon.waitUntilServing(timeout: 60)
        let before = stand.requestCount
        let cpuStart = cpuSeconds(pid: daemon.pid)
        let start = BenchmarkSupport.now()
        produce(socketPath: daemon.socketPath, events: events, readsAcks: true)
        let end = waitForArrivals(stand, before + events)
        return Run(events: stand.requestCount - before, seconds: end - start, cpu: cpuSeconds(pid: daemon.pid) - cpuStart)
    }

    static func syslogNG(events: Int, stand: FakePlunk, front: URL, caFile: String?, binary: String) throws -> Run {
        let directory = try DaemonProcess.makeScratchDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let socket = "\(directory)/syslog.sock"
        try FileManager.default.createDirectory(atPath: "\(directory)/buffer", withIntermediateDirectories: true)
        let config = """
            @version: 3.38
            options { threaded(yes); stats-freq(0); keep-hostname(yes); };
            source s_apps { unix-stream("\(socket)" flags(no-parse) max-connections(64) log-iw-size(6400)); };
            destination d_plunk {
              http(url("\(front.absoluteString)/track") method("POST")\(caFile.map { " tls(ca-file(\"\($0)\") peer-verify(yes))" } ?? "")
                   headers("Content-Type: application/json", "Authorization: Bearer pk_bench_key")
                   body("${MSG}") workers(16)
                   disk-buffer(reliable(yes) dir("\(directory)/buffer") disk-buf-size(1073741824) mem-buf-size(16777216)));
            };
            log { source(s_apps); destination(d_plunk); };
            """
        try config.write(toFile: "\(directory)/syslog-ng.conf", atomically: true, encoding: .utf8)
        let pid = try SpawnedCommand.start(
            binary,
            [
                "-F", "--no-caps", "-f", "\(directory)/syslog-ng.conf", "-R", "\(directory)/persist", "-p", "\(directory)/pid",
                "-c", "\(directory)/ctl",
            ],
            environment: ["PATH": "/usr/sbin:/usr/bin:/bin"], outputPath: "\(directory)/syslog-ng.log")
        defer {
            kill(pid, SIGTERM)
            if SpawnedCommand.reap(pid, within: 20) == nil {
                kill(pid, SIGKILL)
                SpawnedCommand.reap(pid, within: 10)
            }
        }
        let ready = BenchmarkSupport.now()
        while !FileManager.default.fileExists(atPath: socket) && BenchmarkSupport.now() - ready < 30 { usleep(20_000) }
        let before = stand.requestCount
        let cpuStart = cpuSeconds(pid: pid)
        let start = BenchmarkSupport.now()
        produce(socketPath: socket, events: events, readsAcks: false)
        let end = waitForArrivals(stand, before + events, timeout: 300)
        return Run(events: stand.requestCount - before, seconds: end - start, cpu: cpuSeconds(pid: pid) - cpuStart)
    }

    /// Prints one line per answer delay, plunkd's figures beside syslog-ng's. With
    /// `overTLS`, both reach the stand-in through `TLSFront` (nginx: TLS 1.3, h2 or
    /// HTTP/1.1 by ALPN), plunkd on its default `auto`.
    static func compare(events: Int, overTLS: Bool = false) async throws {
        guard let binary else {
            BenchmarkSupport.show("beside syslog-ng", "skipped: syslog-ng not installed (apt-get install syslog-ng-core syslog-ng-mod-http)")
            return
        }
        if overTLS && TLSFront.binary == nil {
            BenchmarkSupport.show("beside syslog-ng over TLS", "skipped: nginx not installed (apt-get install nginx-light)")
            return
        }
        let scratch = try DaemonProcess.makeScratchDirectory()
        defer { try? FileManager.default.removeItem(atPath: scratch) }
        for (label, delay) in [("at once", TimeAmount.zero), ("after 20 ms", .milliseconds(20))] {
            let stand = try await FakePlunk(keepsRequests: false) { _ in
                .answer(status: 200, body: #"{"success":true,"contact":"c","event":"e","timestamp":"2026-12-03T00:00:00Z"}"#, delay: delay)
            }
            let front = overTLS ? try TLSFront(standPort: stand.port, directory: scratch) : nil
            if overTLS && front == nil {
                BenchmarkSupport.show("beside syslog-ng over TLS", "skipped: nginx did not start (\(scratch)/nginx-tls.err)")
                await stand.stop()
                return
            }
            let url = front?.url ?? stand.baseURL
            let caFile = front?.certificates.caFile
            let ours = try plunkd(events: events, stand: stand, front: url, caFile: caFile)
            let theirs = try syslogNG(events: events, stand: stand, front: url, caFile: caFile, binary: binary)
            front?.stop()
            BenchmarkSupport.show(
                "end to end\(overTLS ? " over TLS" : ""), 16 producers, \(events) events, answers \(label)",
                String(
                    format: "plunkd %5.0f/s, %.2f CPU s per 10,000; syslog-ng %5.0f/s, %.2f CPU s per 10,000 (plunkd: %.2f× the rate, %.2f× the CPU)",
                    ours.rate, ours.cpuPer10k, theirs.rate, theirs.cpuPer10k, ours.rate / theirs.rate, ours.cpuPer10k / theirs.cpuPer10k))
            await stand.stop()
        }
    }
}
