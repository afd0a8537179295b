"""INT8 calibration: the `calibration/<model>.yaml` manifest, its images, and activation ranges collected image by
image.

The manifest says which good training images calibrate the activation ranges (how many, how sampled, with which
method and which nodes stay in float). Pixels come from the package manifest's `Preprocess`, never re-specified,
so calibration sees exactly what the deployed graph sees. Images held out by the run (`val_split.json`) are never
calibration images: the accuracy gate evaluates on them. Ranges are folded batch by batch into histograms
(`collect_ranges`), never kept as tensors, so 300 or 3000 images need the same memory.
"""

from __future__ import annotations

import contextlib
import io
import logging
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from tqdm import tqdm

from edge_ad.errors import ConfigError
from edge_ad.fileio import read_yaml_file
from edge_ad.runtime.geometry import Geometry
from edge_ad.runtime.preprocess import Preprocess

log = logging.getLogger(__name__)

METHODS = ("entropy", "percentile", "minmax")
SAMPLINGS = ("random", "first", "stratified")
#: Nodes kept in float by default (regexes on node names, or ONNX op types). Only GEMMs/convolutions with a
#: constant weight are quantisation candidates at all, so norms, Softmax, reductions and the linear-attention sums
#: (activation x activation MatMuls) are never quantised; these entries remove the remaining sensitive GEMMs.
DEFAULT_EXCLUDE: tuple[str, ...] = (
    "Conv",                          # patch embedding
    r"/bottleneck",                  # the noisy bottleneck MLP
    r"^/model/[A-Za-z]+(_\d+)?$",    # model-root nodes: tap fusion, cosine head, A a A^T map head, top-k score
    r"^/[A-Za-z]+(_\d+)?$",          # graph prologue (uint8 cast, normalisation)
)
MIN_RECOMMENDED_IMAGES = 300
KEYS = {"model", "data_root", "categories", "split", "num_images", "sampling", "seed", "method", "percentile",
        "exclude", "activation_gemms", "description"}


@dataclass(frozen=True)
class CalibrationConfig:
    """A validated calibration manifest. `source` is the YAML file it came from ("defaults" if none)."""

    model: str
    data_root: str | None = None
    categories: tuple[str, ...] | None = None
    split: str = "train"
    num_images: int = 512
    sampling: str = "stratified"
    seed: int = 0
    method: str = "percentile"
    percentile: float = 99.999
    exclude: tuple[str, ...] = DEFAULT_EXCLUDE
    activation_gemms: tuple[str, ...] = ()
    source: str = "defaults"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["categories"] = list(self.categories) if self.categories else None
        d["exclude"] = list(self.exclude)
        d["activation_gemms"] = list(self.activation_gemms)
        return d


def calibration_dirs() -> list[Path]:
    """Where manifests are looked up: ./calibration, then the manifests shipped with edge-ad."""
    from edge_ad.export.profile import bundled_dir

    bundled = bundled_dir("edge_ad.calibration_manifests")
    return [Path.cwd() / "calibration", *([bundled] if bundled else [])]


def _want(where: str, key: str, value: Any, types: type | tuple[type, ...], expected: str) -> Any:
    if isinstance(value, bool) and bool not in (types if isinstance(types, tuple) else (types,)):
        raise ConfigError(f"{where}: {key}: expected {expected}, got {value!r}")
    if not isinstance(value, types):
        raise ConfigError(f"{where}: {key}: expected {expected}, got {value!r}")
    return value


