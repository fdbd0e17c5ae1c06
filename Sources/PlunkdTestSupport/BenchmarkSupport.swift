import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// What both benchmarks need: a monotonic clock, integer options, the machine's name.
public enum BenchmarkSupport {
    /// Seconds on the monotonic clock.
    public static func now() -> Double {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
    }

    /// The integer after `name` on the command line, or `fallback`.
    public static func option(_ name: String, _ fallback: Int) -> Int {
        let arguments = CommandLine.arguments
        guard let index = arguments.firstIndex(of: name), index + 1 < arguments.count else { return fallback }
        return Int(arguments[index + 1]) ?? fallback
    }

    /// Cores and CPU model, for the first line of a report.
    public static var machine: String {
        var text = "\(ProcessInfo.processInfo.activeProcessorCount) cores"
        if let cpu = try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8)
            .split(separator: "\n").first(where: { $0.hasPrefix("model name") })
        {
            text += ", " + (cpu.split(separator: ":").last.map { $0.trimmingCharacters(in: .whitespaces) } ?? "")
        }
        return text
    }

    /// One aligned report line.
    public static func show(_ label: String, _ value: String) {
        print(label.padding(toLength: 60, withPad: " ", startingAt: 0) + value)
    }
}
