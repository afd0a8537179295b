"""`edge-ad selftest`: the one command for a new Jetson. For each package: build (or reuse) the TensorRT engine,
compare it with ONNX Runtime on CPU, benchmark it through the full Detector path; then run the `tensorrt`-marked
tests of a source checkout against the same packages; write one JSON and one Markdown report.

Every step is isolated: a failing build or comparison is recorded with its message and the next one still runs,
so the report shows everything that works and everything that does not.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from edge_ad import __version__
from edge_ad.errors import PackageError
from edge_ad.fileio import atomic_write_json, atomic_write_text
from edge_ad.runtime.package import MANIFEST_NAME, ModelPackage, load_package

#: environment variable the `tensorrt`-marked tests read their packages from
PACKAGES_ENV = "EDGE_AD_TRT_PACKAGES"
REPORT_JSON = "selftest.json"
REPORT_MD = "selftest.md"


def find_packages(paths: Sequence[str | Path]) -> list[ModelPackage]:
    """Packages at `paths`: each a package directory, or a directory whose subdirectories are packages."""
    found: list[ModelPackage] = []
    for p in map(Path, paths):
        if (p / MANIFEST_NAME).is_file() or p.name == MANIFEST_NAME:
            found.append(load_package(p))
        elif p.is_dir():
            subs = sorted(d for d in p.iterdir() if (d / MANIFEST_NAME).is_file())
            if not subs:
                raise PackageError(f"{p}: neither a model package nor a directory of packages")
            found.extend(load_package(d) for d in subs)
        else:
            raise PackageError(f"{p}: model package not found")
    return found


def _step(fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    t0 = time.perf_counter()
    try:
        out = fn()
    except Exception as e:
        out = {"passed": False, "error": f"{type(e).__name__}: {e}"}
    out.setdefault("passed", True)
    out["seconds"] = round(time.perf_counter() - t0, 3)
    return out


def _build(pkg: ModelPackage, device: int) -> dict[str, Any]:
    from edge_ad.runtime.trt.build import ensure_engine

    rec = ensure_engine(pkg, device=device)
    return {"engine": str(rec.path) if rec.path else None, "cached": not rec.built,
            "build_seconds": rec.build_seconds, "engine_mib": round(len(rec.plan) / 2**20, 2), "key": rec.key.to_dict()}


def _verify(pkg: ModelPackage, device: int, n: int) -> dict[str, Any]:
    from edge_ad.runtime.trt.engine_check import verify_engine

    r = verify_engine(pkg, device=device, n=n)
    return {k: r[k] for k in ("passed", "failures", "max_score_delta", "score_tol", "max_map_diff", "map_tol",
                              "separated_pairs", "swapped_pairs", "spearman")}


def _bench(pkg: ModelPackage, runs: int, warmup: int) -> dict[str, Any]:
    from edge_ad.runtime.bench import run_bench

    r = run_bench(pkg, backend="tensorrt", runs=runs, warmup=warmup)
    return {"infer_ms": r["infer_ms"], "end_to_end_ms": r["end_to_end_ms"], "throughput_fps": r["throughput_fps"]}


def tests_file() -> Path | None:
    """tests/test_tensorrt.py of a source checkout next to this package, or None (installed from a wheel)."""
    candidate = Path(__file__).resolve().parents[3] / "tests" / "test_tensorrt.py"
    return candidate if candidate.is_file() else None


def _tests(package_dirs: Sequence[Path], timeout_s: int) -> dict[str, Any]:
    test_file = tests_file()
    if test_file is None:
        return {"passed": True, "skipped": "no tests/ next to the edge_ad package (installed from a wheel); run from "
                                          "a source checkout to include them"}
    if importlib.util.find_spec("pytest") is None:  # a device install: the runtime only
        return {"passed": True, "skipped": "pytest is not installed: pip install edge-ad[device-test]"}
    env = dict(os.environ, **{PACKAGES_ENV: os.pathsep.join(str(p) for p in package_dirs)})
    cmd = [sys.executable, "-m", "pytest", "-q", "-m", "tensorrt", "-p", "no:cacheprovider", str(test_file)]
    proc = subprocess.run(cmd, cwd=test_file.parents[1], env=env, capture_output=True, text=True, timeout=timeout_s,
                          check=False)
    tail = (proc.stdout + proc.stderr).strip().splitlines()[-15:]
    summary = next((line for line in reversed(tail) if re.search(r"\d+ (passed|failed|skipped|error)", line)), "")
    counts = {k: int(v) for v, k in re.findall(r"(\d+) (passed|failed|skipped|errors?|deselected)", summary)}
    return {"passed": proc.returncode == 0 and counts.get("passed", 0) > 0, "returncode": proc.returncode,
            "summary": summary, "counts": counts, "command": " ".join(cmd), "tail": tail}


def machine() -> dict[str, Any]:
    """Board, JetPack, GPU and TensorRT of this machine (doctor facts) plus CPU/OS/Python."""
    from edge_ad.runtime.bench import machine_info
    from edge_ad.runtime.doctor import run_doctor

    facts = run_doctor().facts
    keep = ("jetson", "l4t", "jetpack", "tensorrt", "gpus", "recommended_extra")
    return {**machine_info(), **{k: facts.get(k) for k in keep}}


def run_selftest(packages: Sequence[ModelPackage], out_dir: str | Path, *, device: int = 0, runs: int = 50,
                 warmup: int = 5, n_verify: int = 8, run_tests: bool = True, tests_timeout_s: int = 600,
                 log: Callable[[str], None] = print) -> dict[str, Any]:
    """Build, verify and bench every package on GPU `device`, run the `tensorrt` tests, write the reports to
    `out_dir` (selftest.json, selftest.md) and return the report."""
    t0 = time.perf_counter()
    rows = []
    for pkg in packages:
        label = f"{pkg.name} {pkg.precision}"
        log(f"== {label}: build")
        row: dict[str, Any] = {"package": str(pkg.root), "model": pkg.name, "precision": pkg.precision,
                               "build": _step(functools.partial(_build, pkg, device))}
        if row["build"]["passed"]:
            log(f"== {label}: compare with ONNX Runtime CPU")
            row["verify"] = _step(functools.partial(_verify, pkg, device, n_verify))
            log(f"== {label}: bench ({runs} runs)")
            row["bench"] = _step(functools.partial(_bench, pkg, runs, warmup))
        rows.append(row)
    tests: dict[str, Any] = {"passed": True, "skipped": "--no-tests"}
    if run_tests:
        log("== tensorrt-marked tests")
        tests = _step(functools.partial(_tests, [p.root for p in packages], tests_timeout_s))
    passed = all(all(r.get(k, {"passed": False})["passed"] for k in ("build", "verify", "bench")) for r in rows) \
        and bool(tests["passed"]) and bool(rows)
    report = {"passed": passed, "created": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
              "edge_ad_version": __version__, "machine": machine(), "packages": rows, "tests": tests,
              "seconds": round(time.perf_counter() - t0, 1)}
    out = Path(out_dir)
    atomic_write_json(out / REPORT_JSON, report)
    atomic_write_text(out / REPORT_MD, format_markdown(report))
    return report


def _ms(step: dict[str, Any] | None, key: str, stat: str) -> str:
    if not step or not step.get("passed") or key not in step:
        return "-"
    return f"{step[key][stat]:.2f}"


def format_markdown(report: dict[str, Any]) -> str:
    """The report as Markdown: machine, one table row per package, the tests, the verdict."""
    m = report["machine"]
    gpus = ", ".join(f"{g['name']} (sm {g['compute_capability'][0]}.{g['compute_capability'][1]})"
                     for g in m.get("gpus") or []) or "none found"
    lines = [
        f"# edge-ad selftest: {'PASSED' if report['passed'] else 'FAILED'}",
        "",
        f"{report['created']}, edge-ad {report['edge_ad_version']}, {report['seconds']} s",
        "",
        f"- board: {m.get('board') or m.get('cpu')}; JetPack {m.get('jetpack') or '-'}; TensorRT "
        f"{m.get('tensorrt') or '-'}; GPU {gpus}; Python {m.get('python')}",
        "",
        "| model | precision | build | engine MiB | vs ONNX Runtime | infer p50 / p99 ms | end-to-end p50 ms | fps |",
        "|---|---|---|---:|---|---:|---:|---:|",
    ]
    for r in report["packages"]:
        b = r["build"]
        build = ("cached" if b.get("cached") else f"{b.get('build_seconds') or 0:.1f} s") if b["passed"] else \
            f"FAILED: {b.get('error', '')[:80]}"
        v = r.get("verify")
        verify = "-" if v is None else ("PASS" if v["passed"] else "FAIL: " + "; ".join(v.get("failures") or
                                                                                         [v.get("error", "")])[:80])
        bench = r.get("bench")
        fps = f"{bench['throughput_fps']:.1f}" if bench and bench.get("passed") else "-"
        lines.append(f"| {r['model']} | {r['precision']} | {build} | {b.get('engine_mib', '-')} | {verify} | "
                     f"{_ms(bench, 'infer_ms', 'p50')} / {_ms(bench, 'infer_ms', 'p99')} | "
                     f"{_ms(bench, 'end_to_end_ms', 'p50')} | {fps} |")
    t = report["tests"]
    lines += ["", f"tensorrt-marked tests: {t.get('skipped') or t.get('summary') or t.get('error', '')}", ""]
    return "\n".join(lines)
