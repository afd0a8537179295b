"""A 437 KB-class PNG that claims 20000 x 20000: `edge-ad predict` refuses it from the header, naming the pixel
budget and how to raise it, with a peak RSS far under 1 GB (it used to reach 7.9 GB)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hostile_tally import Tally
from runtime_fixtures import build_package, huge_png

ROOT = Path(__file__).resolve().parents[2]
#: a fresh interpreter whose only child is `edge-ad predict`, so RUSAGE_CHILDREN is that command's peak RSS
_MEASURE = ("import resource, subprocess, sys; r = subprocess.run(sys.argv[1:], capture_output=True, text=True); "
            "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); print(r.returncode); "
            "sys.stderr.write(r.stderr)")


def test_predict_on_a_20000_square_png_stays_under_1_gb(tmp_path: Path, tally: Tally) -> None:
    if sys.platform != "linux":
        pytest.skip("ru_maxrss is in kB on Linux only")
    pkg = build_package(tmp_path / "pkg")
    big = tmp_path / "in" / "big.png"
    big.parent.mkdir()
    big.write_bytes(huge_png(20000, 20000))
    assert big.stat().st_size < 500_000
    cmd = [sys.executable, "-c", _MEASURE, sys.executable, "-m", "edge_ad.cli.main", "predict", str(pkg),
           str(big.parent), "--out", str(tmp_path / "out")]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False,
                         env={**os.environ, "PYTHONPATH": str(ROOT)}, cwd=tmp_path)
    rss_kb, rc = (int(x) for x in out.stdout.split()[:2])
    assert rc == 1, out.stderr  # the file failed; the run completed and says so
    assert "20000 x 20000 = 400.0 MP exceeds the pixel budget of 50 MP" in out.stderr, out.stderr
    assert "--max-pixels" in out.stderr and "EDGE_AD_MAX_PIXELS" in out.stderr
    line = json.loads((tmp_path / "out" / "results.jsonl").read_text())
    assert line["status"] == "ERROR" and line["fault"] == "IMAGE"
    assert rss_kb < 1024 * 1024, f"peak RSS {rss_kb / 1024:.0f} MB"
    tally.count("memory-bomb", "clear")
    print(f"edge-ad predict on a 20000x20000 PNG: peak RSS {rss_kb / 1024:.0f} MB")
