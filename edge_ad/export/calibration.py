"""INT8 calibration sets: the `calibration/<model>.yaml` manifest and an ONNX Runtime data reader over its images.

The manifest says which good training images calibrate the activation ranges (how many, how sampled, with which
method and which nodes stay in float). Pixels come from the package manifest's `Preprocess`, never re-specified,
so calibration sees exactly what the deployed graph sees. Images held out by the run (`val_split.json`) are never
calibration images: the accuracy gate evaluates on them.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from onnxruntime.quantization import CalibrationDataReader
from tqdm import tqdm

from edge_ad.errors import ConfigError
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
        "exclude", "description"}


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
    method: str = "entropy"
    percentile: float = 99.999
    exclude: tuple[str, ...] = DEFAULT_EXCLUDE
    source: str = "defaults"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["categories"] = list(self.categories) if self.categories else None
        d["exclude"] = list(self.exclude)
        return d


def calibration_dirs() -> list[Path]:
    """Where manifests are looked up: ./calibration, then the edge-ad source tree's calibration/."""
    return [Path.cwd() / "calibration", Path(__file__).resolve().parents[2] / "calibration"]


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
    method = raw.get("method", "entropy")
    if method not in METHODS:
        raise ConfigError(f"{where}: method: expected one of {list(METHODS)}, got {method!r}")
    cfg["method"] = method
    pct = float(_want(where, "percentile", raw.get("percentile", 99.999), (int, float), "a number in (50, 100]"))
    if not 50.0 < pct <= 100.0:
        raise ConfigError(f"{where}: percentile: expected a number in (50, 100], got {pct}")
    cfg["percentile"] = pct
    if "exclude" in raw:
        ex = raw["exclude"] if raw["exclude"] is not None else []
        _want(where, "exclude", ex, list, "a list of node-name regexes or ONNX op types")
        for e in ex:
            if not isinstance(e, str) or not e:
                raise ConfigError(f"{where}: exclude: expected non-empty strings, got {e!r}")
            try:
                re.compile(e)
            except re.error as err:
                raise ConfigError(f"{where}: exclude: {e!r} is not a valid regular expression ({err})") from err
        cfg["exclude"] = tuple(ex)
    return CalibrationConfig(**cfg)


def load_calibration_config(model: str, path: str | Path | None = None) -> CalibrationConfig:
    """The manifest at `path`, else `calibration/<model>.yaml` (./ then the source tree), else the defaults."""
    candidates = [Path(path)] if path else [d / f"{model}.yaml" for d in calibration_dirs()]
    for p in candidates:
        if p.is_file():
            try:
                raw = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
            except yaml.YAMLError as e:
                raise ConfigError(f"{p}: invalid YAML: {e}") from e
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


class ImageCalibrationReader(CalibrationDataReader):
    """Feeds uint8 NHWC crops (package preprocessing) to ONNX Runtime's calibrator, one batch per call."""

    def __init__(self, paths: Sequence[Path], preprocess: Preprocess, input_name: str, batch: int = 1,
                 progress: bool = True) -> None:
        self.paths = list(paths)
        self.preprocess = preprocess
        self.input_name = input_name
        self.batch = batch
        self.progress = progress
        self._it: Iterator[dict[str, np.ndarray]] | None = None

    def _batches(self) -> Iterator[dict[str, np.ndarray]]:
        from edge_ad.data.mvtec import read_image

        bar = tqdm(total=len(self.paths), desc="calibration", unit="img", disable=not self.progress, leave=False)
        for i in range(0, len(self.paths), self.batch):
            chunk = self.paths[i : i + self.batch]
            yield {self.input_name: np.stack([self.preprocess.apply(read_image(p)) for p in chunk])}
            bar.update(len(chunk))
        bar.close()

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self._it is None:
            self._it = self._batches()
        return next(self._it, None)

    def rewind(self) -> None:
        self._it = None

    def __len__(self) -> int:
        return (len(self.paths) + self.batch - 1) // self.batch
