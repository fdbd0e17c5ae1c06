"""Releasing a FUSE mount that may be stuck, and the pid files of what the tests started.

    fuseconnection.py release MOUNTPOINT    (what the soak runs on a mount it gives up on)

A FUSE mount whose server has stopped answering blocks every call on it, and with them
sync(), df and anything that walks the tree above it, until its connection is aborted
(`/sys/fs/fuse/connections/<device>/abort`). Nothing here touches a mount's files: the
mount table comes from /proc/self/mountinfo and the detach is umount2(MNT_DETACH) on the
path as given, so none of it can block on the mount it clears.

Processes the tests start leave a pid file in PIDS, holding the process's start time
(from /proc/<pid>/stat) so that a pid taken by another process since is never killed.
"""

import contextlib
import ctypes
import os
import signal
import subprocess

CONNECTIONS = "/sys/fs/fuse/connections"
PIDS = "/tmp/plunkd-test-pids"
MNT_DETACH = 2

_libc = ctypes.CDLL(None, use_errno=True)


def unescape(field: str) -> str:
    # mountinfo writes space, tab, newline and backslash as octal escapes.
    return field.encode().decode("unicode_escape").encode("latin-1").decode()


def fuse_mounts() -> list[dict]:
    """Every FUSE mount of this mount namespace: mountpoint, connection, type, source."""
    found = []
    with open("/proc/self/mountinfo") as table:
        for line in table:
            fields = line.split()
            separator = fields.index("-")
            fstype, source = fields[separator + 1], fields[separator + 2]
            if fstype != "fuse" and not fstype.startswith("fuse."):
                continue
            major, minor = (int(part) for part in fields[2].split(":"))
            # The kernel names a connection by its device number in its own encoding.
            found.append({"mountpoint": unescape(fields[4]), "connection": (major << 20) | minor,
                          "type": fstype, "source": source})
    return found


def is_cutfs(mount: dict) -> bool:
    """cutfs mounts say so in their type; those of an older cutfs were named CutFS."""
    return mount["type"] == "fuse.cutfs" or mount["source"] == "CutFS"


@contextlib.contextmanager
def control_filesystem():
    """/sys/fs/fuse/connections, mounted for the while if it is not (and unmounted
    after, so that nothing of the tests' is left mounted)."""
    with open("/proc/self/mountinfo") as table:
        present = any(" - fusectl " in line for line in table)
    if not present:
        subprocess.run(["mount", "-t", "fusectl", "fusectl", CONNECTIONS], check=False, timeout=10,
                       stderr=subprocess.DEVNULL)
    try:
        yield
    finally:
        if not present:
            _libc.umount2(CONNECTIONS.encode(), MNT_DETACH)


def abort(connection: int) -> bool:
    with control_filesystem():
        try:
            with open(f"{CONNECTIONS}/{connection}/abort", "w") as control:
                control.write("1")
            return True
        except OSError:
            return False


def detach(mountpoint: str) -> bool:
    return _libc.umount2(mountpoint.encode(), MNT_DETACH) == 0


def release(mountpoint: str) -> None:
    """Aborts the connection under `mountpoint` (if it is still mounted), then detaches it."""
    for mount in fuse_mounts():
        if mount["mountpoint"] == mountpoint:
            abort(mount["connection"])
            detach(mountpoint)


# MARK: pid files

def start_time(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            # Field 22, counted after the command name, which may hold spaces and parentheses.
            return stat.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def record_pid(pid: int, what: str) -> None:
    start = start_time(pid)
    if start is None:
        return
    os.makedirs(PIDS, mode=0o755, exist_ok=True)
    with open(f"{PIDS}/{pid}", "w") as record:
        record.write(f"{start} {what}\n")


def forget_pid(pid: int) -> None:
    try:
        os.unlink(f"{PIDS}/{pid}")
    except OSError:
        pass


def _records() -> list[tuple[int, str, str]]:
    """(pid, start time, what) of every readable pid file."""
    found = []
    try:
        names = os.listdir(PIDS)
    except OSError:
        return found
    for name in names:
        try:
            with open(f"{PIDS}/{name}") as record:
                start, _, what = record.read().strip().partition(" ")
            found.append((int(name), start, what))
        except (OSError, ValueError):
            continue
    return found


def recorded_alive() -> list[str]:
    """The recorded processes that still run (a zombie has ended)."""
    alive = []
    for pid, start, what in _records():
        try:
            with open(f"/proc/{pid}/stat") as stat:
                state = stat.read().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if start_time(pid) == start and state != "Z":
            alive.append(f"{pid} ({what})")
    return alive


def kill_recorded() -> list[str]:
    """Kills every recorded process that is still the one recorded; returns what it killed."""
    killed = []
    for pid, start, what in _records():
        if start_time(pid) == start:
            for sig in (signal.SIGKILL, signal.SIGCONT):
                try:
                    os.kill(pid, sig)
                except OSError:
                    pass
            killed.append(f"{pid} ({what})")
        forget_pid(pid)
    return killed


if __name__ == "__main__":
    import sys

    if len(sys.argv) != 3 or sys.argv[1] != "release":
        sys.exit("usage: fuseconnection.py release MOUNTPOINT")
    release(os.path.realpath(sys.argv[2]))
