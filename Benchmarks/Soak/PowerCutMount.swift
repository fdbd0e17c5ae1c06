import Foundation
import PlunkdTestSupport

#if canImport(Glibc)
    import Glibc
#endif

/// The store's directory on `Tests/PowerCut/cutfs.py`: writes stay in that process until
/// fsynced, and `cut()` throws away everything unsynced, as a power loss would. Mounting
/// again shows what had been synced: the disk as the machine finds it after the cut.
final class PowerCutMount {
    let backing: String
    let mountpoint: String
    private let script: String
    private let log: String
    private var process: SpawnedProcess?
    /// Written bytes thrown away by the cuts so far: proof that a cut found something unsynced.
    private(set) var bytesLost = 0

    /// - Parameter script: cutfs.py, found from the working directory (the repo's root).
    init(directory: String, script: String = "Tests/PowerCut/cutfs.py") throws {
        backing = "\(directory)/backing"
        mountpoint = "\(directory)/mnt"
        log = "\(directory)/cutfs.log"
        self.script = FileManager.default.currentDirectoryPath + "/" + script
        guard FileManager.default.fileExists(atPath: self.script) else {
            throw DaemonProcess.Failure(description: "\(self.script) not found: run the soak from the repo's root")
        }
        for path in [backing, mountpoint] { try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true) }
        try mount()
    }

    func mount() throws {
        unlink(backing + ".cut")
        let pid = try SpawnedCommand.start("/usr/bin/python3", [script, backing, mountpoint], outputPath: log)
        let started = SpawnedProcess(pid: pid)
        process = started
        let mounted = Poll.blockingUntil(timeout: 20) { Self.isMountPoint(mountpoint) || !started.isRunning }
        guard mounted, started.isRunning else {
            throw DaemonProcess.Failure(description: "cutfs did not mount \(mountpoint): \((try? String(contentsOfFile: log, encoding: .utf8)) ?? "")")
        }
    }

    /// The power goes: from the moment this returns, nothing unsynced exists and every
    /// call on the mount fails.
    func cut() throws {
        guard let process else { return }
        kill(process.pid, SIGUSR1)
        guard Poll.blockingUntil(timeout: 20, every: .milliseconds(2), { FileManager.default.fileExists(atPath: backing + ".cut") }) else {
            throw DaemonProcess.Failure(description: "cutfs did not cut")
        }
        let said = (try? String(contentsOfFile: backing + ".cut", encoding: .utf8)) ?? ""
        bytesLost += Int(said.trimmingCharacters(in: .whitespacesAndNewlines)) ?? 0
    }

    /// Arms a cut at the next write to the database file (`SIGUSR2`: a checkpoint) or to
    /// it or its log (`SIGHUP`: the next commit); `cut(aimed:)` waits for it.
    /// The filesystem process, for aiming a cut from another thread (`aim` is the same).
    var pid: pid_t? { process?.pid }

    func aim(_ signal: Int32) {
        guard let process else { return }
        kill(process.pid, signal)
    }

    /// Waits up to `timeout` for an aimed cut to fall; when none did, cuts now. Returns
    /// whether the aimed one fell.
    @discardableResult
    func cut(aimedWithin timeout: Double) throws -> Bool {
        let fell = Poll.blockingUntil(timeout: timeout, every: .milliseconds(2)) { FileManager.default.fileExists(atPath: backing + ".cut") }
        if fell {
            let said = (try? String(contentsOfFile: backing + ".cut", encoding: .utf8)) ?? ""
            bytesLost += Int(said.trimmingCharacters(in: .whitespacesAndNewlines)) ?? 0
            return true
        }
        try cut()
        return false
    }

    func unmount() {
        guard let process else { return }
        _ = try? SpawnedCommand.run("/bin/umount", ["-l", mountpoint], environment: ["PATH": "/usr/bin:/bin"])
        if !Poll.blockingUntil(timeout: 20, { !process.isRunning }) {
            kill(process.pid, SIGKILL)
            _ = Poll.blockingUntil(timeout: 20) { !process.isRunning }
        }
        self.process = nil
    }

    static func isMountPoint(_ path: String) -> Bool {
        var here = stat()
        var parent = stat()
        guard stat(path, &here) == 0, stat(path + "/..", &parent) == 0 else { return false }
        return here.st_dev != parent.st_dev
    }
}