def validate_config(raw: dict[str, Any], where: str, model: str | None = None) -> CalibrationConfig:
    """Check every key of a calibration manifest mapping; ConfigError names the file, key, expected and got."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(raw).__name__}")
    unknown = sorted(set(raw) - KEYS)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; valid: {sorted(KEYS)}")
    name = raw.get("model", model)
    _want(where, "model", name, str, "a model name")
    if model is not None and name != model:
        raise ConfigError(f"{where}: model: the manifest is for {name!r}, the package holds {model!r}")
    cfg: dict[str, Any] = {"model": name, "source": where}
    if raw.get("data_root") is not None:
        cfg["data_root"] = str(_want(where, "data_root", raw["data_root"], str, "a directory path"))
    if raw.get("categories") is not None:
        cats = _want(where, "categories", raw["categories"], list, "a list of category names")
        if not cats or not all(isinstance(c, str) and c for c in cats):
            raise ConfigError(f"{where}: categories: expected a non-empty list of names, got {cats!r}")
        cfg["categories"] = tuple(cats)
    split = raw.get("split", "train")
    if split != "train":
        raise ConfigError(f"{where}: split: expected 'train' (calibrate on good training images only), got {split!r}")
    n = _want(where, "num_images", raw.get("num_images", 512), int, "an integer >= 1")
    if n < 1:
        raise ConfigError(f"{where}: num_images: expected an integer >= 1, got {n}")
    cfg["num_images"] = n
    sampling = raw.get("sampling", "stratified")
    if sampling not in SAMPLINGS:
        raise ConfigError(f"{where}: sampling: expected one of {list(SAMPLINGS)}, got {sampling!r}")
    cfg["sampling"] = sampling
    cfg["seed"] = _want(where, "seed", raw.get("seed", 0), int, "an integer")
    method = raw.get("method", "percentile")
    if method not in METHODS:
        raise ConfigError(f"{where}: method: expected one of {list(METHODS)}, got {method!r}")
    cfg["method"] = method
    pct = float(_want(where, "percentile", raw.get("percentile", 99.999), (int, float), "a number in (50, 100]"))
    if not 50.0 < pct <= 100.0:
        raise ConfigError(f"{where}: percentile: expected a number in (50, 100], got {pct}")
    cfg["percentile"] = pct
    for key in ("exclude", "activation_gemms"):
        if key not in raw:
            continue
        ex = raw[key] if raw[key] is not None else []
        _want(where, key, ex, list, "a list of node-name regexes" + (" or ONNX op types" if key == "exclude" else ""))
        for e in ex:
            if not isinstance(e, str) or not e:
                raise ConfigError(f"{where}: {key}: expected non-empty strings, got {e!r}")
            try:
                re.compile(e)
            except re.error as err:
                raise ConfigError(f"{where}: {key}: {e!r} is not a valid regular expression ({err})") from err
        cfg[key] = tuple(ex)
    return CalibrationConfig(**cfg)


def load_calibration_config(model: str, path: str | Path | None = None) -> CalibrationConfig:
    """The manifest at `path`, else `calibration/<model>.yaml` (./ then the source tree), else the defaults."""
    candidates = [Path(path)] if path else [d / f"{model}.yaml" for d in calibration_dirs()]
    for p in candidates:
        if p.is_file():
            raw = read_yaml_file(p, "calibration manifest") or {}
            return validate_config(raw, str(p), model)
    if path:
        raise ConfigError(f"{path}: calibration manifest not found")
    log.info("no calibration/%s.yaml: using the default calibration settings", model)
    return CalibrationConfig(model=model)


def select_images(cfg: CalibrationConfig, data_root: str | Path, exclude_paths: Sequence[str | Path] = ()
                  ) -> list[Path]:
    """Calibration image paths: train/good of the manifest's categories minus `exclude_paths`, sampled per cfg."""
    from edge_ad.data.mvtec import load_samples

    held = {str(Path(p).resolve()) for p in exclude_paths}
    pool = [s for s in load_samples(data_root, list(cfg.categories) if cfg.categories else None, split="train")
            if str(Path(s.path).resolve()) not in held]
    if not pool:
        raise ConfigError(f"calibration: no train/good images left in {data_root} after removing "
                          f"{len(held)} held-out image(s)")
    n = min(cfg.num_images, len(pool))
    if n < cfg.num_images:
        log.warning("calibration: %d images requested, only %d available in %s", cfg.num_images, n, data_root)
    if n < MIN_RECOMMENDED_IMAGES:
        log.warning("calibration: %d images; at least %d are recommended for a stable INT8 calibration",
                    n, MIN_RECOMMENDED_IMAGES)
    rng = np.random.default_rng(cfg.seed)
    if cfg.sampling == "first":
        picked = pool[:n]
    elif cfg.sampling == "random":
        picked = [pool[i] for i in sorted(rng.choice(len(pool), size=n, replace=False))]
    else:  # stratified: round-robin over categories, each in its own seeded random order
        by_cat: dict[str, list[Any]] = {}
        for s in pool:
            by_cat.setdefault(s.category, []).append(s)
        queues = [[items[i] for i in rng.permutation(len(items))] for _, items in sorted(by_cat.items())]
        picked = []
        while len(picked) < n:
            for q in queues:
                if q and len(picked) < n:
                    picked.append(q.pop(0))
    return [Path(s.path) for s in picked]


