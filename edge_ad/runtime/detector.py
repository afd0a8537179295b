"""The line-side detector: image in, Result out. Torch-free (numpy, OpenCV, ONNX Runtime or TensorRT).

Everything model-specific comes from the package manifest: the preprocessing (resize, crop, colour order), the
thresholds, the normalisation bounds and the post-processing parameters. Nothing is guessed.

Decision rule: with `sensitivity` s (default 1.0) the effective image threshold is `threshold / s` and the effective
pixel threshold `pixel_threshold / s`; an image is NG when `score > effective threshold`. s > 1 flags more parts,
s < 1 fewer. `normalized_score` is 0.5 exactly at the effective threshold.

Fail-safe: an input that cannot be inspected, a backend or post-processing failure, and a NaN/inf score or map
all give `Result.failed` (status ERROR, a `fault` code, `passed` False), never OK.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge_ad.errors import AlignmentError, ConfigError, DataError, PackageError
from edge_ad.imageio import check_array, read_image
from edge_ad.runtime.backends import Backend, create_backend
from edge_ad.runtime.geometry import Placement
from edge_ad.runtime.package import ModelPackage, load_package
from edge_ad.runtime.postprocess import (
    find_regions,
    map_to_source,
    normalize_score,
    smooth_map,
)
from edge_ad.runtime.result import Fault, Result
from edge_ad.runtime.trt.engine_options import EngineOptions

log = logging.getLogger(__name__)
ImageInput = np.ndarray | str | Path


@dataclass
class Prepared:
    """One input ready for the backend: the model inputs (one crop, or the tiles of an aligned frame), the
    source size, timings so far, each view's size in frame pixels and, for geometry packages, the placement."""

    crops: list[np.ndarray]
    src_hw: tuple[int, int]
    timing: dict[str, float]
    view_hw: list[tuple[int, int]]
    placement: Placement | None = None


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
                 sensitivity: float = 1.0, max_pixels: int | None = None) -> None:
        self.package = package
        self.backend = backend
        self.preprocess = package.preprocess
        self.max_pixels = max_pixels
        th = package.thresholds
        where = str(package.root / "manifest.json")
        self._manifest_threshold = _manifest_number(where, "thresholds.image.value", th["image"]["value"])
        self._threshold = self._manifest_threshold
        self._pixel_threshold = _manifest_number(where, "thresholds.pixel.value", th["pixel"]["value"])
        norm = th["normalization"]
        def bound(k: str) -> float:
            return _manifest_number(where, f"thresholds.normalization.{k}", norm[k])

        self._score_range = (bound("score_min"), bound("score_max"))
        self._map_range = (bound("pixel_min"), bound("pixel_max"))
        post = package.postprocess
        self._min_area = int(post["min_region_area_px"])
        self._blur_sigma = _manifest_number(where, "postprocess.mask_blur_sigma", post.get("mask_blur_sigma", 0.0))
        self._open_px = int(post.get("morph_open_px", 0))
        self._sensitivity = 1.0
        if threshold is not None:
            self.threshold = threshold
        self.sensitivity = sensitivity
        if tuple(backend.input_hw) != package.input_hw:
            raise ConfigError(f"backend {backend.name}: input size {backend.input_hw} differs from the package's "
                              f"{package.input_hw}")
        self.geometry = package.geometry()
        #: the product (category) frames are aligned to; None: the best-matching reference (and its category is on
        #: every result). A station's product recipe sets it.
        self.category: str | None = None
        self.note = package_note(package.manifest)
        if self.note:
            log.warning("%s: %s", package.root, self.note)

    @classmethod
    def load(cls, package: str | Path | ModelPackage, backend: str = "auto", device: int | None = None,
             providers: str | list[str] | None = None, threshold: float | None = None, sensitivity: float = 1.0,
             threads: int | None = None, max_pixels: int | None = None,
             trusted_keys: list[Any] | None = None, engine: EngineOptions | None = None) -> Detector:
        """Load and verify a package (path or ModelPackage) and open a backend ("auto"|"onnxruntime"|"tensorrt").

        `max_pixels` is the largest image (width x height) accepted (default: `edge_ad.imageio`'s budget);
        `trusted_keys` (public key files, plus $EDGE_AD_TRUSTED_KEYS) makes a valid signature by one of them
        mandatory. `engine`: TensorRT engine options (none: what `edge-ad build` recorded for this device)."""
        pkg = package if isinstance(package, ModelPackage) else load_package(package, trusted_keys=trusted_keys)
        be = create_backend(pkg, backend, device=device, providers=providers, threads=threads,
                            **(engine.kwargs() if engine is not None else {}))
        return cls(pkg, be, threshold=threshold, sensitivity=sensitivity, max_pixels=max_pixels)

    def close(self) -> None:
        """Release the backend (engine, sessions, pinned and device buffers); idempotent."""
        self.backend.close()

    def __enter__(self) -> Detector:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

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
        v = _finite("sensitivity", value, positive=True)
        lo, hi = self.sensitivity_range
        if not lo <= v <= hi:
            raise ConfigError(f"sensitivity: expected {lo:.4g}..{hi:.4g} for this package (the effective threshold "
                              f"{self._threshold:.4g} / sensitivity must stay inside the package's score range "
                              f"{self._score_range[0]:.4g}..{self._score_range[1]:.4g}), got {value!r}")
        self._sensitivity = v

    @property
    def sensitivity_range(self) -> tuple[float, float]:
        """The sensitivities that keep the effective threshold finite and inside the package's normalisation range
        (score_min..score_max), within 0.01..100: what an engineer may set on the line."""
        lo_s, hi_s = self._score_range
        t = self._threshold
        lo = t / hi_s if hi_s > 0 and t > 0 else 0.01
        hi = t / lo_s if lo_s > 0 and t > 0 else 100.0
        lo, hi = max(0.01, min(lo, 100.0)), min(100.0, max(hi, 0.01))
        return (min(lo, 1.0), max(hi, 1.0))  # the package's own threshold (sensitivity 1) is always allowed

    @property
    def effective_threshold(self) -> float:
        return self._threshold / self._sensitivity

    @property
    def pixel_threshold(self) -> float:
        """Effective anomaly-map threshold for masks and regions (manifest pixel threshold / sensitivity)."""
        return self._pixel_threshold / self._sensitivity

    # ---- inference ---------------------------------------------------------------------------------------------
    def predict(self, image: ImageInput, frame: dict[str, Any] | None = None) -> Result:
        """One image (BGR/grey/BGRA uint8 or uint16 array of any size, or a file path) -> Result. Bad input raises
        DataError; a failure after the input was accepted gives a failed (fail-safe NG) Result."""
        return self.predict_batch([image], frames=[frame], errors="raise")[0]

    def predict_batch(self, images: Sequence[ImageInput], frames: Sequence[dict[str, Any] | None] | None = None,
                      errors: str = "raise") -> list[Result]:
        """Several images in one backend call (every tile of every image); results equal those of `predict` image
        by image.

        errors="raise" raises DataError for the first bad input; errors="result" returns `Result.failed` for bad
        inputs and still inspects the others. A frame that cannot be aligned to the package's reference is a
        fail-safe NG (fault ALIGNMENT) either way. A backend failure fails the images of the call (errors="result")
        or raises (errors="raise"). Timings of a batch are per image, with inference amortised.
        """
        if errors not in ("raise", "result"):
            raise ConfigError(f"errors: expected 'raise' or 'result', got {errors!r}")
        n = len(images)
        frames_l = list(frames) if frames is not None else [None] * n
        if len(frames_l) != n:
            raise ConfigError(f"frames: expected {n} entries (one per image), got {len(frames_l)}")
        results: list[Result | None] = [None] * n
        ok: list[tuple[int, Prepared]] = []
        for i, img in enumerate(images):
            try:
                ok.append((i, self.prepare(img)))
            except AlignmentError as e:
                results[i] = Result.failed(f"not aligned: {e}", frame=frames_l[i], fault=Fault.ALIGNMENT)
            except DataError as e:
                if errors == "raise":
                    raise
                results[i] = Result.failed(e, frame=frames_l[i], fault=Fault.IMAGE)
        if ok:
            t2 = time.perf_counter()
            try:
                maps, scores = self.backend.run(np.stack([c for _, prep in ok for c in prep.crops]))
            except Exception as e:
                if errors == "raise":
                    raise
                for i, prep in ok:
                    results[i] = Result.failed(f"inference failed: {type(e).__name__}: {e}", frame=frames_l[i],
                                               fault=Fault.INFERENCE, timings=prep.timing)
            else:
                infer_ms = (time.perf_counter() - t2) * 1e3 / len(ok)
                k = 0
                for i, prep in ok:
                    t = len(prep.crops)
                    prep.timing["infer"] = infer_ms
                    results[i] = self.finish_prepared(prep, maps[k:k + t, 0], scores[k:k + t], frames_l[i])
                    k += t
        out = [r for r in results if r is not None]
        for r in out:
            r.note = self.note
        return out

    def prepare(self, img: ImageInput) -> Prepared:
        """Read (paths), check, align (geometry packages) and cut one input into the model's inputs; DataError for
        bad input, AlignmentError for a frame that cannot be registered to the reference."""
        timing: dict[str, float] = {}
        t0 = time.perf_counter()
        if isinstance(img, (str, Path)):
            img = read_image(img, max_pixels=self.max_pixels)
            timing["read"] = (time.perf_counter() - t0) * 1e3
        else:
            img = check_array(img, "image", self.max_pixels)
        src_hw = (int(img.shape[0]), int(img.shape[1]))
        geo = self.geometry
        if geo is None:
            t1 = time.perf_counter()
            crop = self.preprocess.apply(img)
            timing["preprocess"] = (time.perf_counter() - t1) * 1e3
            return Prepared([crop], src_hw, timing, [src_hw])
        t1 = time.perf_counter()
        placement = geo.locate(img, self.category)
        t2 = time.perf_counter()
        timing["align"] = (t2 - t1) * 1e3
        views = geo.views(img, placement)
        crops = [self.preprocess.apply(v) for v in views]
        timing["preprocess"] = (time.perf_counter() - t2) * 1e3
        return Prepared(crops, src_hw, timing, [(int(v.shape[0]), int(v.shape[1])) for v in views], placement)

    def finish_prepared(self, prep: Prepared, maps: np.ndarray, scores: np.ndarray,
                        frame: dict[str, Any] | None) -> Result:
        """The Result of one prepared input from the backend's outputs for its crops (maps [T,h,w], scores [T])."""
        if prep.placement is None or self.geometry is None:
            return self.finish(maps[0], float(scores[0]), prep.src_hw, prep.timing, frame)
        t0 = time.perf_counter()
        timing, geo, placement = prep.timing, self.geometry, prep.placement
        if not bool(np.isfinite(maps).all()):
            return Result.failed("the model's anomaly map is not finite (NaN/inf): fail-safe NG", frame=frame,
                                 fault=Fault.NON_FINITE, timings=timing)
        try:
            tiles = [map_to_source(smooth_map(m, self._blur_sigma), self.preprocess, hw)
                     for m, hw in zip(maps, prep.view_hw)]
            box_map = geo.stitch(tiles, placement)
            score = geo.score(box_map, placement)
            amap = geo.to_frame(box_map, placement)
        except Exception as e:
            return Result.failed(f"postprocess failed: {type(e).__name__}: {e}", frame=frame,
                                 fault=Fault.POSTPROCESS, timings=timing)
        timing["stitch"] = (time.perf_counter() - t0) * 1e3
        result = self._result(amap, score, timing, frame)
        result.alignment = placement.to_dict()
        return result

    def finish(self, model_map: np.ndarray, score: float, src_hw: tuple[int, int], timing: dict[str, float],
               frame: dict[str, Any] | None) -> Result:
        """Post-process one raw backend output (map at model resolution, score) into a Result for an image of
        size `src_hw` (whole-image packages).
        A NaN/inf score or map, or any post-processing failure, gives a failed (fail-safe NG) Result."""
        if not (math.isfinite(score) and bool(np.isfinite(model_map).all())):
            what = "score" if not math.isfinite(score) else "anomaly map"
            return Result.failed(f"the model's {what} is not finite (NaN/inf): fail-safe NG", frame=frame,
                                 fault=Fault.NON_FINITE, timings=timing)
        try:
            amap = map_to_source(smooth_map(model_map, self._blur_sigma), self.preprocess, src_hw)
        except Exception as e:
            return Result.failed(f"postprocess failed: {type(e).__name__}: {e}", frame=frame,
                                 fault=Fault.POSTPROCESS, timings=timing)
        return self._result(amap, score, timing, frame)

    def _result(self, amap: np.ndarray, score: float, timing: dict[str, float], frame: dict[str, Any] | None
                ) -> Result:
        """Thresholds, regions and the verdict on a map at the frame's resolution."""
        t0 = time.perf_counter()
        thr = self.effective_threshold
        if not (math.isfinite(score) and math.isfinite(thr)):
            what = "score" if not math.isfinite(score) else "threshold"
            return Result.failed(f"the model's {what} is not finite (NaN/inf): fail-safe NG", frame=frame,
                                 fault=Fault.NON_FINITE, timings=timing)
        try:
            mask, regions = find_regions(amap, self.pixel_threshold, self._min_area, self._open_px)
            normalized = normalize_score(score, thr, *self._score_range)
        except Exception as e:
            return Result.failed(f"postprocess failed: {type(e).__name__}: {e}", frame=frame,
                                 fault=Fault.POSTPROCESS, timings=timing)
        timing["postprocess"] = timing.get("postprocess", 0.0) + (time.perf_counter() - t0) * 1e3
        timing["total"] = sum(v for k, v in timing.items() if k != "total")
        hotspot = hotspot_box(amap)
        return Result(
            score=score,
            normalized_score=normalized,
            is_anomalous=bool(score > thr),
            anomaly_map=amap,
            mask=mask,
            regions=regions,
            timings=timing,
            frame=frame,
            threshold=thr,
            map_range=self._map_range,
            pixel_threshold=self.pixel_threshold,
            reason=self._reason(score, thr, regions, hotspot),
            hotspot=hotspot,
            note=self.note,
        )

    def _reason(self, score: float, thr: float, regions: list[Any], hotspot: tuple[int, int, int, int]) -> str:
        """The verdict in words, so an NG without regions is explained."""
        if not score > thr:
            return f"OK: image score {score:.4g} <= threshold {thr:.4g}"
        if regions:
            return (f"NG: image score {score:.4g} > threshold {thr:.4g}; {len(regions)} region(s) over the pixel "
                    f"threshold {self.pixel_threshold:.4g}")
        x, y, w, h = hotspot
        return (f"NG: image score {score:.4g} > threshold {thr:.4g}, but no pixel is over the pixel threshold "
                f"{self.pixel_threshold:.4g} (a diffuse anomaly): hottest area at x={x} y={y} {w}x{h}")

    def __repr__(self) -> str:
        return (f"Detector({self.package.name!r}, backend={self.backend.name}, providers={self.backend.providers}, "
                f"threshold={self.threshold:.6g}, sensitivity={self.sensitivity:g})")


