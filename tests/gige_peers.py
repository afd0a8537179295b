"""The fake GigE Vision camera (arv-fake-gv-camera-0.8 from aravis-tools) for the tests that stream from it."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

from edge_ad.sources import SourceError
from edge_ad.sources.aravis import import_aravis

FAKE = shutil.which("arv-fake-gv-camera-0.8")
SERIAL = "EDGEADT1"
try:
    import_aravis()
    HAVE_ARAVIS = True
except SourceError:
    HAVE_ARAVIS = False


def _gvcp_bound(ip: str = "127.0.0.1") -> bool:
    """Is UDP ip:3956 (GVCP) bound? Read from /proc so no packet is sent."""
    want = "".join(f"{int(x):02X}" for x in reversed(ip.split("."))) + ":0F74"
    return any(line.split()[1] == want for line in Path("/proc/net/udp").read_text().splitlines()[1:])


def loopback_alias(ip: str) -> str | None:
    """Make sure `ip` is an address of the loopback device (a second fake camera binds it); None when it is, else
    why it cannot be (not root, no iproute2)."""
    have = subprocess.run(["ip", "-o", "addr", "show", "dev", "lo"], capture_output=True, text=True)
    if have.returncode != 0:
        return f"`ip addr` failed: {have.stderr.strip()} (apt install iproute2)"
    if f"inet {ip}/" in have.stdout:
        return None
    add = subprocess.run(["ip", "addr", "add", f"{ip}/8", "dev", "lo"], capture_output=True, text=True)
    return None if add.returncode == 0 else f"cannot add {ip} to lo: {add.stderr.strip()} (needs root)"


class FakeCamera:
    """arv-fake-gv-camera-0.8 on a loopback address; start/kill/restart, always killed at teardown."""

    def __init__(self, ip: str = "127.0.0.1", serial: str = SERIAL) -> None:
        self.ip, self.serial = ip, serial
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        assert FAKE is not None
        self.proc = subprocess.Popen([FAKE, "-i", self.ip, "-s", self.serial], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while not _gvcp_bound(self.ip):
            assert self.proc.poll() is None, "fake camera exited at start"
            assert time.monotonic() < deadline, f"fake camera did not bind {self.ip}:3956"
            time.sleep(0.05)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.proc = None