def image_batches(paths: Sequence[Path], preprocess: Preprocess, batch: int = 1, progress: bool = True,
                  desc: str = "calibration", geometry: Geometry | None = None) -> Iterator[np.ndarray]:
    """uint8 NHWC model inputs of `paths` (package preprocessing; the tiles of each aligned frame for a package
    with geometry), `batch` images at a time, with a progress bar."""
    from edge_ad.imageio import read_image
    from edge_ad.runtime.geometry import model_inputs

    with tqdm(total=len(paths), desc=desc, unit="img", disable=not progress, leave=False) as bar:
        for i in range(0, len(paths), batch):
            chunk = paths[i : i + batch]
            yield np.stack([x for p in chunk for x in model_inputs(read_image(p), preprocess, geometry)])
            bar.update(len(chunk))


class RangeCollector:
    """Per-tensor |x| ranges accumulated batch by batch, so memory stays flat in the number of images.

    "minmax" keeps the running max |x|; "entropy" and "percentile" keep ONNX Runtime's mergeable histograms
    (`HistogramCollector`, the same bins and thresholds as its calibrators) and pick the threshold at the end.
    """

    def __init__(self, method: str, percentile: float = 99.999) -> None:
        if method not in METHODS:
            raise ConfigError(f"calibration method: expected one of {list(METHODS)}, got {method!r}")
        self.method = method
        self._amax: dict[str, float] = {}
        self._hist: Any = None
        if method != "minmax":
            from onnxruntime.quantization.calibrate import HistogramCollector

            bins = 2048  # TensorRT's entropy calibrator uses 2048 bins (ONNX Runtime's entropy default of 128 leaves
            # one candidate threshold until merging widens the histogram); percentile: ONNX Runtime's default
            self._hist = HistogramCollector(method=method, symmetric=True, num_bins=bins, num_quantized_bins=128,
                                            percentile=percentile, scenario="same")

    def update(self, tensors: dict[str, np.ndarray]) -> None:
        """Fold one batch of intermediate tensors into the ranges."""
        for name, arr in tensors.items():
            if not np.all(np.isfinite(arr)):
                raise ConfigError(f"calibration: tensor {name!r} has non-finite values on a calibration image; the "
                                  "fp32 model itself produces NaN/inf there")
        if self._hist is None:
            for name, arr in tensors.items():
                self._amax[name] = max(self._amax.get(name, 0.0), float(np.max(np.abs(arr))) if arr.size else 0.0)
            return
        with contextlib.redirect_stdout(io.StringIO()):  # the collector prints a line per call
            self._hist.collect(tensors)

    def amax(self) -> dict[str, float]:
        """tensor -> calibrated |x| threshold (>= 0)."""
        if self._hist is None:
            return dict(self._amax)
        with contextlib.redirect_stdout(io.StringIO()):
            result = self._hist.compute_collection_result()
        return {name: float(max(abs(float(v[0])), abs(float(v[1])))) for name, v in result.items()}


def collect_ranges(model: onnx.ModelProto, tensors: Sequence[str], batches: Iterable[np.ndarray], input_name: str,
                   method: str, percentile: float = 99.999) -> dict[str, float]:
    """Calibrated |x| thresholds of `tensors` of the fp32 `model` over uint8 image `batches`.

    The model is run with those tensors as its only outputs, one batch at a time, and each batch is folded into a
    `RangeCollector` and dropped: peak memory is one batch's intermediates, whatever the number of images.
    """
    import onnxruntime as ort

    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    del probe.graph.output[:]
    probe.graph.output.extend(onnx.helper.make_empty_tensor_value_info(t) for t in tensors)
    so = ort.SessionOptions()
    so.log_severity_level = 3
    sess = ort.InferenceSession(probe.SerializeToString(), so, providers=["CPUExecutionProvider"])
    collector = RangeCollector(method, percentile)
    seen = 0
    for batch in batches:
        outs = sess.run(list(tensors), {input_name: batch})
        collector.update(dict(zip(tensors, outs)))
        seen += len(batch)
    if not seen:
        raise ConfigError("calibration: no images")
    return collector.amax()
