import Foundation
import PlunkdTestSupport
import Testing

@testable import PlunkdCore

#if canImport(Glibc)
    import Glibc
#endif

/// The fallback socket directory `/tmp/plunkd-<uid>` (no `XDG_RUNTIME_DIR`), trusted only
/// as tmux trusts `/tmp/tmux-<uid>`: tried with a real victim uid and a real other uid.
@Suite(
    "The fallback socket directory", .serialized, .timeLimit(.minutes(2)), .watchdog,
    .enabled(
        if: getuid() == 0 && FileManager.default.isExecutableFile(atPath: "/usr/bin/setpriv"),
        "needs root and setpriv to act as two other users"))
struct RuntimeDirectoryTests {
    static let victim: uid_t = 4242
    static let other: uid_t = 4343
    var fallback: String { SocketPathGuard.privateDirectory(uid: Self.victim) }

    /// Runs the binary as the victim, with a home of its own and no XDG_RUNTIME_DIR.
    func asVictim(_ arguments: [String], home: String) throws -> (status: Int32, stdout: String, stderr: String) {
        try DaemonProcess.command(
            ["--reuid=\(Self.victim)", "--regid=\(Self.victim)", "--clear-groups", DaemonProcess.binaryPath] + arguments,
            executable: "/usr/bin/setpriv", environment: ["HOME": home])
    }

    func victimHome() throws -> String {
        let home = try DaemonProcess.makeScratchDirectory()
        chown(home, Self.victim, Self.victim)
        return home
    }

    func plant(owner: uid_t, mode: mode_t) throws {
        try? FileManager.default.removeItem(atPath: fallback)
        #expect(mkdir(fallback, 0o700) == 0)
        chown(fallback, owner, owner)
        chmod(fallback, mode)
    }

    @Test("a directory another user made first is refused by run and by every client command, saying what to fix")
    func plantedByAnotherUser() throws {
        let home = try victimHome()
        defer {
            try? FileManager.default.removeItem(atPath: home)
            try? FileManager.default.removeItem(atPath: fallback)
        }
        try plant(owner: Self.other, mode: 0o777)
        let run = try asVictim(["run"], home: home)
        #expect(run.status != 0)
        #expect(run.stderr.contains("socket directory \(fallback) belongs to uid \(Self.other), not to you (uid \(Self.victim))"), "\(run.stderr)")
        // Nothing was served there.
        #expect(!FileManager.default.fileExists(atPath: "\(fallback)/plunkd.sock"))
        for command in [["track", "--event", "e", "--email", "a@example.com"], ["status"], ["resume"], ["parked", "list"]] {
            let result = try asVictim(command, home: home)
            #expect(result.status != 0, "\(command)")
            #expect((result.stdout + result.stderr).contains("belongs to uid \(Self.other)"), "\(command): \(result.stdout) \(result.stderr)")
        }
    }

    @Test("the user's own directory open to others (0777) is refused; 0700 is served")
    func ownButOpen() async throws {
        let home = try victimHome()
        defer {
            try? FileManager.default.removeItem(atPath: home)
            try? FileManager.default.removeItem(atPath: fallback)
        }
        try plant(owner: Self.victim, mode: 0o777)
        let run = try asVictim(["run"], home: home)
        #expect(run.status != 0)
        #expect(run.stderr.contains("has mode 777: other users could take over plunkd's socket. chmod 700 \(fallback)"), "\(run.stderr)")
        let send = try asVictim(["track", "--event", "e", "--email", "a@example.com"], home: home)
        #expect(send.status != 0)
        #expect(send.stderr.contains("has mode 777"))
    }

    @Test("absent, it is made 0700 for the user, served, and clients use it")
    func madePrivate() async throws {
        let home = try victimHome()
        try? FileManager.default.removeItem(atPath: fallback)
        let daemon = try DaemonProcess(
            directory: home, environment: ["PLUNKD_SOCKET_PATH": "\(fallback)/plunkd.sock"],
            launcher: ["/usr/bin/setpriv", "--reuid=\(Self.victim)", "--regid=\(Self.victim)", "--clear-groups"])
        defer {
            daemon.cleanUp()
            try? FileManager.default.removeItem(atPath: fallback)
        }
        #expect(Poll.blockingUntil(timeout: 30) { FileManager.default.fileExists(atPath: "\(fallback)/plunkd.sock") })
        var info = stat()
        #expect(lstat(fallback, &info) == 0)
        #expect(info.st_uid == Self.victim)
        #expect(info.st_mode & 0o777 == 0o700)
        let send = try asVictim(["track", "--event", "e", "--email", "a@example.com"], home: home)
        #expect(send.status == 0, "\(send.stderr) \(daemon.log)")
    }
}

@Suite("Any socket directory", .timeLimit(.minutes(2)), .watchdog)
struct SocketDirectoryRuleTests {
    @Test("a directory anyone may write is refused unless sticky; one of another owner is allowed")
    func worldWritable() throws {
        let directory = try DaemonProcess.makeScratchDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let socket = "\(directory)/plunkd.sock"
        chmod(directory, 0o777)
        #expect(throws: SocketPathGuard.Refusal.self) { try SocketPathGuard.checkDirectory(of: socket) }
        chmod(directory, 0o1777)
        try SocketPathGuard.checkDirectory(of: socket)
        chmod(directory, 0o755)
        if getuid() == 0 { chown(directory, 4343, 4343) }
        try SocketPathGuard.checkDirectory(of: socket)
    }
}
