"""Shadow model: a second package judges the same parts off the critical path. It never changes or delays what
the PLC gets (a shadow that cannot keep up skips parts, counted), its verdict lands in the part's row
(shadow_ columns), the agreement (OK/NG confusion, score correlation, disagreements with their images) is on the
HMI state and /metrics."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from plc_peers import BLOB_IMG, DARK_IMG, FAST_LINK, MemoryAdapter, QueueSource, free_port, wait_for

from edge_ad.cli.main import main
from edge_ad.plc.inspector import Inspector
from edge_ad.plc.link import PlcLink
from edge_ad.runtime import Detector
from edge_ad.station.shadow import ShadowRunner
from edge_ad.traceability.store import TraceRecorder, TraceStore


class Slow:
    """A detector whose batch calls take `delay` seconds longer."""

    def __init__(self, det: Detector, delay: float) -> None:
        self.det, self.delay, self.package = det, delay, det.package

    def predict_batch(self, images: Any, frames: Any = None, errors: str = "raise") -> Any:
        time.sleep(self.delay)
        return self.det.predict_batch(images, frames, errors=errors)

    def close(self) -> None:
        """The wrapped detector belongs to the test."""


def _run(detector: Detector, shadow: Any, store: TraceStore, images: list[Any]) -> list[dict[str, Any]]:
    from edge_ad.station.recorders import Fanout

    mem, cam = MemoryAdapter(), QueueSource()
    insp = Inspector(detector, cam, PlcLink(mem, **FAST_LINK), poll_s=0.002, trigger="plc", budget_ms=2000.0,
                     recorder=Fanout([TraceRecorder(store), shadow]))
    plc = mem.program()
    with insp:
        wait_for(lambda: mem.get("Ready"), what="Ready")
        for i, img in enumerate(images, 1):
            cam.push(img)
            n = len(plc.results)
            plc.trigger(i)
            plc.run_until(lambda n=n: len(plc.results) > n, what=f"part {i}")
            plc.run_until(lambda: mem.get("Ready") and not mem.get("TriggerAck"), what="Ready again")
        assert shadow.flush()
    return plc.results


def test_shadow_verdicts_land_in_the_rows_and_the_plc_never_sees_them(plc_packages: dict[str, Path],
                                                                      tmp_path: Path) -> None:
    prod = Detector.load(plc_packages["a"], backend="onnxruntime")  # dark part OK
    cand = Detector.load(plc_packages["b"], backend="onnxruntime")  # threshold 0.05: dark part NG
    store = TraceStore(tmp_path / "t.db", "st-shadow")
    images = [DARK_IMG, BLOB_IMG, DARK_IMG, DARK_IMG, BLOB_IMG, DARK_IMG]
    shadow = ShadowRunner(cand, store=store, queue_size=16)  # room for all six: this test counts every verdict
    results = _run(prod, shadow, store, images)
    assert [r["OK"] for r in results] == [img is DARK_IMG for img in images]  # production's verdicts, unchanged
    st = shadow.status()
    assert st["judged"] == 6 and st["skipped"] == 0
    assert st["confusion"] == {"OK/OK": 0, "OK/NG": 4, "NG/OK": 0, "NG/NG": 2}
    assert st["agreement"] == pytest.approx(2 / 6)
    assert [d["part_id"] for d in st["disagreements"]] == [1, 3, 4, 6]
    rows = store.query()
    assert [(r["decision"], r["shadow_decision"]) for r in rows] == [
        ("OK", "NG"), ("NG", "NG"), ("OK", "NG"), ("OK", "NG"), ("NG", "NG"), ("OK", "NG")]
    assert {r["shadow_digest"] for r in rows} == {cand.package.digest}
    assert all(r["package_digest"] == prod.package.digest for r in rows)  # every row names who judged it
    wait_for(lambda: store._images.empty(), what="images written")
    time.sleep(0.2)
    assert all(store.image_file(r) is not None for r in rows if r["decision"] == "OK")  # disagreements: kept
    assert len(store.shadow_rows(disagreements_only=True)) == 4
    from edge_ad.hmi.app import _shadow_metrics

    assert {m.name for m in _shadow_metrics("st", st)} == {"edge_ad_shadow_parts", "edge_ad_shadow_skipped",
                                                           "edge_ad_shadow_agreement",
                                                           "edge_ad_shadow_score_correlation"}
    store.close()
    prod.close()
    cand.close()


def test_a_shadow_that_cannot_keep_up_skips_parts_and_never_delays_production(plc_packages: dict[str, Path],
                                                                             tmp_path: Path) -> None:
    prod = Detector.load(plc_packages["a"], backend="onnxruntime")
    cand = Detector.load(plc_packages["b"], backend="onnxruntime")
    store = TraceStore(tmp_path / "t.db", "st-slow")
    shadow = ShadowRunner(Slow(cand, 0.3), store=store)
    t0 = time.monotonic()
    results = _run(prod, shadow, store, [DARK_IMG] * 20)
    assert len(results) == 20 and all(r["OK"] for r in results) and not any(r["Late"] for r in results)
    st = shadow.status()
    assert st["skipped"] > 0 and st["judged"] + st["skipped"] == 20, st
    rows = store.query()
    assert len(rows) == 20  # frames in = rows out
    assert sum(r["shadow_decision"] is not None for r in rows) == st["judged"]
    assert time.monotonic() - t0 < 20 * 0.3  # production did not wait for the shadow
    store.close()
    prod.close()
    cand.close()


def test_serve_with_a_shadow_from_the_command_line(plc_packages: dict[str, Path], tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    import cv2

    folder = tmp_path / "frames"
    folder.mkdir()
    for i in range(8):
        cv2.imwrite(str(folder / f"{i:02d}.png"), BLOB_IMG if i % 4 == 0 else DARK_IMG)
    db = tmp_path / "trace.db"
    rc = main(["serve", str(plc_packages["a"]), "--shadow", str(plc_packages["b"]), "--source", str(folder),
               "--plc", f"modbus://127.0.0.1:{free_port()}", "--trigger", "free", "--stop-at-end", "--no-ack",
               "--hold-ms", "0", "--db", str(db), "--status-every-s", "0", "--backend", "onnxruntime",
               "--source-option", "rate=5"])
    assert rc == 0, capsys.readouterr().err
    with TraceStore(db) as s:
        rows = s.query()
        assert len(rows) == 8 and {r["shadow_decision"] for r in rows} <= {"NG", None}
        assert sum(r["shadow_decision"] == "NG" for r in rows) >= 1
    capsys.readouterr()
    assert main(["results", "query", str(db), "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    assert "shadow_decision" in got[0]
