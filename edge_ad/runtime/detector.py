"""The line-side detector: image in, Result out. Torch-free (numpy, OpenCV, ONNX Runtime or TensorRT).

Everything model-specific comes from the package manifest: the preprocessing (resize, crop, colour order), the
thresholds, the normalisation bounds and the post-processing parameters. Nothing is guessed.

Decision rule: with `sensitivity` s (default 1.0) the effective image threshold is `threshold / s` and the effective
pixel threshold `pixel_threshold / s`; an image is NG when `score > effective threshold`. s > 1 flags more parts,
s < 1 fewer. `normalized_score` is 0.5 exactly at the effective threshold.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from edge_ad.errors import ConfigError, DataError
from edge_ad.runtime.backends import Backend, create_backend
from edge_ad.runtime.package import ModelPackage, load_package
from edge_ad.runtime.postprocess import (
    find_regions,
    map_to_source,
    normalize_score,
    smooth_map,
)
from edge_ad.runtime.result import Result

ImageInput = np.ndarray | str | Path


def read_image(path: str | Path) -> np.ndarray:
    """Read an image file as uint8 (BGR, grey or BGRA as stored); DataError naming the file when unreadable."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p}: image file not found")
    img = cv2.imread(str(p), cv2.IMREAD_UNCHANGED)
    if img is None:
        raise DataError(f"{p}: cannot read image (not an image file, unsupported format or corrupt)")
    if img.dtype != np.uint8:  # 16-bit PNG/TIFF from industrial cameras: scale to 8 bit
        if img.dtype == np.uint16:
            img = (img.astype(np.uint16) >> 8).astype(np.uint8)
        else:
            raise DataError(f"{p}: expected an 8- or 16-bit image, got dtype {img.dtype}")
    return img


def _finite(name: str, value: float, positive: bool = False) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{name}: expected a number, got {value!r}") from e
    if not math.isfinite(v) or (positive and v <= 0):
        raise ConfigError(f"{name}: expected a finite number{' > 0' if positive else ''}, got {value!r}")
    return v


