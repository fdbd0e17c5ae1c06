"""Mounting cutfs from a test: start, cut the power, mount again on what survived, stop."""

import os
import signal
import subprocess
import time

HERE = os.path.dirname(os.path.abspath(__file__))


class CutMount:
    def __init__(self, scratch: str):
        self.backing = os.path.join(scratch, "backing")
        self.mountpoint = os.path.join(scratch, "mnt")
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
        while not os.path.ismount(self.mountpoint):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("cutfs did not mount " + self.mountpoint)
            time.sleep(0.02)

    def cut(self) -> None:
        """The power goes: unsynced writes are dropped and the disk stops answering."""
        marker = self.backing + ".cut"
        self.process.send_signal(signal.SIGUSR1)
        deadline = time.monotonic() + 20
        while not os.path.exists(marker):
            if time.monotonic() > deadline:
                raise RuntimeError("cutfs did not cut")
            time.sleep(0.005)
        self.cuts += 1

    def aim(self, sig: int) -> None:
        """Arms a cut at the next write to the database (SIGUSR2) or its log too (SIGHUP)."""
        self.process.send_signal(sig)
        time.sleep(0.2)  # the signal is handled between two calls; nothing is written meanwhile

    def has_cut(self) -> bool:
        return os.path.exists(self.backing + ".cut")

    def stop(self) -> None:
        if self.process is None:
            return
        subprocess.run(["umount", "-l", self.mountpoint], check=False, stderr=subprocess.DEVNULL)
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None

    def restart(self) -> None:
        """The power is back: a fresh mount on what was synced."""
        self.stop()
        self.start()
