import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// Runs a program with `posix_spawn` and collects its output, for tests that run many
/// short commands beside SwiftNIO event loops. Foundation's `Process` closes descriptors
/// in the parent after the spawn, and a descriptor number reused meanwhile by another
/// thread of the test process (an event loop's epoll or eventfd) was once closed under
/// it: NIO stopped with EBADF in epoll_ctl in CI. Here the parent closes only the pipe
/// ends it made, once each.
public enum SpawnedCommand {
    /// How long `run` waits for a command unless told: generous for any command the tests
    /// run, short enough that a regression that never returns fails the test instead of
    /// holding the whole run.
    public static let defaultDeadline: Double = 60

    /// Runs a program to its end, or to `deadline` seconds: then its process group is
    /// killed and reaped, and the error names the command and says what it printed.
    public static func run(
        _ executable: String, _ arguments: [String], environment: [String: String], deadline: Double = defaultDeadline
    ) throws -> (status: Int32, stdout: String, stderr: String) {
        var outPipe: [Int32] = [0, 0]
        var errPipe: [Int32] = [0, 0]
        // Descriptors NIO makes are close-on-exec; these pipes are made so too, so a
        // command spawned meanwhile on another thread does not hold them open.
        guard pipe(&outPipe) == 0 else { throw DaemonProcess.Failure(description: "pipe: \(String(cString: strerror(errno)))") }
        guard pipe(&errPipe) == 0 else {
            close(outPipe[0])
            close(outPipe[1])
            throw DaemonProcess.Failure(description: "pipe: \(String(cString: strerror(errno)))")
        }
        for fd in outPipe + errPipe { _ = fcntl(fd, F_SETFD, FD_CLOEXEC) }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_adddup2(&actions, outPipe[1], 1)
        posix_spawn_file_actions_adddup2(&actions, errPipe[1], 2)
        let pid: pid_t
        do {
            // A group of its own, so that a deadline ends whatever the command started too.
            pid = try spawn(executable, arguments, environment: environment, actions: &actions, ownGroup: true)
            close(outPipe[1])
            close(errPipe[1])
        } catch {
            for fd in outPipe + errPipe { close(fd) }
            throw error
        }
        ProcessRecords.record(pid, what: ([executable] + arguments).joined(separator: " "))
        defer { ProcessRecords.forget(pid) }
        let ends = ContinuousClock.now + .milliseconds(Int64(deadline * 1000))
        var out = Data()
        var err = Data()
        var open: [(fd: Int32, isOut: Bool)] = [(outPipe[0], true), (errPipe[0], false)]
        var buffer = [UInt8](repeating: 0, count: 65536)
        var timedOut = false
        while !open.isEmpty {
            let left = ContinuousClock.now.duration(to: ends)
            guard left > .zero else {
                timedOut = true
                break
            }
            var fds = open.map { pollfd(fd: $0.fd, events: Int16(POLLIN), revents: 0) }
            let milliseconds = Int32(clamping: left.components.seconds * 1000 + left.components.attoseconds / 1_000_000_000_000_000 + 1)
            guard poll(&fds, nfds_t(fds.count), milliseconds) >= 0 || errno == EINTR else { break }
            for (index, entry) in fds.enumerated().reversed() where entry.revents != 0 {
                let count = read(entry.fd, &buffer, buffer.count)
                if count > 0 {
                    if open[index].isOut { out.append(contentsOf: buffer.prefix(count)) } else { err.append(contentsOf: buffer.prefix(count)) }
                } else if count == 0 || errno != EINTR {
                    close(entry.fd)
                    open.remove(at: index)
                }
            }
        }
        open.forEach { close($0.fd) }
        // Output closed is not the end: a command may close its output and go on.
        let status = timedOut ? nil : reap(pid, until: ends)
        let stdout = String(decoding: out, as: UTF8.self)
        let stderr = String(decoding: err, as: UTF8.self)
        guard let status else {
            kill(-pid, SIGKILL)
            reap(pid, within: 10)
            let command = ([executable] + arguments).joined(separator: " ")
            throw DaemonProcess.Failure(
                description: "\(command) did not finish within \(deadline) s and was killed; it printed: \(stdout.suffix(2000))\(stderr.suffix(2000))"
            )
        }
        return (status, stdout, stderr)
    }

