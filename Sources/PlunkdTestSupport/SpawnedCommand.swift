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
    public static func run(
        _ executable: String, _ arguments: [String], environment: [String: String]
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
            pid = try spawn(executable, arguments, environment: environment, actions: &actions)
            close(outPipe[1])
            close(errPipe[1])
        } catch {
            for fd in outPipe + errPipe { close(fd) }
            throw error
        }
        var out = Data()
        var err = Data()
        var open: [(fd: Int32, isOut: Bool)] = [(outPipe[0], true), (errPipe[0], false)]
        var buffer = [UInt8](repeating: 0, count: 65536)
        while !open.isEmpty {
            var fds = open.map { pollfd(fd: $0.fd, events: Int16(POLLIN), revents: 0) }
            guard poll(&fds, nfds_t(fds.count), -1) >= 0 || errno == EINTR else {
                open.forEach { close($0.fd) }
                break
            }
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
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        return (exitStatus(status), String(decoding: out, as: UTF8.self), String(decoding: err, as: UTF8.self))
    }

    /// Starts a long-running program, its output appended to `outputPath` (discarded
    /// without one); stop it with `kill` and reap it with `waitpid` (or `SpawnedProcess`).
    public static func start(
        _ executable: String, _ arguments: [String], environment: [String: String]? = nil, outputPath: String? = nil
    ) throws -> pid_t {
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, outputPath ?? "/dev/null", O_WRONLY | O_APPEND | O_CREAT, 0o644)
        posix_spawn_file_actions_adddup2(&actions, 1, 2)
        return try spawn(executable, arguments, environment: environment, actions: &actions)
    }

    /// `posix_spawn` with C copies of the arguments and the environment (the parent's
    /// when nil), freed once the child has them.
    private static func spawn(
        _ executable: String, _ arguments: [String], environment: [String: String]?,
        actions: inout posix_spawn_file_actions_t
    ) throws -> pid_t {
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
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))
        var pid: pid_t = 0
        let spawned =
            envp.map { posix_spawn(&pid, executable, &actions, &attributes, argv, $0) }
            ?? posix_spawn(&pid, executable, &actions, &attributes, argv, environ)
        guard spawned == 0 else {
            throw DaemonProcess.Failure(description: "cannot run \(executable): \(String(cString: strerror(spawned)))")
        }
        return pid
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
            } else if reaped < 0 && errno == ECHILD {
                // Reaped elsewhere in this process (a `waitpid(-1)`): it has ended, but
                // its status is lost; without this, it would look alive forever.
                exit = -1
            }
        }
        return exit
    }

    public var isRunning: Bool { exitStatus == nil }
}
