"""Mounting cutfs from a test: start, cut the power, mount again on what survived, stop.
Every wait has a deadline, and `stop` releases the mount even from a frozen cutfs."""

import os
import signal
import subprocess
import time

import fuseconnection

HERE = os.path.dirname(os.path.abspath(__file__))


def _mounted(mountpoint: str) -> bool:
    # From the mount table, never a stat of the mount point, which a stuck mount blocks.
    return any(mount["mountpoint"] == mountpoint for mount in fuseconnection.fuse_mounts())


class CutMount:
    def __init__(self, scratch: str):
        self.backing = os.path.realpath(os.path.join(scratch, "backing"))
        self.mountpoint = os.path.realpath(os.path.join(scratch, "mnt"))
        os.makedirs(self.backing, exist_ok=True)
        os.makedirs(self.mountpoint, exist_ok=True)
        self.process = None
        self.cuts = 0

    def start(self) -> None:
        marker = self.backing + ".cut"
        if os.path.exists(marker):
            os.unlink(marker)
        self.process = subprocess.Popen(["/usr/bin/python3", os.path.join(HERE, "cutfs.py"), self.backing, self.mountpoint])
        deadline = time.monotonic() + 20
        while not _mounted(self.mountpoint):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("cutfs did not mount " + self.mountpoint)
            time.sleep(0.02)

    def cut(self, timeout: float = 20) -> None:
        """The power goes: unsynced writes are dropped and the disk stops answering."""
        self.process.send_signal(signal.SIGUSR1)
        self.wait_for_cut(timeout)

    def wait_for_cut(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not self.has_cut():
            if time.monotonic() > deadline:
                raise RuntimeError(f"cutfs did not cut within {timeout} s")
            time.sleep(0.005)
        self.cuts += 1

    def aim(self, sig: int) -> None:
        """Arms a cut at the next write to the database (SIGUSR2) or its log too (SIGHUP)."""
        self.process.send_signal(sig)
        time.sleep(0.2)  # the signal is handled between two calls; nothing is written meanwhile

    def has_cut(self) -> bool:
        return os.path.exists(self.backing + ".cut")

    def stop(self) -> None:
        """Asks cutfs to release its mount; a cutfs that does not end in time (frozen,
        stuck) is released from here: its connection aborted, the mount detached, the
        process killed."""
        if self.process is None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            fuseconnection.release(self.mountpoint)
            self.process.kill()
            self.process.wait(timeout=10)
        fuseconnection.release(self.mountpoint)
        fuseconnection.forget_pid(self.process.pid)
        self.process = None

    def restart(self) -> None:
        """The power is back: a fresh mount on what was synced."""
        self.stop()
        self.start()
