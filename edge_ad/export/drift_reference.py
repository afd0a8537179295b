"""The drift reference a package carries (manifest `drift`, read by `edge_ad.runtime.drift.DriftMonitor`): image
statistics of the training run's good images and the normalised scores of its held-out good images, measured at
export on the exported graph itself (ONNX Runtime, the gate's path), so the station compares like with like."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edge_ad.runtime.drift import REFERENCE_MAX, build_reference, image_stats
from edge_ad.runtime.package import ModelPackage
from edge_ad.runtime.postprocess import normalize_score

log = logging.getLogger(__name__)
#: held-out images scored for the score reference (the thresholds came from the same images)
MAX_SCORED = 200


def normalized_scores(pkg: ModelPackage, scores: Sequence[float]) -> list[float]:
    """Raw image scores -> the station's normalised score (0.5 = the package's threshold)."""
    th = pkg.thresholds
    norm = th["normalization"]
    out = normalize_score(np.asarray(scores, np.float64), float(th["image"]["value"]), float(norm["score_min"]),
                          float(norm["score_max"]))
    return [float(x) for x in np.asarray(out).ravel()]


def drift_reference(pkg: ModelPackage, data_root: str | Path, run: str | Path | None) -> dict[str, Any] | None:
    """The `drift` section for a package trained on `data_root` (None when the dataset has no good training
    images). Scores: the run's held-out good images (val_split.json), at most MAX_SCORED; without a hold-out,
    image statistics only."""
    from edge_ad.data.mvtec import load_samples
    from edge_ad.evaluate import rundir
    from edge_ad.export.gate import run_package
    from edge_ad.imageio import read_image

    cats = list(pkg.manifest.get("categories") or []) or None
    train = [s for s in load_samples(data_root, cats, split="train") if s.label == 0]
    if not train:
        return None
    pick = [train[i] for i in np.linspace(0, len(train) - 1, min(len(train), REFERENCE_MAX)).round().astype(int)]
    stats = [image_stats(read_image(s.path)) for s in pick]
    scores: list[float] | None = None
    run_dir = Path(run) if run else None
    if run_dir is not None and (run_dir / rundir.VAL_SPLIT).is_file():
        held = {str(Path(p).resolve()) for p in rundir.holdout(run_dir)}
        good = [s for s in train if str(Path(s.path).resolve()) in held][:MAX_SCORED]
        if good:
            _maps, raw = run_package(pkg, good, progress=False)
            scores = normalized_scores(pkg, raw.tolist())
    alignment = _alignment_scores(pkg, pick, read_image)
    rate = float(pkg.thresholds["image"].get("target_frr", 0.01) or 0.01)
    source = (f"{len(pick)} training images of {data_root}"
              + (f", {len(scores)} held-out good images scored" if scores is not None else ", no hold-out: no score"))
    if alignment:
        source += f", {len(alignment)} alignment match scores"
    log.info("drift reference: %s", source)
    return build_reference(stats, scores, rate, source, alignment)


def _alignment_scores(pkg: ModelPackage, samples: Sequence[Any], read: Any) -> list[float] | None:
    """The ECC match score of each good training frame against its category's reference (None: the package does
    not align frames); frames that cannot be aligned are left out (a good frame should align)."""
    from edge_ad.errors import AlignmentError

    geo = pkg.geometry()
    if geo is None or geo.align is None:
        return None
    out = []
    for s in samples:
        try:
            out.append(float(geo.locate(read(s.path), s.category if s.category in geo.references else None).score))
        except AlignmentError:
            continue
    return out
