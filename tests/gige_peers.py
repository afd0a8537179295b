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


def _gvcp_bound() -> bool:
    """Is UDP 127.0.0.1:3956 (GVCP) bound? Read from /proc so no packet is sent."""
    return any(line.split()[1] == "0100007F:0F74" for line in Path("/proc/net/udp").read_text().splitlines()[1:])


class FakeCamera:
    """arv-fake-gv-camera-0.8 on loopback; start/kill/restart, always killed at teardown."""

    def __init__(self) -> None:
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        assert FAKE is not None
        self.proc = subprocess.Popen([FAKE, "-i", "127.0.0.1", "-s", SERIAL], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while not _gvcp_bound():
            assert self.proc.poll() is None, "fake camera exited at start"
            assert time.monotonic() < deadline, "fake camera did not bind 127.0.0.1:3956"
            time.sleep(0.05)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.proc = None
