import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// A `plunkd` process started from the binary built next to the running test or
/// benchmark, in its own scratch directory, so tests can kill it for real. It never
/// outlives its owner: released, it is killed (a test that throws between starting it
/// and cleaning up leaves no daemon running), and a soak's daemon dies with the soak.
public final class DaemonProcess {
    public let directory: String
    public let socketPath: String
    public let storagePath: String
    public let logPath: String
    public let process: SpawnedProcess

    public struct Failure: Error, CustomStringConvertible {
        public let description: String

        public init(description: String) {
            self.description = description
        }
    }

    /// The `plunkd` executable in the build folder this process runs from.
    public static var binaryPath: String {
        let executable = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
        var directory = URL(fileURLWithPath: executable).deletingLastPathComponent()
        // An XCTest bundle on Linux is a plain executable, but be tolerant of `.xctest` folders.
        if directory.pathExtension == "xctest" { directory.deleteLastPathComponent() }
        return directory.appendingPathComponent("plunkd").path
    }

    /// An empty configuration, named by `PLUNKD_CONFIG` to every process the tests start
    /// (unless a test names its own), so that none reads the host's `/etc/plunkd/plunkd.yaml`.
    /// The environment is built from nothing for the same reason: the host's `PLUNK_*` and
    /// `PLUNKD_*` never reach a test's daemon, which sends nowhere unless given a fake Plunk.
    public static func isolatedConfigFile() throws -> String {
        let path = "/tmp/plunkd-tests-no-settings.yaml"
        let text = "# plunkd's tests: no settings, so that the host's /etc/plunkd is never read\n{}\n"
        if (try? String(contentsOfFile: path, encoding: .utf8)) != text {
            try text.write(toFile: path, atomically: true, encoding: .utf8)
        }
        return path
    }

    /// A fresh scratch directory with a short path (Unix socket paths are limited to 107 bytes).
    public static func makeScratchDirectory() throws -> String {
        var template = Array("/tmp/plunkd-test-XXXXXX".utf8CString)
        guard let made = mkdtemp(&template) else { throw Failure(description: "mkdtemp failed") }
        return String(cString: made)
    }

    /// Starts `plunkd run` (or `arguments`) with its socket and store in `directory`.
    /// - Parameter launcher: a program that runs `plunkd` itself (such as
    ///   `systemd-socket-activate`), given before `arguments`; nil runs the binary directly.
    public init(
        directory: String? = nil, arguments: [String] = ["run"], environment extra: [String: String] = [:],
        launcher: [String]? = nil
    ) throws {
        let directory = try directory ?? Self.makeScratchDirectory()
        self.directory = directory
        socketPath = "\(directory)/plunkd.sock"
        storagePath = "\(directory)/outbox.sqlite"
        logPath = "\(directory)/plunkd.\(UUID().uuidString.prefix(8)).log"
        _ = FileManager.default.createFile(atPath: logPath, contents: nil)
        var environment: [String: String] = [
            "PATH": ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin",
            "HOME": directory,
            "PLUNKD_SOCKET_PATH": socketPath,
            "PLUNKD_STORAGE_PATH": storagePath,
            "PLUNKD_CONFIG": try Self.isolatedConfigFile(),
        ]
        environment.merge(extra) { _, new in new }
        // posix_spawn, not Foundation's Process, which closes descriptors in the parent
        // after a spawn (see `SpawnedCommand`).
        let pid: pid_t
        if let launcher, let program = launcher.first {
            pid = try SpawnedCommand.start(
                program, Array(launcher.dropFirst()) + [Self.binaryPath] + arguments,
                environment: environment, outputPath: logPath, endsWithCaller: true)
        } else {
            pid = try SpawnedCommand.start(Self.binaryPath, arguments, environment: environment, outputPath: logPath, endsWithCaller: true)
        }
        process = SpawnedProcess(pid: pid)
    }

    deinit {
        stop()
    }

    /// Kills the process (and what it started in its group, such as a launcher's plunkd)
    /// if it still runs, and reaps it, waiting at most 10 s.
    public func stop() {
        guard process.isRunning else { return }
        let descendants = Self.descendants(of: pid)
        kill(pid, SIGKILL)
        for descendant in descendants { kill(descendant, SIGKILL) }
        waitForExit(timeout: 10)
    }

    public var pid: Int32 { process.pid }

    /// Every process below `pid`, read from `/proc` before anything is killed (a killed
    /// parent's children are handed to init at once).
    static func descendants(of pid: pid_t) -> [pid_t] {
        let tasks = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/task")) ?? []
        let children = tasks.flatMap { task in
            ((try? String(contentsOfFile: "/proc/\(pid)/task/\(task)/children", encoding: .utf8)) ?? "")
                .split(separator: " ").compactMap { pid_t($0.trimmingCharacters(in: .whitespacesAndNewlines)) }
        }
        return children + children.flatMap { descendants(of: $0) }
    }

    /// Runs a short command to completion (the `plunkd` binary unless `executable` says
    /// otherwise) and returns its exit status and output.
    /// It is killed, and the call throws with what it printed, once `deadline` seconds pass.
    public static func command(
        _ arguments: [String], executable: String? = nil, environment: [String: String] = [:],
        deadline: Double = SpawnedCommand.defaultDeadline
    ) throws -> (status: Int32, stdout: String, stderr: String) {
        var all = ["PATH": "/usr/bin:/bin:/usr/sbin:/sbin", "HOME": "/tmp", "PLUNKD_CONFIG": try isolatedConfigFile()]
        all.merge(environment) { _, new in new }
        return try SpawnedCommand.run(executable ?? binaryPath, arguments, environment: all, deadline: deadline)
    }

    /// Everything the daemon wrote to stdout and stderr so far.
    public var log: String {
        (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? ""
    }

    /// Waits (bounded) until the log holds `text`: a line may come after the work it
    /// describes has already been answered on another thread.
    public func waitForLog(containing text: String, timeout: Double = 30) -> Bool {
        Poll.blockingUntil(timeout: timeout, every: .milliseconds(20)) { log.contains(text) }
    }

    /// Waits until the socket accepts connections; throws if the process exits first.
    public func waitUntilServing(timeout: Double = 60) throws {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            if let status = process.exitStatus {
                throw Failure(description: "plunkd exited with status \(status) before serving: \(log)")
            }
            if (try? BlockingUnixSocket(path: socketPath)) != nil { return }
            usleep(20_000)
        }
        throw Failure(description: "plunkd did not serve \(socketPath) within \(timeout) s: \(log)")
    }

    public func signal(_ signal: Int32) {
        kill(pid, signal)
    }

    /// Waits for the process to end; returns its exit status, or nil on timeout.
    @discardableResult
    public func waitForExit(timeout: Double = 60) -> Int32? {
        _ = Poll.blockingUntil(timeout: timeout) { !process.isRunning }
        return process.exitStatus
    }

    /// Peak resident memory of the process so far, in bytes (VmHWM).
    public func peakResidentBytes() -> Int? {
        guard let status = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8) else { return nil }
        for line in status.split(separator: "\n") where line.hasPrefix("VmHWM:") {
            let kilobytes = line.split(separator: " ").dropFirst().first.flatMap { Int($0) }
            return kilobytes.map { $0 * 1024 }
        }
        return nil
    }

    /// Kills the process if still running and removes its scratch directory.
    public func cleanUp(removeDirectory: Bool = true) {
        stop()
        if removeDirectory { try? FileManager.default.removeItem(atPath: directory) }
    }
}
