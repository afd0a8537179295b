"""Inspector + PlcLink over an in-memory adapter: handshake order, time budget, queue/overflow, recipes, faults,
heartbeat; plus the documented signal layout. Shared helpers: tests/plc_peers.py; fixtures: conftest.py."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from plc_peers import (
    BLOB_IMG,
    DARK_IMG,
    FAST_LINK,
    MemoryAdapter,
    QueueSource,
    SlowDetector,
    wait_for,
)

from edge_ad.errors import ConfigError
from edge_ad.plc.inspector import Inspector
from edge_ad.plc.link import PlcError, PlcLink, open_adapter
from edge_ad.plc.signals import (
    DB_SIZE,
    INPUTS,
    OUTPUT_BYTE,
    OUTPUTS,
    SIGNALS,
    TYPE_BYTES,
    TYPE_REGISTERS,
    DefectCode,
    FaultCode,
    layout_markdown,
)
from edge_ad.runtime import Detector
from edge_ad.sources.base import Source

ROOT = Path(__file__).resolve().parents[1]


# ---- in-memory adapter ---------------------------------------------------------------------------------------
def _inspector(recipes: Any, source: Source, adapter: MemoryAdapter, **kw: Any) -> Inspector:
    link_kw = {**FAST_LINK, **kw.pop("link", {})}
    return Inspector(recipes, source, PlcLink(adapter, **link_kw), poll_s=0.002, backend="onnxruntime", **kw)


# ---- signal layout -------------------------------------------------------------------------------------------
def test_layout_has_no_overlaps_and_is_documented() -> None:
    regs: set[int] = set()
    bits: set[tuple[int, int]] = set()
    for s in SIGNALS:
        span = set(range(s.register, s.register + TYPE_REGISTERS[s.type]))
        assert not regs & span, f"Modbus register overlap at {s.name}"
        regs |= span
        if s.type == "BOOL":
            assert (s.s7_byte, s.s7_bit) not in bits, s.name
            bits.add((s.s7_byte, s.s7_bit))
        else:
            assert s.s7_byte % 2 == 0, f"{s.name}: S7 words must start on an even byte"
            for b in range(s.s7_byte, s.s7_byte + TYPE_BYTES[s.type]):
                assert all(bb != b for bb, _ in bits), s.name
                bits |= {(b, k) for k in range(8)}
    # the PLC owns bytes < OUTPUT_BYTE, vision the rest: no shared byte, so no read-modify-write races
    assert max(s.s7_byte + TYPE_BYTES[s.type] for s in INPUTS) <= OUTPUT_BYTE
    assert min(s.s7_byte for s in OUTPUTS) == OUTPUT_BYTE and DB_SIZE == 80
    readme = (ROOT / "samples" / "README.md").read_text(encoding="utf-8")
    assert layout_markdown() in readme, "samples/README.md signal table differs from edge_ad.plc.signals"


def test_bad_urls_and_options_raise_plc_or_config_errors() -> None:
    for url in ("ftp://x:1", "modbus://", "s7://10.0.0.1/0/1", "s7://10.0.0.1/0/1/x", "modbus://h:1?unit=999"):
        with pytest.raises(PlcError):
            open_adapter(url)
    with pytest.raises(ConfigError, match="trigger"):
        Inspector(object(), QueueSource(), PlcLink(MemoryAdapter()), trigger="sometimes")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="recipe index"):
        Inspector({0: object()}, QueueSource(), PlcLink(MemoryAdapter()))  # type: ignore[dict-item]


# ---- handshake -----------------------------------------------------------------------------------------------
def test_trigger_handshake_order_and_part_id_echo(detector: Detector) -> None:
    mem, src = MemoryAdapter(), QueueSource()
    insp = _inspector(detector, src, mem)
    plc = mem.program()
    with insp:
        wait_for(lambda: mem.get("Ready"), what="Ready")
        for part, img, ok in ((101, BLOB_IMG, False), (102, DARK_IMG, True)):
            src.push(img)
            n = len(plc.results)
            plc.trigger(part)
            plc.run_until(lambda n=n: len(plc.results) > n, what=f"result of part {part}")
            res = plc.results[-1]
            assert (res["PartIdEcho"], res["OK"], res["NG"], res["Late"]) == (part, ok, not ok, False)
            assert res["DefectCode"] == (DefectCode.OK if ok else DefectCode.ANOMALY)
            assert (res["AnomalyScore"] < 0.5) == ok
            wait_for(lambda: mem.get("Ready") and not mem.get("TriggerAck"), what="Ready after Trigger low")
    assert plc.seqs() == [1, 2]
    # order of writes for the first trigger: Busy+TriggerAck, result fields, ResultValid toggle alone, Busy = 0
    w = mem.writes
    i_trig = next(i for i, x in enumerate(w) if x.get("TriggerAck") is True)
    assert w[i_trig]["Busy"] is True and w[i_trig]["Ready"] is False
    i_fields = next(i for i, x in enumerate(w) if x.get("PartIdEcho") == 101)
    i_toggle = next(i for i, x in enumerate(w) if i > i_fields and "ResultValid" in x)
    i_idle = next(i for i, x in enumerate(w) if i > i_toggle and "Busy" in x)
    assert i_trig < i_fields < i_toggle < i_idle and w[i_idle]["Busy"] is False
    assert all("Busy" not in x for x in w[i_trig + 1 : i_toggle]), "Busy must stay set until ResultValid toggles"
    assert w[i_toggle] == {"ResultValid": True}
    assert mem.get("VisionState") == 1  # Halted after stop


def test_time_budget_fail_safe_ng_with_late_flag_and_repeated_late_fault(detector: Detector) -> None:
    mem, src = MemoryAdapter(), QueueSource()
    insp = _inspector(SlowDetector(detector, 0.3), src, mem, budget_ms=50.0)
    plc = mem.program()
    with insp:
        for k in range(3):
            wait_for(lambda: mem.get("Ready"), what="Ready")
            src.push(DARK_IMG)  # would be OK, but too late
            t0 = time.monotonic()
            plc.trigger(200 + k)
            plc.run_until(lambda k=k: len(plc.results) == k + 1, what="fail-safe result")
            assert time.monotonic() - t0 < 0.25, "fail-safe NG must not wait for the slow inspection"
            res = plc.results[-1]
            assert (res["OK"], res["NG"], res["Late"], res["DefectCode"]) == (False, True, True, DefectCode.LATE)
            assert res["AnomalyScore"] == 1.0 and res["PartIdEcho"] == 200 + k
            wait_for(lambda k=k: insp.stats.late_discarded == k + 1, what="late result discarded")
        wait_for(lambda: mem.get("FaultCode") == FaultCode.LATE_REPEATED, what="LATE_REPEATED fault")
        assert mem.get("Fault") is True
        mem.put("FaultReset", True)
        wait_for(lambda: not mem.get("Fault"), what="fault reset")
    assert insp.stats.late == 3 and plc.seqs() == [1, 2, 3]


def test_results_queued_while_link_down_delivered_in_order_and_overflow_faulted(detector: Detector) -> None:
    mem, src = MemoryAdapter(), QueueSource()
    insp = _inspector(detector, src, mem, trigger="camera", link={"queue_size": 3})
    plc = mem.program()
    with insp:
        plc.run_until(lambda: mem.get("Ready") or mem.get("VisionState") == 5, what="running")
        src.push(BLOB_IMG)
        plc.run_until(lambda: plc.seqs() == [1], what="first result")
        mem.down = True  # PLC gone: five more parts arrive, the queue holds three
        for k in range(5):
            src.push(DARK_IMG if k % 2 else BLOB_IMG)
        wait_for(lambda: insp.stats.inspections == 6, what="all parts inspected while down")
        assert insp.link.queue_depth == 3 and insp.link.overflows == 2
        mem.down = False
        plc.run_until(lambda: len(plc.seqs()) == 4, what="queued results after reconnect")
        wait_for(lambda: mem.get("FaultCode") == FaultCode.QUEUE_OVERFLOW, what="overflow fault")
        assert mem.get("QueueOverflows") == 2 and mem.get("Fault") is True
    assert plc.seqs() == [1, 2, 3, 4]
    assert [r["OK"] for r in plc.results[-3:]] == [False, True, False]
    assert insp.link.reconnects >= 1


def test_recipe_switch_on_plc_request_and_unknown_recipe_fault(detector: Detector,
                                                               plc_packages: dict[str, Path]) -> None:
    mem, src = MemoryAdapter(), QueueSource()
    insp = _inspector({1: detector, 2: plc_packages["b"]}, src, mem)
    plc = mem.program()
    with insp:
        wait_for(lambda: mem.get("Ready") and mem.get("ModelId") == 1, what="recipe 1 ready")
        mem.put("RecipeRequest", 2)
        wait_for(lambda: mem.get("ModelId") == 2 and mem.get("Ready"), what="recipe 2 active")
        src.push(DARK_IMG)  # OK under recipe 1, NG under recipe 2 (threshold 0.05)
        plc.trigger(7)
        plc.run_until(lambda: plc.results, what="result under recipe 2")
        assert plc.results[-1]["NG"] is True and plc.results[-1]["ModelId"] == 2
        mem.put("RecipeRequest", 9)
        wait_for(lambda: mem.get("FaultCode") == FaultCode.RECIPE_UNKNOWN, what="unknown recipe fault")
        assert mem.get("ModelId") == 2
    assert insp.stats.recipe_switches == 1


def test_bad_frame_and_missing_frame_are_fail_safe_ng(detector: Detector) -> None:
    mem, src = MemoryAdapter(), QueueSource()
    insp = _inspector(detector, src, mem, budget_ms=500.0)
    plc = mem.program()
    with insp:
        src.push(None, error="frame 3 incomplete")
        plc.trigger(1)
        plc.run_until(lambda: plc.results, what="error result")
        assert plc.results[-1]["DefectCode"] == DefectCode.INSPECTION_ERROR and plc.results[-1]["NG"] is True
        wait_for(lambda: mem.get("Ready"), what="Ready")
        src.end()  # the source runs dry: the next trigger gets no frame
        plc.trigger(2)
        plc.run_until(lambda: len(plc.results) == 2, what="no-image result")
        assert plc.results[-1]["DefectCode"] == DefectCode.NO_IMAGE and plc.results[-1]["Late"] is False
        wait_for(lambda: mem.get("FaultCode") == FaultCode.SOURCE, what="source fault")


def test_heartbeat_both_ways() -> None:
    mem = MemoryAdapter()
    link = PlcLink(mem, heartbeat_s=0.02, plc_watchdog_s=0.15, backoff_s=(0.02, 0.1))
    end = time.monotonic() + 0.3
    k = 0
    while time.monotonic() < end:  # PLC counts for 0.3 s
        k += 1
        mem.put("PlcHeartbeat", k)
        link.service()
        time.sleep(0.01)
    assert not link.plc_heartbeat_lost
    hb = mem.get("Heartbeat")
    assert hb >= 5, "vision heartbeat must count"
    end = time.monotonic() + 1.0
    while time.monotonic() < end and not link.plc_heartbeat_lost:  # PLC stops counting
        link.service()
        time.sleep(0.01)
    assert link.faults() == [FaultCode.PLC_HEARTBEAT]
    mem.put("PlcHeartbeat", k + 1)
    link.service()
    assert link.faults() == [] and mem.get("Heartbeat") > hb
    link.close()


def test_sample_python_api_runs(plc_packages: dict[str, Path], tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    import cv2

    img = tmp_path / "part.png"
    cv2.imwrite(str(img), BLOB_IMG)
    out = subprocess.run(
        [sys.executable, str(ROOT / "samples" / "python_api.py"), str(plc_packages["a"]), str(img)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("NG score=1.0000") and "defect at x=140 y=80 40x40" in out.stdout, out.stdout
    assert len((ROOT / "samples" / "python_api.py").read_text().strip().splitlines()) <= 10


def test_missing_protocol_library_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    from edge_ad.plc.modbus import ModbusServerAdapter

    monkeypatch.setitem(sys.modules, "pymodbus", None)  # as if not installed
    with pytest.raises(PlcError, match=r"pip install 'edge-ad\[plc\]'"):
        ModbusServerAdapter("127.0.0.1", 1).connect()