    /// Reaps `pid`, waiting at most `seconds` (a process blocked on a dead mount may not
    /// die at once even when killed); its exit status, or nil if it did not end in time.
    @discardableResult
    public static func reap(_ pid: pid_t, within seconds: Double) -> Int32? {
        reap(pid, until: .now + .milliseconds(Int64(seconds * 1000)))
    }

    /// The same, until `ends`. A child reaped elsewhere in this process (a
    /// `waitpid(-1)`) has ended with its status lost: -1, as `SpawnedProcess` says.
    static func reap(_ pid: pid_t, until ends: ContinuousClock.Instant) -> Int32? {
        var status: Int32 = 0
        while true {
            let reaped = waitpid(pid, &status, WNOHANG)
            if reaped == pid { return exitStatus(status) }
            if reaped < 0 && errno == ECHILD { return -1 }
            if ContinuousClock.now >= ends { return nil }
            usleep(2_000)
        }
    }

    /// Starts a long-running program, its output appended to `outputPath` (discarded
    /// without one); stop it with `kill` and reap it with `waitpid` (or `SpawnedProcess`).
    /// It is recorded for `Tests/sweep`. With `endsWithCaller` it is killed when the
    /// caller dies, even by SIGKILL (a soak or a test run killed by `timeout`): Linux ties
    /// that signal to the thread that spawned, so the spawn is made on a thread that
    /// lives as long as the process (a worker thread may end while its daemon goes on).
    public static func start(
        _ executable: String, _ arguments: [String], environment: [String: String]? = nil, outputPath: String? = nil,
        endsWithCaller: Bool = false
    ) throws -> pid_t {
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, outputPath ?? "/dev/null", O_WRONLY | O_APPEND | O_CREAT, 0o644)
        posix_spawn_file_actions_adddup2(&actions, 1, 2)
        let setpriv = "/usr/bin/setpriv"
        let pid: pid_t
        if endsWithCaller && FileManager.default.isExecutableFile(atPath: setpriv) {
            pid = try LifelongThread.shared.run {
                try spawn(setpriv, ["--pdeathsig", "KILL", "--", executable] + arguments, environment: environment, actions: &actions)
            }
        } else {
            pid = try spawn(executable, arguments, environment: environment, actions: &actions)
        }
        ProcessRecords.record(pid, what: ([executable] + arguments).joined(separator: " "))
        return pid
    }

    /// `posix_spawn` with C copies of the arguments and the environment (the parent's
    /// when nil), freed once the child has them.
    private static func spawn(
        _ executable: String, _ arguments: [String], environment: [String: String]?,
        actions: inout posix_spawn_file_actions_t, ownGroup: Bool = false
    ) throws -> pid_t {
        try refuseUnisolatedPlunkd([executable] + arguments, environment: environment ?? ProcessInfo.processInfo.environment)
        let argv = ([executable] + arguments).map { strdup($0) } + [nil]
        let envp = environment.map { $0.map { strdup("\($0.key)=\($0.value)") } + [nil] }
        defer {
            argv.forEach { free($0) }
            envp?.forEach { free($0) }
        }
        // The child starts with no signal blocked and every signal at its default, as
        // from a shell: the caller may be a Dispatch or concurrency-pool thread, which
        // blocks most signals, and a mask is inherited, so the child would never see a
        // SIGUSR1 or SIGHUP sent to it.
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        var none = sigset_t()
        sigemptyset(&none)
        var all = sigset_t()
        sigfillset(&all)
        sigdelset(&all, SIGKILL)
        sigdelset(&all, SIGSTOP)
        posix_spawnattr_setsigmask(&attributes, &none)
        posix_spawnattr_setsigdefault(&attributes, &all)
        posix_spawnattr_setpgroup(&attributes, 0)
        posix_spawnattr_setflags(
            &attributes, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF | (ownGroup ? POSIX_SPAWN_SETPGROUP : 0)))
        var pid: pid_t = 0
        let spawned =
            envp.map { posix_spawn(&pid, executable, &actions, &attributes, argv, $0) }
            ?? posix_spawn(&pid, executable, &actions, &attributes, argv, environ)
        guard spawned == 0 else {
            throw DaemonProcess.Failure(description: "cannot run \(executable): \(String(cString: strerror(spawned)))")
        }
        return pid
    }

    /// Every spawn of the plunkd binary, whoever makes it, runs with `PLUNKD_CONFIG` set
    /// (`DaemonProcess` gives the empty file): without it, a test's daemon or command
    /// would read the host's `/etc/plunkd`, its real key and its real Plunk.
    static func refuseUnisolatedPlunkd(_ command: [String], environment: [String: String]) throws {
        let plunkd = DaemonProcess.binaryPath
        guard command.contains(plunkd), environment["PLUNKD_CONFIG"] == nil else { return }
        throw DaemonProcess.Failure(
            description: "\(command.joined(separator: " ")) would run plunkd without PLUNKD_CONFIG and read the host's /etc/plunkd: "
                + "start it through DaemonProcess")
    }

    /// WIFEXITED / WEXITSTATUS spelled out (the C macros are not imported): the exit
    /// status, or 128 + the signal that ended the process, as a shell reports it.
    static func exitStatus(_ status: Int32) -> Int32 {
        (status & 0x7f) == 0 ? (status >> 8) & 0xff : 128 + (status & 0x7f)
    }
}