class Detector:
    """Runs a model package on images: preprocess -> backend -> postprocess -> Result."""

    def __init__(self, package: ModelPackage, backend: Backend, threshold: float | None = None,
                 sensitivity: float = 1.0) -> None:
        self.package = package
        self.backend = backend
        self.preprocess = package.preprocess
        th = package.thresholds
        self._manifest_threshold = float(th["image"]["value"])
        self._threshold = self._manifest_threshold
        self._pixel_threshold = float(th["pixel"]["value"])
        norm = th["normalization"]
        self._score_range = (float(norm["score_min"]), float(norm["score_max"]))
        self._map_range = (float(norm["pixel_min"]), float(norm["pixel_max"]))
        post = package.postprocess
        self._min_area = int(post["min_region_area_px"])
        self._blur_sigma = float(post.get("mask_blur_sigma", 0.0))
        self._open_px = int(post.get("morph_open_px", 0))
        self._sensitivity = 1.0
        if threshold is not None:
            self.threshold = threshold
        self.sensitivity = sensitivity
        if tuple(backend.input_hw) != package.input_hw:
            raise ConfigError(f"backend {backend.name}: input size {backend.input_hw} differs from the package's "
                              f"{package.input_hw}")

    @classmethod
    def load(cls, package: str | Path | ModelPackage, backend: str = "auto", device: int | None = None,
             providers: str | list[str] | None = None, threshold: float | None = None, sensitivity: float = 1.0,
             threads: int | None = None) -> Detector:
        """Load and verify a package (path or ModelPackage) and open a backend ("auto"|"onnxruntime"|"tensorrt")."""
        pkg = package if isinstance(package, ModelPackage) else load_package(package)
        be = create_backend(pkg, backend, device=device, providers=providers, threads=threads)
        return cls(pkg, be, threshold=threshold, sensitivity=sensitivity)

    # ---- run-time settings -------------------------------------------------------------------------------------
    @property
    def threshold(self) -> float:
        """Image-score threshold before sensitivity (the manifest's value unless overridden)."""
        return self._threshold

    @threshold.setter
    def threshold(self, value: float | None) -> None:
        """Override the image threshold; None restores the manifest's value."""
        self._threshold = self._manifest_threshold if value is None else _finite("threshold", value)

    @property
    def sensitivity(self) -> float:
        """Divisor of both thresholds: effective threshold = threshold / sensitivity."""
        return self._sensitivity

    @sensitivity.setter
    def sensitivity(self, value: float) -> None:
        self._sensitivity = _finite("sensitivity", value, positive=True)

    @property
    def effective_threshold(self) -> float:
        return self._threshold / self._sensitivity

    @property
    def pixel_threshold(self) -> float:
        """Effective anomaly-map threshold for masks and regions (manifest pixel threshold / sensitivity)."""
        return self._pixel_threshold / self._sensitivity

    # ---- inference ---------------------------------------------------------------------------------------------
    def predict(self, image: ImageInput, frame: dict[str, Any] | None = None) -> Result:
        """One image (BGR/grey/BGRA uint8 array of any size, or a file path) -> Result. Bad input raises DataError."""
        return self.predict_batch([image], frames=[frame], errors="raise")[0]

    def predict_batch(self, images: Sequence[ImageInput], frames: Sequence[dict[str, Any] | None] | None = None,
                      errors: str = "raise") -> list[Result]:
        """Several images in one backend call; results equal those of `predict` image by image.

        errors="raise" raises DataError for the first bad input; errors="result" returns `Result.failed` for bad
        inputs and still inspects the others. Timings of a batch are per image, with inference amortised.
        """
        if errors not in ("raise", "result"):
            raise ConfigError(f"errors: expected 'raise' or 'result', got {errors!r}")
        n = len(images)
        frames_l = list(frames) if frames is not None else [None] * n
        if len(frames_l) != n:
            raise ConfigError(f"frames: expected {n} entries (one per image), got {len(frames_l)}")
        results: list[Result | None] = [None] * n
        crops: list[np.ndarray] = []
        ok: list[tuple[int, tuple[int, int], dict[str, float]]] = []
        for i, img in enumerate(images):
            t0 = time.perf_counter()
            try:
                timing: dict[str, float] = {}
                if isinstance(img, (str, Path)):
                    img = read_image(img)
                    timing["read"] = (time.perf_counter() - t0) * 1e3
                t1 = time.perf_counter()
                try:
                    crop = self.preprocess.apply(img)
                except (TypeError, ValueError) as e:
                    raise DataError(f"{_describe(images[i])}: {e}") from e
                timing["preprocess"] = (time.perf_counter() - t1) * 1e3
            except DataError as e:
                if errors == "raise":
                    raise
                results[i] = Result.failed(e, frame=frames_l[i])
                continue
            crops.append(crop)
            ok.append((i, (int(img.shape[0]), int(img.shape[1])), timing))
        if crops:
            t2 = time.perf_counter()
            maps, scores = self.backend.run(np.stack(crops))
            infer_ms = (time.perf_counter() - t2) * 1e3 / len(crops)
            for k, (i, src_hw, timing) in enumerate(ok):
                timing["infer"] = infer_ms
                results[i] = self.finish(maps[k, 0], float(scores[k]), src_hw, timing, frames_l[i])
        return [r for r in results if r is not None]

    def finish(self, model_map: np.ndarray, score: float, src_hw: tuple[int, int], timing: dict[str, float],
               frame: dict[str, Any] | None) -> Result:
        """Post-process one raw backend output (map at model resolution, score) into a Result for an image of
        size `src_hw`; public so pipelines that run the backend on their own threads give identical results."""
        t0 = time.perf_counter()
        amap = map_to_source(smooth_map(model_map, self._blur_sigma), self.preprocess, src_hw)
        mask, regions = find_regions(amap, self.pixel_threshold, self._min_area, self._open_px)
        thr = self.effective_threshold
        timing["postprocess"] = (time.perf_counter() - t0) * 1e3
        timing["total"] = sum(timing.values())
        return Result(
            score=score,
            normalized_score=normalize_score(score, thr, *self._score_range),
            is_anomalous=bool(score > thr),
            anomaly_map=amap,
            mask=mask,
            regions=regions,
            timings=timing,
            frame=frame,
            threshold=thr,
            map_range=self._map_range,
        )

    def __repr__(self) -> str:
        return (f"Detector({self.package.name!r}, backend={self.backend.name}, providers={self.backend.providers}, "
                f"threshold={self.threshold:.6g}, sensitivity={self.sensitivity:g})")


def _describe(image: ImageInput) -> str:
    return str(image) if isinstance(image, (str, Path)) else "image"
