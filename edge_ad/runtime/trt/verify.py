"""An engine checked against ONNX Runtime on CPU: the numbers `edge-ad verify` and `edge-ad selftest` report.

Tensor tolerance alone says little for anomaly detection, so besides the largest anomaly-map difference this checks
what the line acts on: the image scores' rank order (Spearman) and the OK/NG decision at the deployed threshold.
Differences are relative to the manifest's normalisation ranges (score_max - score_min, pixel_max - pixel_min).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge_ad.runtime.package import ModelPackage
from edge_ad.runtime.ranking import spearman

#: default tolerance per precision, as a fraction of the normalisation range
DEFAULT_TOL = {"fp32": 0.01, "fp16": 0.05, "int8": 0.10}
MIN_SPEARMAN = 0.9


@dataclass
class Comparison:
    """Reference (ONNX Runtime) vs TensorRT outputs and the verdict."""

    score_delta: np.ndarray  # per image, absolute
    max_map_diff: float
    spearman: float | None
    agree: np.ndarray  # per image: same OK/NG decision
    score_tol: float
    map_tol: float

    @property
    def failures(self) -> list[str]:
        out = []
        if float(self.score_delta.max(initial=0.0)) > self.score_tol:
            out.append(f"max score delta {self.score_delta.max():.4g} > {self.score_tol:.4g}")
        if self.max_map_diff > self.map_tol:
            out.append(f"max map difference {self.max_map_diff:.4g} > {self.map_tol:.4g}")
        if self.spearman is not None and self.spearman < MIN_SPEARMAN:
            out.append(f"score Spearman {self.spearman:.3f} < {MIN_SPEARMAN}")
        if not bool(self.agree.all()):
            out.append(f"OK/NG differs on {int((~self.agree).sum())} of {len(self.agree)} image(s)")
        return out


def compare(ref: tuple[np.ndarray, np.ndarray], got: tuple[np.ndarray, np.ndarray], thresholds: dict[str, Any],
            tol: float) -> Comparison:
    """Compare (maps, scores) pairs; tolerances are `tol` times the manifest's normalisation ranges."""
    norm = thresholds["normalization"]
    score_range = max(float(norm["score_max"]) - float(norm["score_min"]), 1e-12)
    pixel_range = max(float(norm["pixel_max"]) - float(norm["pixel_min"]), 1e-12)
    threshold = float(thresholds["image"]["value"])
    (ref_maps, ref_scores), (maps, scores) = ref, got
    return Comparison(
        score_delta=np.abs(scores.astype(np.float64) - ref_scores.astype(np.float64)),
        max_map_diff=float(np.max(np.abs(maps.astype(np.float64) - ref_maps.astype(np.float64)), initial=0.0)),
        spearman=spearman(ref_scores, scores),
        agree=(ref_scores > threshold) == (scores > threshold),
        score_tol=tol * score_range,
        map_tol=tol * pixel_range,
    )


def load_images(folder: Path | None, n: int, size_hw: tuple[int, int], seed: int) -> list[tuple[str, np.ndarray]]:
    """Up to `n` (name, BGR uint8) images from `folder`, or `n` seeded noise images of `size_hw`."""
    from edge_ad.errors import ConfigError
    from edge_ad.imageio import IMAGE_EXTENSIONS, read_image

    if n < 1:
        raise ConfigError(f"--n: expected an integer >= 1, got {n}")
    if folder is None:
        rng = np.random.default_rng(seed)
        return [(f"noise-{i}", rng.integers(0, 256, (*size_hw, 3), dtype=np.uint8)) for i in range(n)]
    if not folder.is_dir():
        raise ConfigError(f"--images: {folder} is not a directory")
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS)[:n]
    if not files:
        raise ConfigError(f"--images: no images ({', '.join(IMAGE_EXTENSIONS)}) in {folder}")
    return [(f.name, read_image(f)) for f in files]


def verify_engine(package: ModelPackage, precision: str | None = None, *, images: Path | None = None, n: int = 8,
                  seed: int = 0, tol: float | None = None, device: int = 0, fp16_fallback: bool = False
                  ) -> dict[str, Any]:
    """Run the package's TensorRT engine (built/cached as needed) and ONNX Runtime CPU on the same images; returns
    {"passed", "failures", "engine", "reference", "threshold", "images": [{name, onnxruntime, tensorrt, agree}],
    "max_score_delta", "score_tol", "max_map_diff", "map_tol", "spearman"}."""
    from edge_ad.errors import ConfigError
    from edge_ad.runtime.backends.onnxruntime import OnnxRuntimeBackend
    from edge_ad.runtime.backends.tensorrt import TensorRTBackend

    prec = precision or package.precision
    tolerance = DEFAULT_TOL[prec] if tol is None else tol
    if tolerance <= 0:
        raise ConfigError(f"tol: expected a positive fraction, got {tolerance}")
    loaded = load_images(images, n, package.preprocess.resize, seed)
    batch = np.stack([package.preprocess.apply(img) for _, img in loaded])
    with TensorRTBackend(package, precision=prec, device=device, fp16_fallback=fp16_fallback) as trt_be:
        got = trt_be.run(batch)
        onnx_path = trt_be.record.onnx_path
        key = trt_be.record.key
    ref_precision = "fp32" if fp16_fallback else prec
    ref = OnnxRuntimeBackend(package, providers="cpu", precision=ref_precision).run(batch)
    result = compare(ref, got, package.thresholds, tolerance)
    threshold = float(package.thresholds["image"]["value"])
    return {
        "passed": not result.failures,
        "failures": result.failures,
        "engine": key.describe(),
        "reference": f"ONNX Runtime CPU on {onnx_path.name}",
        "threshold": threshold,
        "images": [{"name": name, "onnxruntime": float(ref[1][i]), "tensorrt": float(got[1][i]),
                    "agree": bool(result.agree[i])} for i, (name, _) in enumerate(loaded)],
        "max_score_delta": float(result.score_delta.max(initial=0.0)),
        "score_tol": result.score_tol,
        "max_map_diff": result.max_map_diff,
        "map_tol": result.map_tol,
        "spearman": result.spearman,
    }
