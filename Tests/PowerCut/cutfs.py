#!/usr/bin/python3
"""cutfs: a FUSE filesystem that loses, at a simulated power cut, every write not yet synced.

    cutfs.py BACKING MOUNTPOINT

Files live in BACKING. What a program writes through MOUNTPOINT stays in this process's
memory, per file, until that file is fsynced or fdatasynced; only then does it reach
BACKING (itself fsynced). A file created through the mount reaches BACKING's directory at
once but counts as unsynced until it, or its directory, is fsynced: a cut removes it.
Unlinks and renames are applied at once and survive a cut (a journaling filesystem's
metadata order, not modelled further).

SIGUSR1 is the power cut: every unsynced write and every unsynced new file is thrown
away, and from then on every call fails with EIO, as a dead disk would, until the
process is stopped (SIGTERM or `umount`). Mounting again on the same BACKING shows
exactly what had been synced: what a machine sees after the power comes back.

Cuts can also be aimed: SIGUSR2 arms a cut at the next write to a file whose name ends in
`.sqlite` (a checkpoint copying the log into the database), SIGHUP at the next write to
such a file or its `-wal` (the first commit of whatever comes next: a start-up's repair
of the lines, a stored pause). The aimed write is thrown away with the rest.

It cannot hang what uses it, nor itself. The FUSE loop serves one call at a time, so a
cut falls between two calls; a signal only records what was asked and the main thread
acts on it. Nothing here calls sync(): sync() flushes this very mount too (SQLite's
mapped `-shm` leaves dirty pages on it), and that flush needs the FUSE thread, which a
cut holding the lock would keep waiting. A cut touches only BACKING, outside the lock.
Every way out (stopped, parent gone, a cut that could not take the lock in
CUT_DEADLINE seconds, an error) aborts the FUSE connection, so that nothing waiting on
the mount waits any longer, then detaches the mount. `Tests/sweep` clears a cutfs that
was frozen or killed before it could do so.

Written for plunkd's power-cut tests (Debian's python3-fusepy, run as root). A cache of
whole files is simple and fast enough for a test store of a few tens of MiB.
"""

import errno
import os
import signal
import sys
import threading
import time

from fusepy import FUSE, FuseOSError, Operations

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fuseconnection  # noqa: E402

# How long a cut may wait for the FUSE thread to finish its call before cutfs gives up,
# aborts its connection and ends: the harness then sees no cut, and fails.
CUT_DEADLINE = 5.0


class PendingFile:
    """A file's contents as programs see them, with the range written since the last sync."""

    def __init__(self, synced: bytes):
        self.content = bytearray(synced)
        self.synced_length = len(synced)
        self.dirty_from = None  # lowest offset written since the last sync
        self.dirty_to = 0
        self.truncated = False

    def write(self, data: bytes, offset: int) -> None:
        end = offset + len(data)
        if end > len(self.content):
            self.content.extend(b"\0" * (end - len(self.content)))
        self.content[offset:end] = data
        self.dirty_from = offset if self.dirty_from is None else min(self.dirty_from, offset)
        self.dirty_to = max(self.dirty_to, end)

    def truncate(self, length: int) -> None:
        if length < len(self.content):
            del self.content[length:]
        else:
            self.content.extend(b"\0" * (length - len(self.content)))
        self.truncated = True


