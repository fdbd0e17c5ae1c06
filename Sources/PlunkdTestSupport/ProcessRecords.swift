import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// A pid file for each long-running process the tests and soaks start, so that
/// `Tests/sweep` can end whatever a killed run left behind, by pid and never by name.
/// Each file holds the process's start time (field 22 of `/proc/<pid>/stat`): a pid taken
/// since by another process is left alone. `Tests/PowerCut/fuseconnection.py` reads and
/// writes the same files.
public enum ProcessRecords {
    public static let directory = "/tmp/plunkd-test-pids"

    public static func record(_ pid: pid_t, what: String) {
        guard let start = startTime(of: pid) else { return }
        mkdir(directory, 0o755)
        try? "\(start) \(what)\n".write(toFile: "\(directory)/\(pid)", atomically: true, encoding: .utf8)
    }

    public static func forget(_ pid: pid_t) {
        unlink("\(directory)/\(pid)")
    }

    /// Kills every recorded process whose parent is this process: the last act of a run
    /// that is about to end itself (the test watchdog), which would otherwise orphan them.
    public static func killChildrenOfThisProcess() {
        guard let names = try? FileManager.default.contentsOfDirectory(atPath: directory) else { return }
        for name in names {
            guard let pid = pid_t(name), parent(of: pid) == getpid() else { continue }
            kill(pid, SIGKILL)
            forget(pid)
        }
    }

    static func startTime(of pid: pid_t) -> String? {
        statFields(of: pid).map { $0.count > 19 ? $0[19] : nil } ?? nil
    }

    static func parent(of pid: pid_t) -> pid_t? {
        statFields(of: pid).flatMap { $0.count > 1 ? pid_t($0[1]) : nil }
    }

    /// The fields after the command name, which may hold spaces and parentheses.
    private static func statFields(of pid: pid_t) -> [String]? {
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
            let close = stat.lastIndex(of: ")")
        else { return nil }
        return stat[stat.index(after: close)...].split(separator: " ").map(String.init)
    }
}