/// A child started with `SpawnedCommand.start`, reaped once, whose exit status is kept.
public final class SpawnedProcess: @unchecked Sendable {
    public let pid: pid_t
    private let lock = NSLock()
    // Guarded by `lock`.
    private var exit: Int32?

    public init(pid: pid_t) { self.pid = pid }

    /// The exit status once the process has ended (it is reaped then), else nil.
    public var exitStatus: Int32? {
        lock.lock()
        defer { lock.unlock() }
        if exit == nil {
            var status: Int32 = 0
            let reaped = waitpid(pid, &status, WNOHANG)
            if reaped == pid {
                exit = SpawnedCommand.exitStatus(status)
                ProcessRecords.forget(pid)
            } else if reaped < 0 && errno == ECHILD {
                // Reaped elsewhere in this process (a `waitpid(-1)`): it has ended, but
                // its status is lost; without this, it would look alive forever.
                exit = -1
                ProcessRecords.forget(pid)
            }
        }
        return exit
    }

    public var isRunning: Bool { exitStatus == nil }
}

/// A thread that never ends, for spawns whose parent-death signal must follow the process
/// and not the thread that asked (`SpawnedCommand.start(endsWithCaller:)`).
final class LifelongThread: @unchecked Sendable {
    static let shared = LifelongThread()

    private let condition = NSCondition()
    // Guarded by `condition`.
    private var queue: [() -> Void] = []

    private init() {
        let thread = Thread { [self] in serve() }
        thread.name = "plunkd-test-spawner"
        thread.start()
    }

    private func serve() {
        while true {
            condition.lock()
            while queue.isEmpty { condition.wait() }
            let next = queue.removeFirst()
            condition.unlock()
            next()
        }
    }

    /// Runs `work` on the lifelong thread and returns its result; throws if the thread
    /// does not get to it within 60 s.
    func run<T>(_ work: () throws -> T) throws -> T {
        let done = DispatchSemaphore(value: 0)
        // Written by the lifelong thread before `done` is signalled, read here after.
        let result = UncheckedBox<Result<T, any Error>?>(nil)
        try withoutActuallyEscaping(work) { escapable in
            // Let go of on the lifelong thread before `done` is signalled: once this block
            // returns, nothing may hold `escapable` (which Swift checks).
            let box = UncheckedBox<(() throws -> T)?>(escapable)
            condition.lock()
            queue.append {
                result.value = Result { try box.value!() }
                box.value = nil
                done.signal()
            }
            condition.signal()
            condition.unlock()
            try Deadline.wait(done, for: "a spawn on the lifelong thread", within: 60)
        }
        return try result.value!.get()
    }
}

/// Carries a non-Sendable value to the lifelong thread, which uses it only while the
/// caller waits for it.
private final class UncheckedBox<Value>: @unchecked Sendable {
    var value: Value
    init(_ value: Value) { self.value = value }
}