class CutFS(Operations):
    def __init__(self, backing: str):
        self.backing = os.path.realpath(backing)
        self.mutex = threading.RLock()
        self.pending: dict[str, PendingFile] = {}
        self.unsynced_new: set[str] = set()
        self.dead = False
        # The name endings an aimed cut waits for, and what to call when it falls.
        self.armed: tuple[str, ...] | None = None
        self.on_cut = lambda lost: None
        # Set by signal handlers, acted on by the main thread.
        self.cut_requested = False
        self.stop_requested = False

    def arm(self, endings: tuple[str, ...]) -> None:
        # A plain assignment: safe from a signal handler, read by the FUSE thread.
        self.armed = endings

    # MARK: the cut

    def cut(self, timeout: float = -1) -> int | None:
        """Returns how many written bytes were thrown away, or None when the lock was
        not had within `timeout` seconds (the FUSE thread stuck in a call)."""
        if not self.mutex.acquire(timeout=timeout):
            return None
        try:
            self.dead = True
            lost = sum((p.dirty_to - p.dirty_from) for p in self.pending.values() if p.dirty_from is not None)
            self.pending.clear()
            never_synced = list(self.unsynced_new)
            self.unsynced_new.clear()
        finally:
            self.mutex.release()
        self.remove_from_backing(never_synced)
        return lost

    def remove_from_backing(self, paths: list[str]) -> None:
        """New files never synced disappear, durably: unlinked, and their directories
        fsynced (only BACKING's, never the mount's)."""
        directories = set()
        for path in paths:
            try:
                os.unlink(self.real(path))
                directories.add(os.path.dirname(path) or "/")
            except OSError:
                pass
        for directory in directories:
            try:
                self.sync_directory(directory)
            except OSError:
                pass

    def alive(self) -> None:
        if self.dead:
            raise FuseOSError(errno.EIO)

    def real(self, path: str) -> str:
        return os.path.join(self.backing, path.lstrip("/"))

    def sync_file(self, path: str) -> None:
        pending = self.pending.pop(path, None)
        if pending is not None:
            fd = os.open(self.real(path), os.O_WRONLY)
            try:
                if pending.dirty_from is not None:
                    os.pwrite(fd, bytes(pending.content[pending.dirty_from:pending.dirty_to]), pending.dirty_from)
                os.ftruncate(fd, len(pending.content))
                os.fsync(fd)
            finally:
                os.close(fd)
        if path in self.unsynced_new:
            self.unsynced_new.discard(path)
            self.sync_directory(os.path.dirname(path))

    def sync_directory(self, path: str) -> None:
        fd = os.open(self.real(path), os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def load(self, path: str) -> PendingFile:
        pending = self.pending.get(path)
        if pending is None:
            with open(self.real(path), "rb") as file:
                pending = PendingFile(file.read())
            self.pending[path] = pending
        return pending

    # MARK: files

    def getattr(self, path, fh=None):
        with self.mutex:
            self.alive()
            try:
                st = os.lstat(self.real(path))
            except OSError as error:
                raise FuseOSError(error.errno)
            attributes = {key: getattr(st, key) for key in (
                "st_atime", "st_ctime", "st_gid", "st_mode", "st_mtime", "st_nlink", "st_size", "st_uid")}
            pending = self.pending.get(path)
            if pending is not None:
                attributes["st_size"] = len(pending.content)
            return attributes

    def create(self, path, mode, fi=None):
        with self.mutex:
            self.alive()
            fd = os.open(self.real(path), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
            os.close(fd)
            self.unsynced_new.add(path)
            self.pending[path] = PendingFile(b"")
            return 0

    def open(self, path, flags):
        with self.mutex:
            self.alive()
            if not os.path.exists(self.real(path)):
                raise FuseOSError(errno.ENOENT)
            if flags & os.O_TRUNC:
                self.load(path).truncate(0)
            return 0

    def read(self, path, size, offset, fh):
        with self.mutex:
            self.alive()
            pending = self.pending.get(path)
            if pending is not None:
                return bytes(pending.content[offset:offset + size])
            with open(self.real(path), "rb") as file:
                file.seek(offset)
                return file.read(size)

    def write(self, path, data, offset, fh):
        with self.mutex:
            self.alive()
            armed = self.armed
            if not (armed and path.endswith(armed)):
                self.load(path).write(data, offset)
                return len(data)
            self.armed = None
        # The aimed write: the power goes now, and this write is lost with the rest.
        self.on_cut(self.cut())
        raise FuseOSError(errno.EIO)

    def truncate(self, path, length, fh=None):
        with self.mutex:
            self.alive()
            self.load(path).truncate(length)

    def fsync(self, path, datasync, fh):
        with self.mutex:
            self.alive()
            self.sync_file(path)
            return 0

    def flush(self, path, fh):
        with self.mutex:
            self.alive()
            return 0

    def release(self, path, fh):
        return 0

    def unlink(self, path):
        with self.mutex:
            self.alive()
            self.pending.pop(path, None)
            self.unsynced_new.discard(path)
            os.unlink(self.real(path))

    def rename(self, old, new):
        with self.mutex:
            self.alive()
            os.rename(self.real(old), self.real(new))
            if old in self.pending:
                self.pending[new] = self.pending.pop(old)
            if old in self.unsynced_new:
                self.unsynced_new.discard(old)
                self.unsynced_new.add(new)

    def chmod(self, path, mode):
        with self.mutex:
            self.alive()
            os.chmod(self.real(path), mode)

    def chown(self, path, uid, gid):
        with self.mutex:
            self.alive()
            os.chown(self.real(path), uid, gid)

    def utimens(self, path, times=None):
        with self.mutex:
            self.alive()
            os.utime(self.real(path), times)

    # MARK: directories

    def mkdir(self, path, mode):
        with self.mutex:
            self.alive()
            os.mkdir(self.real(path), mode)

    def rmdir(self, path):
        with self.mutex:
            self.alive()
            os.rmdir(self.real(path))

    def readdir(self, path, fh):
        with self.mutex:
            self.alive()
            return [".", ".."] + os.listdir(self.real(path))

    def fsyncdir(self, path, datasync, fh):
        with self.mutex:
            self.alive()
            directory = path.rstrip("/") or "/"
            for new in [p for p in self.unsynced_new if (os.path.dirname(p) or "/") == directory]:
                self.unsynced_new.discard(new)
            self.sync_directory(path)
            return 0

    def statfs(self, path):
        with self.mutex:
            self.alive()
            st = os.statvfs(self.real(path))
            return {key: getattr(st, key) for key in (
                "f_bavail", "f_bfree", "f_blocks", "f_bsize", "f_favail", "f_ffree", "f_files", "f_flag", "f_frsize", "f_namemax")}




def main() -> None:
    if len(sys.argv) != 3:
        sys.exit("usage: cutfs.py BACKING MOUNTPOINT")
    backing, mountpoint = os.path.realpath(sys.argv[1]), os.path.realpath(sys.argv[2])
    filesystem = CutFS(backing)
    fuseconnection.record_pid(os.getpid(), "cutfs " + mountpoint)

    def announce(lost: int) -> None:
        # The harness waits for this file: the cut has happened, not merely been asked
        # for. It says how many unsynced bytes the cut threw away.
        with open(backing + ".cut.tmp", "w") as marker:
            marker.write(f"{lost}\n")
        os.rename(backing + ".cut.tmp", backing + ".cut")

    def request(attribute: str):
        def handler(*_):
            setattr(filesystem, attribute, True)
        return handler

    filesystem.on_cut = announce
    signal.signal(signal.SIGUSR1, request("cut_requested"))
    signal.signal(signal.SIGTERM, request("stop_requested"))
    signal.signal(signal.SIGINT, request("stop_requested"))
    signal.signal(signal.SIGUSR2, lambda *_: filesystem.arm((".sqlite",)))
    signal.signal(signal.SIGHUP, lambda *_: filesystem.arm((".sqlite", ".sqlite-wal")))
    # nothreads: one call at a time, so a cut falls between two calls, never inside one.
    # The loop runs off the main thread, which watches for signals, its parent and the
    # loop itself, and never waits on the mount.
    loop = threading.Thread(
        target=lambda: FUSE(filesystem, mountpoint, foreground=True, nothreads=True, allow_other=True,
                            default_permissions=True, fsname="cutfs", subtype="cutfs"),
        daemon=True)
    loop.start()
    parent = os.getppid()
    why = "unmounted"
    try:
        while loop.is_alive():
            time.sleep(0.02)
            if filesystem.cut_requested:
                filesystem.cut_requested = False
                lost = filesystem.cut(timeout=CUT_DEADLINE)
                if lost is None:
                    why = f"a cut could not take the lock in {CUT_DEADLINE} s: the FUSE thread is stuck"
                    break
                announce(lost)
            if filesystem.stop_requested:
                why = "stopped"
                break
            if os.getppid() != parent:
                why = "the process that started cutfs is gone"
                break
    except BaseException as error:  # noqa: BLE001 (every way out must release the mount)
        why = f"error: {error!r}"
        raise
    finally:
        if loop.is_alive():
            # Abort first: a lazy unmount alone leaves whatever waits on the mount waiting.
            fuseconnection.release(mountpoint)
            loop.join(5)
        print(f"cutfs {mountpoint}: {why}", file=sys.stderr, flush=True)
        fuseconnection.forget_pid(os.getpid())


if __name__ == "__main__":
    main()
