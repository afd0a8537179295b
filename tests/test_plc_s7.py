"""Siemens S7 on loopback against the server python-snap7 ships (`snap7.server.Server`), which plays the PLC:
trigger handshake, time budget, and a PLC restart with zeroed DB mid-run without losing a result."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from test_plc_inspector import (
    BLOB_IMG,
    DARK_IMG,
    FAST_LINK,
    PlcProgram,
    QueueSource,
    SlowDetector,
    detector,
    free_port,
    plc_packages,
    wait_for,
)

from edge_ad.plc.inspector import Inspector
from edge_ad.plc.link import PlcError, PlcLink, open_adapter
from edge_ad.plc.s7 import S7Adapter, decode_from, encode_into
from edge_ad.plc.signals import BY_NAME, DB_SIZE, DefectCode
from edge_ad.runtime import Detector

pytest.importorskip("snap7")
__all__ = ["detector", "plc_packages"]  # session fixtures reused from test_plc_inspector
DB = 100


class SnapPlc:
    """snap7's server holding DB100; the PLC program works on the DB bytes directly, as a PLC would."""

    def __init__(self, port: int) -> None:
        from snap7.server import Server
        from snap7.type import SrvArea

        self.db = bytearray(DB_SIZE)
        self.lock = threading.Lock()
        self.server = Server(log=False)
        self.server.register_area(SrvArea.DB, DB, self.db)
        self.server.start_to("127.0.0.1", port)

    def read(self, name: str) -> Any:
        with self.lock:
            return decode_from(self.db, 0, BY_NAME[name])

    def write(self, name: str, value: Any) -> None:
        with self.lock:
            encode_into(self.db, 0, BY_NAME[name], value)

    def stop(self) -> None:
        self.server.stop()


def test_url_parsing() -> None:
    a = open_adapter("s7://127.0.0.1:1102/0/2/DB7")
    assert isinstance(a, S7Adapter) and (a.rack, a.slot, a.db, a.port) == (0, 2, 7, 1102)
    with pytest.raises(PlcError, match="rack"):
        open_adapter("s7://127.0.0.1/9/1/100")


def test_trigger_handshake_and_time_budget(detector: Detector) -> None:
    port = free_port()
    plc_mem = SnapPlc(port)
    src = QueueSource()
    slow = SlowDetector(detector, 0.05)
    insp = Inspector(slow, src, f"s7://127.0.0.1:{port}/0/1/{DB}", budget_s=0.3, poll_s=0.002,
                     link_options=FAST_LINK)
    plc = PlcProgram(plc_mem.read, plc_mem.write)
    try:
        with insp:
            plc.run_until(lambda: plc_mem.read("Ready"), what="Ready")
            for part, img, ok in ((70001, BLOB_IMG, False), (70002, DARK_IMG, True)):
                src.push(img)
                plc.trigger(part)
                plc.run_until(lambda p=part: plc.results and plc.results[-1]["PartIdEcho"] == p, what=f"part {part}")
                assert (plc.results[-1]["OK"], plc.results[-1]["NG"], plc.results[-1]["Late"]) == (ok, not ok, False)
                plc.run_until(lambda: plc_mem.read("Ready") and not plc_mem.read("TriggerAck"), what="Ready again")
            assert plc.busy_before_toggle(), "Busy/TriggerAck must be set before ResultValid toggles"
            slow.delay = 0.6
            src.push(DARK_IMG)
            plc.trigger(70003)
            plc.run_until(lambda: len(plc.results) == 3, what="fail-safe result")
            assert (plc.results[-1]["Late"], plc.results[-1]["DefectCode"]) == (True, DefectCode.LATE)
            assert plc_mem.read("Heartbeat") > 0 and plc_mem.read("ModelId") == 1
    finally:
        plc_mem.stop()
    assert plc.seqs() == [1, 2, 3]


def test_plc_restart_loses_no_result(detector: Detector) -> None:
    port = free_port()
    plc_mem = SnapPlc(port)
    src = QueueSource()
    insp = Inspector(detector, src, PlcLink(S7Adapter("127.0.0.1", 0, 1, DB, port), **FAST_LINK),
                     trigger="camera", poll_s=0.002)
    plc = PlcProgram(plc_mem.read, plc_mem.write)
    try:
        with insp:
            src.push(BLOB_IMG)
            plc.run_until(lambda: plc.seqs() == [1], what="first result")
            plc_mem.stop()
            for img in (DARK_IMG, BLOB_IMG, DARK_IMG):
                src.push(img)
            wait_for(lambda: insp.stats.inspections == 4 and not insp.link.connected, what="inspections while down")
            plc_mem = SnapPlc(port)  # restarted PLC, DB zeroed
            plc.read, plc.write = plc_mem.read, plc_mem.write
            plc.run_until(lambda: plc.seqs() == [1, 2, 3, 4], timeout=15.0, what="queued results after restart")
    finally:
        plc_mem.stop()
    by_seq = {int(r["ResultSeq"]): r for r in plc.results}
    assert [by_seq[k]["OK"] for k in range(1, 5)] == [False, True, False, True]
    assert [by_seq[k]["PartIdEcho"] for k in range(1, 5)] == [0, 1, 2, 3]
