"""The station over every PLC protocol and role against a real peer (tests/plc_peers.py): the trigger handshake
and time budget (edge-ad as Modbus/OPC UA server, and as Modbus/OPC UA/S7 client), a PLC restart with zeroed memory
that loses no result (client roles), and the fail-safe record on the wire (all)."""

from __future__ import annotations

import math
from typing import Any

import pytest
from plc_peers import (
    BLOB_IMG,
    CLIENT_KINDS,
    DARK_IMG,
    FAST_LINK,
    KINDS,
    LIBRARY,
    SERVER_KINDS,
    PlcProgram,
    QueueSource,
    SlowDetector,
    make_peer,
    station,
    wait_for,
)

from edge_ad.plc.inspector import Inspector
from edge_ad.plc.link import PlcLink, open_adapter
from edge_ad.runtime import Detector
from edge_ad.station.record import DefectCode, InspectionRecord

pytestmark = pytest.mark.slow  # trains/exports models or starts real peers: not in `make test-fast`

@pytest.mark.parametrize("kind", KINDS)
def test_handshake_and_time_budget(kind: str, detector: Detector) -> None:
    pytest.importorskip(LIBRARY[kind])
    url, peer = make_peer(kind)
    src, slow = QueueSource(), SlowDetector(detector, 0.05)
    insp = Inspector(slow, src, url, budget_ms=300.0, poll_s=0.002, link_options=FAST_LINK)
    plc = PlcProgram(peer.read, peer.write, peer.refresh)
    with station(kind, insp, peer):
        plc.run_until(lambda: peer.read("Ready"), timeout=20.0, what="Ready")
        for part, img, ok in ((5001, BLOB_IMG, False), (5002, DARK_IMG, True)):
            src.push(img)
            plc.trigger(part)
            plc.run_until(lambda p=part: plc.results and plc.results[-1]["PartIdEcho"] == p, what=f"part {part}")
            res = plc.results[-1]
            assert (res["OK"], res["NG"], res["Late"]) == (ok, not ok, False)
            assert (res["AnomalyScore"] > 0.5) == (not ok)
            plc.run_until(lambda: peer.read("Ready") and not peer.read("TriggerAck"), what="Ready again")
        assert plc.busy_before_toggle(), "Busy/TriggerAck must be set before ResultValid toggles"
        slow.delay = 0.6  # longer than the 0.3 s budget
        src.push(DARK_IMG)
        plc.trigger(5003)
        plc.run_until(lambda: len(plc.results) == 3, what="fail-safe result")
        assert (plc.results[-1]["Late"], plc.results[-1]["NG"], plc.results[-1]["DefectCode"]) == \
            (True, True, DefectCode.LATE)
        assert peer.read("Heartbeat") > 0 and peer.read("ModelId") == 1
    assert plc.seqs() == [1, 2, 3]


@pytest.mark.parametrize("kind", CLIENT_KINDS)
def test_plc_restart_loses_no_result(kind: str, detector: Detector) -> None:
    pytest.importorskip(LIBRARY[kind])
    url, peer = make_peer(kind)
    src = QueueSource()
    insp = Inspector(detector, src, PlcLink(open_adapter(url), **FAST_LINK), trigger="camera", poll_s=0.002)
    plc = PlcProgram(peer.read, peer.write)
    with station(kind, insp, peer):
        src.push(BLOB_IMG)
        plc.run_until(lambda: plc.seqs() == [1], what="first result")
        peer.stop()  # the PLC goes down while three parts are inspected
        for img in (DARK_IMG, BLOB_IMG, DARK_IMG):
            src.push(img)
        wait_for(lambda: insp.stats.inspections == 4 and not insp.link.connected, timeout=10.0,
                 what="inspections while down")
        assert insp.link.queue_depth == 3
        peer.start()  # back on the same port with zeroed memory
        plc.run_until(lambda: plc.seqs() == [1, 2, 3, 4], timeout=30.0, what="queued results after restart")
        wait_for(lambda: peer.read("VisionState") == 5, what="status rewritten after restart")
    by_seq = {int(r["ResultSeq"]): r for r in plc.results}
    assert [by_seq[k]["OK"] for k in range(1, 5)] == [False, True, False, True]
    assert [by_seq[k]["PartIdEcho"] for k in range(1, 5)] == [0, 1, 2, 3]  # frame ids, in order
    assert insp.link.reconnects >= 1 and insp.link.overflows == 0


@pytest.mark.parametrize("kind", KINDS)
def test_a_non_finite_record_goes_out_as_ng(kind: str) -> None:
    """A record that claims OK with NaN/inf scores (a bug upstream) goes out as NG, INSPECTION_ERROR, score 1.0."""
    pytest.importorskip(LIBRARY[kind])
    url, peer = make_peer(kind)
    link = PlcLink(open_adapter(url), ack=False, hold_s=0.0, **FAST_LINK)

    def read(name: str) -> Any:
        peer.refresh()
        return peer.read(name)

    try:
        wait_for(link.service, 20.0, f"{kind} link up")
        for seq, (score, px) in enumerate([(math.nan, 0.1), (0.1, math.inf), (-math.inf, math.nan)], start=1):
            link.post(InspectionRecord(seq=seq, part_id=100 + seq, ok=True, defect_code=DefectCode.OK,
                                       anomaly_score=score, max_pixel_score=px, defect_area=0, inspection_ms=5.0,
                                       model_id=1))
            wait_for(lambda s=seq: (link.service(), read("ResultSeq") == s)[1], 10.0, f"{kind} result {seq}")
            assert (read("OK"), read("NG"), read("DefectCode")) == (False, True, DefectCode.INSPECTION_ERROR)
            assert read("AnomalyScore") == 1.0 or math.isfinite(score)
            assert read("MaxPixelScore") == 1.0 or math.isfinite(px)
            assert read("PartIdEcho") == 100 + seq
    finally:
        if kind in SERVER_KINDS:
            peer.stop()
        link.close()
        if kind in CLIENT_KINDS:
            peer.stop()