def package_note(manifest: dict[str, Any]) -> str | None:
    """The warning every result of an untrained or random-init package carries (None for a trained one)."""
    model = manifest.get("model", {})
    if model.get("untrained"):
        return "UNTRAINED model (exported for speed tests): its scores and verdicts mean nothing"
    if model.get("encoder_weights") == "random-init":
        return "trained on a RANDOM-INIT encoder (no pretrained weights): expect weak heatmaps and scores"
    return None


def hotspot_box(amap: np.ndarray) -> tuple[int, int, int, int]:
    """(x, y, w, h) of a box around the anomaly map's maximum, 1/8 of the shorter side wide (clipped)."""
    h, w = amap.shape[:2]
    cy, cx = np.unravel_index(int(np.argmax(amap)), amap.shape[:2])
    half = max(2, min(h, w) // 16)
    x0, y0 = max(0, int(cx) - half), max(0, int(cy) - half)
    x1, y1 = min(w, int(cx) + half + 1), min(h, int(cy) + half + 1)
    return x0, y0, x1 - x0, y1 - y0


def _manifest_number(where: str, field: str, value: Any) -> float:
    """A finite number from the manifest, or PackageError naming the field (a NaN threshold passes every part)."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise PackageError(f"{where}: {field}: expected a finite number, got {value!r}") from None
    if not math.isfinite(v):
        raise PackageError(f"{where}: {field}: expected a finite number, got {value!r}")
    return v
