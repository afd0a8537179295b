"""A backend checked against ONNX Runtime on CPU: the numbers `edge-ad verify` and `edge-ad selftest` report.

Tensor tolerance alone says little for anomaly detection, so besides the anomaly maps this checks what the line acts
on: the OK/NG decision at the deployed threshold and the image scores' order. Every criterion is one that cannot
flap on near-ties (an untrained package's noise scores are nearly all equal):
- maps and scores within a tolerance per precision (`DEFAULT_TOL`), relative to the manifest's normalisation ranges
  (score_max - score_min, pixel_max - pixel_min);
- decisions compared at the package threshold, except for borderline images (reference score within the score
  tolerance of the threshold), which are reported, not failed;
- ranks only where the reference scores are spread: a pair of images more than twice the score tolerance apart must
  keep its order; pairs closer than that are ties at this precision. Spearman is reported for information.
`verify_openvino` is here; the TensorRT engine check is `edge_ad.runtime.trt.engine_check.verify_engine`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge_ad.runtime.package import ModelPackage
from edge_ad.runtime.ranking import spearman

#: default tolerance per precision, as a fraction of the normalisation range
DEFAULT_TOL = {"fp32": 0.01, "fp16": 0.05, "bf16": 0.05, "int8": 0.10}


@dataclass
class Comparison:
    """Reference (ONNX Runtime CPU) vs a backend's outputs and the verdict."""

    score_delta: np.ndarray  # per image, absolute
    max_map_diff: float
    spearman: float | None  # information only (flaps on ties)
    agree: np.ndarray  # per image: same OK/NG decision
    borderline: np.ndarray  # per image: reference score within score_tol of the threshold
    separated_pairs: int  # image pairs whose reference scores differ by more than 2 * score_tol
    swapped_pairs: int  # of those, the pairs whose order the backend reverses
    score_tol: float
    map_tol: float

    @property
    def failures(self) -> list[str]:
        out = []
        if float(self.score_delta.max(initial=0.0)) > self.score_tol:
            out.append(f"max score delta {self.score_delta.max():.4g} > {self.score_tol:.4g}")
        if self.max_map_diff > self.map_tol:
            out.append(f"max map difference {self.max_map_diff:.4g} > {self.map_tol:.4g}")
        if self.swapped_pairs:
            out.append(f"score order reversed for {self.swapped_pairs} of {self.separated_pairs} image pair(s) more "
                       f"than {2 * self.score_tol:.4g} apart")
        clear_flips = ~self.agree & ~self.borderline
        if bool(clear_flips.any()):
            out.append(f"OK/NG differs on {int(clear_flips.sum())} of {len(self.agree)} image(s) (not counting "
                       f"{int(self.borderline.sum())} borderline)")
        return out


def compare(ref: tuple[np.ndarray, np.ndarray], got: tuple[np.ndarray, np.ndarray], thresholds: dict[str, Any],
            tol: float) -> Comparison:
    """Compare (maps, scores) pairs; tolerances are `tol` times the manifest's normalisation ranges."""
    norm = thresholds["normalization"]
    score_range = max(float(norm["score_max"]) - float(norm["score_min"]), 1e-12)
    pixel_range = max(float(norm["pixel_max"]) - float(norm["pixel_min"]), 1e-12)
    threshold = float(thresholds["image"]["value"])
    (ref_maps, ref_scores), (maps, scores) = ref, got
    r, g = ref_scores.astype(np.float64), scores.astype(np.float64)
    score_tol = tol * score_range
    separated = np.abs(r[:, None] - r[None, :]) > 2 * score_tol
    swapped = separated & (np.sign(r[:, None] - r[None, :]) != np.sign(g[:, None] - g[None, :]))
    return Comparison(
        score_delta=np.abs(g - r),
        max_map_diff=float(np.max(np.abs(maps.astype(np.float64) - ref_maps.astype(np.float64)), initial=0.0)),
        spearman=spearman(ref_scores, scores),
        agree=(ref_scores > threshold) == (scores > threshold),
        borderline=np.abs(r - threshold) <= score_tol,
        separated_pairs=int(np.triu(separated, 1).sum()),
        swapped_pairs=int(np.triu(swapped, 1).sum()),
        score_tol=score_tol,
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


def report(package: ModelPackage, backend: str, described: str, reference: str, loaded: list[tuple[str, np.ndarray]],
           ref: tuple[np.ndarray, np.ndarray], got: tuple[np.ndarray, np.ndarray], tolerance: float) -> dict[str, Any]:
    """The verify result: {"passed", "failures", "backend", "engine", "reference", "threshold", "images":
    [{name, onnxruntime, <backend>, agree, borderline}], "separated_pairs", "swapped_pairs", "max_score_delta",
    "score_tol", "max_map_diff", "map_tol", "spearman"}."""
    result = compare(ref, got, package.thresholds, tolerance)
    return {
        "passed": not result.failures,
        "failures": result.failures,
        "backend": backend,
        "engine": described,
        "reference": reference,
        "threshold": float(package.thresholds["image"]["value"]),
        "images": [{"name": name, "onnxruntime": float(ref[1][i]), backend: float(got[1][i]),
                    "agree": bool(result.agree[i]), "borderline": bool(result.borderline[i])}
                   for i, (name, _) in enumerate(loaded)],
        "separated_pairs": result.separated_pairs,
        "swapped_pairs": result.swapped_pairs,
        "max_score_delta": float(result.score_delta.max(initial=0.0)),
        "score_tol": result.score_tol,
        "max_map_diff": result.max_map_diff,
        "map_tol": result.map_tol,
        "spearman": result.spearman,
    }


def tolerance_for(precision: str, tol: float | None) -> float:
    from edge_ad.errors import ConfigError

    tolerance = DEFAULT_TOL[precision] if tol is None else tol
    if tolerance <= 0:
        raise ConfigError(f"tol: expected a positive fraction, got {tolerance}")
    return tolerance


def verify_openvino(package: ModelPackage, *, images: Path | None = None, n: int = 8, seed: int = 0,
                    tol: float | None = None, threads: int | None = None) -> dict[str, Any]:
    """OpenVINO on its graph and precision (the manifest's `onnx.backends.openvino`) against ONNX Runtime CPU on
    its own (`onnx.backends.onnxruntime`) on the same images; see `report` for the result."""
    from edge_ad.runtime.backends.onnxruntime import OnnxRuntimeBackend
    from edge_ad.runtime.backends.openvino import OpenVinoBackend

    tolerance = tolerance_for(package.precision, tol)
    loaded = load_images(images, n, package.preprocess.resize, seed)
    batch = np.stack([package.preprocess.apply(img) for _, img in loaded])
    ov = OpenVinoBackend(package, threads=threads, cache=False)
    ref_be = OnnxRuntimeBackend(package, providers="cpu", threads=threads)
    try:
        return report(package, "openvino", f"OpenVINO {ov.device} {ov.config.get('INFERENCE_PRECISION_HINT')} on "
                      f"{ov.onnx_path.name} (checked: {ov.choice.checked})",
                      f"ONNX Runtime CPU on {ref_be.onnx_path.name}", loaded,
                      ref_be.run(batch), ov.run(batch), tolerance)
    finally:
        ov.close()
        ref_be.close()
