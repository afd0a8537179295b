"""Latency per stage (p50/p90/p99) and throughput of a model package through the full Detector path.

Each iteration runs one batch through preprocess, inference and postprocess to source resolution with regions, so
the numbers are what the line sees, not just the engine. Stage times are per batch. Used by `edge-ad bench`,
`edge-ad selftest` and the demo.
"""

from __future__ import annotations

import contextlib
import os
import platform
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from edge_ad.runtime.package import ModelPackage
    from edge_ad.runtime.trt.engine_options import EngineOptions


def percentiles(values: list[float]) -> dict[str, float]:
    """p50/p90/p99 and mean of a list of milliseconds."""
    import numpy as np

    a = np.asarray(values, dtype=np.float64)
    return {"p50": float(np.percentile(a, 50)), "p90": float(np.percentile(a, 90)),
            "p99": float(np.percentile(a, 99)), "mean": float(a.mean())}


def machine_info() -> dict[str, Any]:
    """CPU model, core counts, OS and Python of this machine (Jetson: the device-tree model)."""
    from edge_ad.runtime.backends.onnxruntime import physical_cores

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.lower().startswith(("model name", "hardware")):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    board = None
    with contextlib.suppress(OSError):
        board = Path("/proc/device-tree/model").read_text(errors="replace").strip("\x00\n ") or None
    return {"cpu": cpu, "physical_cores": physical_cores(), "logical_cpus": os.cpu_count(), "board": board,
            "arch": platform.machine(), "os": platform.platform(), "python": platform.python_version()}


def _positive(name: str, v: int, allow_zero: bool = False) -> None:
    from edge_ad.errors import ConfigError

    if v < (0 if allow_zero else 1):
        raise ConfigError(f"--{name}: expected an integer >= {0 if allow_zero else 1}, got {v}")


def run_bench(package: str | Path | ModelPackage, backend: str = "auto", batch: int = 1, runs: int = 100,
              warmup: int = 10, image: str | Path | None = None, size_hw: tuple[int, int] | None = None,
              threads: int | None = None, trusted_keys: list[Any] | None = None,
              engine: EngineOptions | None = None, views: int = 1) -> dict[str, Any]:
    """Benchmark a package through the full Detector path; returns the JSON report (keys documented in the CLI).
    `engine`: TensorRT engine options (see Detector.load). `views` > 1: a part seen by that many cameras sharing
    the package, judged in one batched call against one call per view, interleaved (report["views"])."""
    import numpy as np

    from edge_ad import __version__
    from edge_ad.imageio import read_image
    from edge_ad.runtime.detector import Detector

    _positive("batch", batch)
    _positive("runs", runs)
    _positive("warmup", warmup, allow_zero=True)
    _positive("views", views)
    if views > 1 and batch != 1:
        from edge_ad.errors import ConfigError

        raise ConfigError(f"bench: --views {views} measures one part of {views} images; --batch must be 1, got {batch}")
    with Detector.load(package, backend=backend, threads=threads, trusted_keys=trusted_keys, engine=engine) as det:
        geo = det.geometry
        if image is not None:
            img = read_image(image)
            source = str(image)
        elif geo is not None and size_hw is None:  # noise cannot be aligned: the package's own reference frame
            ref = next(iter(geo.references.values()))
            img, source = ref.image, f"the package's reference frame ({ref.category})"
        else:
            h, w = size_hw or det.preprocess.resize
            img = np.random.default_rng(0).integers(0, 256, size=(h, w, 3), dtype=np.uint8)
            source = f"synthetic noise {w}x{h}"
        images = [img] * batch
        for _ in range(warmup):
            det.predict_batch(images)
        stages: dict[str, list[float]] = {"align": [], "preprocess": [], "infer": [], "stitch": [], "postprocess": [],
                                          "end_to_end": []}
        for _ in range(runs):
            t0 = time.perf_counter()
            results = det.predict_batch(images)
            stages["end_to_end"].append((time.perf_counter() - t0) * 1e3)
            failed = [r for r in results if r.error is not None]
            if failed:
                from edge_ad.errors import DataError

                raise DataError(f"bench: the image could not be inspected ({failed[0].fault}: {failed[0].error})")
            for extra in ("align", "stitch"):
                stages[extra].append(sum(r.timings.get(extra, 0.0) for r in results))
            stages["preprocess"].append(sum(r.timings["preprocess"] for r in results))
            stages["infer"].append(sum(r.timings["infer"] for r in results))  # amortised per image -> batch total
            stages["postprocess"].append(sum(r.timings["postprocess"] for r in results))
        multi = _views_bench(det, img, views, runs, warmup) if views > 1 else None
    total_s = sum(stages["end_to_end"]) / 1e3
    return {
        "views": multi,
        "package": str(det.package.root),
        "model": det.package.name,
        "precision": det.package.precision,
        "backend": det.backend.name,
        "providers": list(det.backend.providers),
        "batch": batch,
        "runs": runs,
        "warmup": warmup,
        "source": source,
        "source_hw": [int(img.shape[0]), int(img.shape[1])],
        "preprocess_ms": percentiles(stages["preprocess"]),
        "infer_ms": percentiles(stages["infer"]),
        "postprocess_ms": percentiles(stages["postprocess"]),
        "align_ms": percentiles(stages["align"]) if geo is not None and geo.align is not None else None,
        "stitch_ms": percentiles(stages["stitch"]) if geo is not None else None,
        "tiles_per_frame": len(geo.tile_boxes(geo.locate(img))) if geo is not None else 1,
        "end_to_end_ms": percentiles(stages["end_to_end"]),
        "throughput_fps": batch * runs / total_s if total_s > 0 else float("inf"),
        "machine": machine_info(),
        "edge_ad_version": __version__,
    }


def _views_bench(det: Any, img: Any, views: int, runs: int, warmup: int) -> dict[str, Any]:
    """A part of `views` frames: one `predict_batch` call for all of them (what a multi-view station does for views
    sharing a package) against one call per view, in alternating order each run so both see the same machine."""
    frames = [img.copy() for _ in range(views)]  # distinct arrays, as from distinct cameras
    batched: list[float] = []
    single: list[float] = []

    def one_call() -> None:
        det.predict_batch(frames)

    def per_view() -> None:
        for f in frames:
            det.predict_batch([f])

    for r in range(warmup + runs):
        order = ((one_call, batched), (per_view, single)) if r % 2 == 0 else ((per_view, single), (one_call, batched))
        for fn, into in order:
            t0 = time.perf_counter()
            fn()
            if r >= warmup:
                into.append((time.perf_counter() - t0) * 1e3)
    b, s = percentiles(batched), percentiles(single)
    return {"views": views, "batched_part_ms": b, "per_view_part_ms": s,
            "batched_parts_per_s": 1e3 / b["p50"] if b["p50"] > 0 else float("inf"),
            "per_view_parts_per_s": 1e3 / s["p50"] if s["p50"] > 0 else float("inf"),
            "speedup": s["p50"] / b["p50"] if b["p50"] > 0 else float("inf")}
