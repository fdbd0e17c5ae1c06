import Foundation
import NIOConcurrencyHelpers
import PlunkdTestSupport

#if canImport(Glibc)
    import Glibc
#endif

/// Samples one daemon's resident memory, open descriptors and threads at a fixed interval,
/// for the long soak's claim that none of them grows while events flow and Plunk fails.
final class ResourceWatch: Sendable {
    struct Sample: Sendable {
        var at: Double
        var residentKB: Int
        var anonymousKB: Int
        var descriptors: Int
        var threads: Int
    }

    private let pid: Int32
    private let interval: Double
    private let taken = NIOLockedValueBox<[Sample]>([])
    private let running = NIOLockedValueBox(true)

    init(pid: Int32, interval: Double) {
        self.pid = pid
        self.interval = interval
    }

    func start() {
        let started = BenchmarkSupport.now()
        let thread = Thread { [self] in
            while isRunning {
                if let sample = Self.sample(pid: pid, at: BenchmarkSupport.now() - started) {
                    taken.withLockedValue { $0.append(sample) }
                    print(
                        "  t=\(Int(sample.at)) s  rss \(sample.residentKB / 1024) MB (anon \(sample.anonymousKB / 1024) MB)  fds \(sample.descriptors)  threads \(sample.threads)"
                    )
                }
                var left = interval
                while left > 0 && isRunning {
                    usleep(200_000)
                    left -= 0.2
                }
            }
        }
        thread.start()
    }

    func stop() { running.withLockedValue { $0 = false } }

    var samples: [Sample] { taken.withLockedValue { $0 } }

    private var isRunning: Bool { running.withLockedValue { $0 } }

    static func sample(pid: Int32, at: Double) -> Sample? {
        guard let status = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8) else { return nil }
        func field(_ name: String) -> Int {
            for line in status.split(separator: "\n") where line.hasPrefix(name + ":") {
                return line.split(whereSeparator: \.isWhitespace).compactMap { Int($0) }.first ?? 0
            }
            return 0
        }
        let descriptors = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/fd").count) ?? 0
        return Sample(at: at, residentKB: field("VmRSS"), anonymousKB: field("RssAnon"), descriptors: descriptors, threads: field("Threads"))
    }

    /// Growth between the run's second quarter (after warm-up: caches, the store's pages,
    /// connection pools reach their size) and its last quarter, as medians, so one busy
    /// moment does not decide it. Empty when too few samples were taken to judge.
    func growth() -> (residentKB: Int, anonymousKB: Int, descriptors: Int, threads: Int)? {
        let all = samples
        guard all.count >= 8 else { return nil }
        let quarter = all.count / 4
        let early = Array(all[quarter..<(2 * quarter)])
        let late = Array(all[(all.count - quarter)...])
        func median(_ samples: [Sample], _ value: (Sample) -> Int) -> Int {
            let sorted = samples.map(value).sorted()
            return sorted[sorted.count / 2]
        }
        return (
            median(late, \.residentKB) - median(early, \.residentKB), median(late, \.anonymousKB) - median(early, \.anonymousKB),
            median(late, \.descriptors) - median(early, \.descriptors), median(late, \.threads) - median(early, \.threads)
        )
    }
}
