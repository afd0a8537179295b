"""benchmarks/gpu_suite.py, the one short run for a borrowed GPU, works end to end on the CPU path (issue 26: the
script must be ready before a GPU is at hand)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SUITE = ROOT / "benchmarks" / "gpu_suite.py"


def _suite(tmp_path: Path, *extra: str) -> tuple[subprocess.CompletedProcess[str], dict]:
    out = tmp_path / "suite.json"
    proc = subprocess.run([sys.executable, str(SUITE), "--device", "cpu", "--quick", "--workdir", str(tmp_path / "w"),
                           "--json", str(out), *extra], capture_output=True, text=True, timeout=300, check=False)
    return proc, json.loads(out.read_text()) if out.is_file() else {}


@pytest.mark.slow
def test_gpu_suite_runs_every_stage_on_the_cpu_path(tmp_path: Path) -> None:
    proc, report = _suite(tmp_path, "--models", "dinomaly-tiny", "--tiles", "4")
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = report["rows"]
    train = [r for r in rows if r["stage"] == "train"]
    infer = [r for r in rows if r["stage"] == "infer"]
    assert {r["amp"] for r in train} == {"off", "bf16"} and all(r["it_per_s"] > 0 for r in train)
    assert {(r["amp"], r["batch"]) for r in infer} == {("off", 1), ("off", 4), ("bf16", 1), ("bf16", 4)}
    assert all(r["finite"] and r["p50_ms"] > 0 for r in infer)
    assert report["facts"]["random_init"] and "| inference |" in proc.stdout


def test_gpu_suite_stops_at_its_budget_and_reports_failures(tmp_path: Path) -> None:
    proc, report = _suite(tmp_path, "--models", "dinomaly-tiny", "--budget-s", "0")
    assert report["rows"] == [{"stage": "skipped", "rows_not_run": 5, "reason": "--budget-s 0.0"}]
    proc, report = _suite(tmp_path, "--models", "no-such-model", "--no-train", "--budget-s", "120")
    assert proc.returncode == 1 and all("error" in r for r in report["rows"])
