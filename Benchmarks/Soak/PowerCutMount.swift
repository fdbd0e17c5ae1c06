import Foundation
import PlunkdTestSupport
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// The store's directory on `Tests/PowerCut/cutfs.py`: writes stay in that process until
/// fsynced, and `cut()` throws away everything unsynced, as a power loss would. Mounting
/// again shows what had been synced: the disk as the machine finds it after the cut.
/// Every wait on cutfs has a deadline; when one passes, the mount is released (its FUSE
/// connection aborted, cutfs killed, the mount detached) before the error is thrown, so
/// that a frozen cutfs leaves nothing blocked behind the failing soak.
final class PowerCutMount {
    let backing: String
    let mountpoint: String
    private let script: String
    private let log: String
    private var process: SpawnedProcess?
    /// The running cutfs, readable from any thread (the soak's `--freeze-cutfs-at`).
    let currentPid = Atomic<Int32>(0)
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
        currentPid.store(pid, ordering: .releasing)
        let mounted = Poll.blockingUntil(timeout: 20) { FuseMount.connection(of: mountpoint) != nil || !started.isRunning }
        guard mounted, started.isRunning else {
            release()
            throw DaemonProcess.Failure(description: "cutfs did not mount \(mountpoint): \((try? String(contentsOfFile: log, encoding: .utf8)) ?? "")")
        }
    }

    /// The power goes: from the moment this returns, nothing unsynced exists and every
    /// call on the mount fails.
    func cut() throws {
        guard let process else { return }
        kill(process.pid, SIGUSR1)
        guard Poll.blockingUntil(timeout: 20, every: .milliseconds(2), { FileManager.default.fileExists(atPath: backing + ".cut") }) else {
            release()
            throw DaemonProcess.Failure(description: "cutfs did not cut within 20 s; its mount was released")
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

    /// Asks cutfs to release its mount and end (SIGTERM); one that does not within 10 s
    /// is released from here.
    func unmount() {
        guard let process else { return }
        kill(process.pid, SIGTERM)
        if !Poll.blockingUntil(timeout: 10, { !process.isRunning }) { release() }
        self.process = nil
    }

    /// Releases the mount whatever cutfs is doing: its connection aborted (whatever waits
    /// on the mount fails at once), cutfs killed and reaped, the mount detached.
    func release() {
        FuseMount.release(mountpoint)
        if let process {
            kill(process.pid, SIGKILL)
            _ = Poll.blockingUntil(timeout: 10) { !process.isRunning }
        }
        FuseMount.release(mountpoint)
        process = nil
    }
}

/// A FUSE mount found in the mount table, never by a stat of the mount point, which a
/// stuck mount blocks (as `Tests/PowerCut/fuseconnection.py` does it).
enum FuseMount {
    /// The connection under `/sys/fs/fuse/connections` of the FUSE mount at `mountpoint`.
    static func connection(of mountpoint: String) -> Int? {
        guard let table = try? String(contentsOfFile: "/proc/self/mountinfo", encoding: .utf8) else { return nil }
        for line in table.split(separator: "\n") {
            let fields = line.split(separator: " ").map(String.init)
            guard let separator = fields.firstIndex(of: "-"), separator + 1 < fields.count, fields.count > 4,
                fields[separator + 1].hasPrefix("fuse"), fields[4] == mountpoint
            else { continue }
            let device = fields[2].split(separator: ":").compactMap { Int($0) }
            guard device.count == 2 else { continue }
            // The kernel names a connection by its device number in its own encoding.
            return device[0] << 20 | device[1]
        }
        return nil
    }

    /// Aborts the connection and detaches the mount, if `mountpoint` is still a FUSE mount:
    /// `Tests/PowerCut/fuseconnection.py`, which the selftest and `Tests/sweep` use too.
    static func release(_ mountpoint: String) {
        guard connection(of: mountpoint) != nil else { return }
        let script = FileManager.default.currentDirectoryPath + "/Tests/PowerCut/fuseconnection.py"
        _ = try? SpawnedCommand.run("/usr/bin/python3", [script, "release", mountpoint], environment: ["PATH": "/usr/bin:/bin"], deadline: 20)
    }
}
