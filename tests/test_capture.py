"""`edge-ad capture`: good frames into the MVTec layout; blurred, badly exposed and duplicate frames skipped with
their reason; a capture manifest."""

from __future__ import annotations

import json

import cv2
import numpy as np

from edge_ad.capture import Capturer
from edge_ad.cli.main import main


def _part(seed: int) -> np.ndarray:
    """A textured part image (sharp edges), different per seed."""
    rng = np.random.default_rng(seed)
    img = np.full((240, 320, 3), 120, np.uint8)
    for _ in range(12):
        x, y = rng.integers(0, 280), rng.integers(0, 200)
        cv2.rectangle(img, (int(x), int(y)), (int(x) + 30, int(y) + 25), tuple(int(v) for v in rng.integers(0, 230, 3)),
                      -1)
    return img


def test_checks_and_layout(tmp_path):
    cap = Capturer(tmp_path / "ds", "bracket")
    sharp = _part(1)
    frames = [sharp, sharp.copy(), cv2.GaussianBlur(_part(2), (0, 0), 6), np.full_like(sharp, 255),
              np.zeros_like(sharp), None, _part(3)]
    reasons = [cap.offer(f) for f in frames]
    assert reasons == [None, "duplicate", "blurred", "over-exposed", "under-exposed", "no-image", None]
    files = sorted((tmp_path / "ds" / "bracket" / "train" / "good").glob("*.png"))
    assert [f.name for f in files] == ["000001.png", "000002.png"]
    assert np.array_equal(cv2.imread(str(files[0])), sharp)  # lossless
    again = Capturer(tmp_path / "ds", "bracket")  # a second session continues the numbering
    assert again.offer(_part(4)) is None and (files[0].parent / "000003.png").is_file()


def test_cli_captures_from_a_folder_source_and_writes_the_manifest(tmp_path, capsys):
    src = tmp_path / "cam"
    src.mkdir()
    for i, img in enumerate([_part(10), _part(10), _part(11), cv2.GaussianBlur(_part(12), (0, 0), 6), _part(13)]):
        cv2.imwrite(str(src / f"{i:03d}.png"), img)
    out = tmp_path / "dataset"
    assert main(["capture", "--source", str(src), "--out", str(out), "--category", "bracket", "--limit", "10"]) == 0
    man = json.loads((out / "bracket" / "capture.json").read_text())
    assert (man["kept"], man["considered"], man["skipped"]) == (3, 5, {"duplicate": 1, "blurred": 1})
    assert man["source"] == str(src) and man["format"] == "edge-ad/capture"
    assert len(list((out / "bracket" / "train" / "good").glob("*.png"))) == 3
    assert "kept 3 of 5 considered" in capsys.readouterr().err
    assert main(["capture", "--source", str(src), "--out", str(out), "--limit", "0"]) == 2
    assert main(["capture", "--source", str(src), "--out", str(out), "--trigger", "plc"]) == 2
    assert "give the PLC with --plc URL" in capsys.readouterr().err
    from edge_ad.data.mvtec import load_samples

    assert len(load_samples(out, ["bracket"], split="train")) == 3  # the layout training reads


def test_plc_paced_capture_reports_every_part_as_not_inspected(tmp_path):
    import threading

    from plc_peers import FAST_LINK, MemoryAdapter, QueueSource, wait_for

    from edge_ad.capture import capture_on_trigger
    from edge_ad.plc.link import PlcLink
    from edge_ad.station.record import DefectCode

    mem, src = MemoryAdapter(), QueueSource()
    plc = mem.program()
    box: dict = {}
    t = threading.Thread(target=lambda: box.update(report=capture_on_trigger(
        src, PlcLink(mem, **FAST_LINK), tmp_path / "ds", category="c", max_images=2, duration_s=30)))
    t.start()
    plc.run_until(lambda: mem.get("Ready"), what="Ready")
    for part, img in ((1, _part(20)), (2, _part(20)), (3, _part(21))):  # the 2nd is a duplicate
        src.push(img)
        n = len(plc.results)
        plc.trigger(part)
        plc.run_until(lambda n=n: len(plc.results) > n, what=f"result of part {part}")
        plc.run_until(lambda: (mem.get("Ready") and not mem.get("TriggerAck")) or not t.is_alive(), what="Ready")
    t.join(30)
    assert box["report"].kept == 2 and box["report"].skipped == {"duplicate": 1}
    # fail-safe: a capture session never tells the PLC a part is OK
    assert all(r["NG"] and r["DefectCode"] == DefectCode.INSPECTION_ERROR for r in plc.results)
    man = json.loads((tmp_path / "ds" / "c" / "capture.json").read_text())
    assert man["every"] == "plc" and man["kept"] == 2
    wait_for(lambda: not t.is_alive())
