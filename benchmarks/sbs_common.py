"""Shared by the sbs_*_official.py scripts: the image-file -> metrics leg of the side-by-side checks.

`make_images` writes a small MVTec-layout dataset whose files both sides read (non-square images, masks with
anti-aliased edges so the mask methods disagree); `edge_ad_metrics` runs edge-ad's `--protocol official`
evaluation path on it (`predict_for_protocol` + `evaluate_categories`, what `edge-ad eval` runs per model);
`compare` prints the official and edge-ad figures side by side and returns the largest difference.
"""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np

from edge_ad.data.mvtec import load_samples
from edge_ad.data.synth import generate
from edge_ad.evaluate.metrics import CategoryPredictions, evaluate_categories
from edge_ad.evaluate.protocols import get_protocol
from edge_ad.evaluate.runner import predict_for_protocol

CATEGORY = "pcb"
MAMBAAD_METRICS = ["mAUROC_sp_max", "mAP_sp_max", "mF1_max_sp_max", "mAUROC_px", "mAP_px", "mF1_max_px", "mAUPRO_px"]
ADER_NAMES = dict(zip(MAMBAAD_METRICS, ("image_auroc", "image_ap", "image_f1max", "pixel_auroc", "pixel_ap",
                                        "pixel_f1max", "aupro")))


def stub(name: str, **attrs):
    """An importable placeholder module (for imports the official code makes but these checks never use)."""
    import importlib.machinery
    import sys
    import types

    m = types.ModuleType(name)
    m.__spec__ = importlib.machinery.ModuleSpec(name, None)  # torch's import scanning needs a spec
    m.__dict__.update(attrs)
    sys.modules[name] = m
    return m


def load_ader_metric(ader: str):
    """ADer's util/metric.py as a module. STAND-INS for its unused imports: numba's jit (a decorator), the CUDA
    adeval accumulator (only with use_adeval=True), util.util's timing/log helpers, util.registry's Registry."""
    import importlib.util

    class _Registry:
        def __init__(self, name: str) -> None:
            self.name = name

    stub("numba", jit=lambda *a, **k: (lambda f: f))
    stub("adeval", EvalAccumulatorCuda=None)
    stub("util")
    stub("util.util", get_timepc=lambda: 0.0, log_msg=lambda logger, msg: None)
    stub("util.registry", Registry=_Registry)
    spec = importlib.util.spec_from_file_location("ader_metric", f"{ader}/util/metric.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def ader_metrics(metric_mod, masks: np.ndarray, maps: np.ndarray, anomalys: np.ndarray) -> dict[str, float]:
    """`Evaluator(metrics=MambaAD's list, pooling_ks=None, max_step_aupro=100).run` on one class (MambaAD's config)."""
    ev = metric_mod.Evaluator(metrics=MAMBAAD_METRICS, pooling_ks=None, max_step_aupro=100)
    results = {"imgs_masks": masks, "anomaly_maps": maps, "cls_names": np.array(["x"] * len(anomalys)),
               "anomalys": anomalys}
    return {ADER_NAMES[k]: float(v) for k, v in ev.run(results, "x").items()}


def make_images(root: str | Path, hw: tuple[int, int] = (330, 290), per_category: int = 4, seed: int = 3) -> Path:
    """A one-category synthetic dataset at `root`, images resized to `hw` (h, w), mask edges blurred."""
    root = Path(root)
    generate(root, categories=[CATEGORY], per_category=per_category, size=256, seed=seed, force=True)
    for f in root.rglob("*.png"):
        img = cv2.imread(str(f), cv2.IMREAD_UNCHANGED)
        if "ground_truth" in f.parts:
            img = cv2.GaussianBlur(cv2.resize(img, hw[::-1], interpolation=cv2.INTER_NEAREST), (5, 5), 1.2)
        else:
            img = cv2.resize(img, hw[::-1], interpolation=cv2.INTER_CUBIC)
        cv2.imwrite(str(f), img)
    return root / CATEGORY


def edge_ad_metrics(model, model_name: str, root: str | Path, batch: int = 4) -> dict[str, float]:
    """edge-ad's official-protocol figures for `model` on the test split under `root`."""
    proto = get_protocol("official", model_name)
    samples = load_samples(root, [CATEGORY], split="test")
    preds, _ = predict_for_protocol(model.eval(), samples, proto, batch_size=batch)
    p = CategoryPredictions(np.array([s.label for s in samples]), preds.scores, preds.masks, preds.maps,
                            [s.defect_type for s in samples])
    out = evaluate_categories({CATEGORY: p}, proto.variants)["categories"][CATEGORY]
    return {k: v for k, v in out.items() if k in proto.variants.keys}


def edge_ad_inputs(model, model_name: str, root: str | Path, map_hw: tuple[int, int]) -> dict[str, tuple]:
    """path -> (normalised CHW input, uint8 ground truth at `map_hw`) as edge-ad's official protocol builds them."""
    import dataclasses

    from edge_ad.data.torch_dataset import ImageDataset
    from edge_ad.evaluate.protocols import protocol_mask
    from edge_ad.evaluate.runner import raw_mask

    proto = get_protocol("official", model_name)
    pre = dataclasses.replace(model.preprocess, interpolation=proto.resize or model.preprocess.interpolation)
    samples = load_samples(root, [CATEGORY], split="test")
    ds = ImageDataset(samples, pre)
    return {str(Path(s.path).resolve()): (ds[i]["image"].numpy(), protocol_mask(proto, raw_mask(s), pre, map_hw))
            for i, s in enumerate(samples)}


def compare_inputs(official: dict[str, tuple], ours: dict[str, tuple]) -> None:
    """Print the largest input difference and the differing ground-truth pixels, matched by image path."""
    assert sorted(official) == sorted(ours), "the two sides read different image files"
    d_img = max(float(np.abs(np.asarray(official[k][0]) - ours[k][0]).max()) for k in ours)
    d_gt = sum(int((np.asarray(official[k][1]).astype(bool) != ours[k][1].astype(bool)).sum()) for k in ours)
    n_gt = sum(int(np.asarray(official[k][1]).astype(bool).sum()) for k in ours)
    print(f"inputs: {len(ours)} images, max |input diff| {d_img:.2e}; ground truth: {d_gt} of {n_gt} defect "
          "pixels differ")


def compare(official: dict[str, float], ours: dict[str, float], what: str = "image files -> metrics") -> float:
    """Print both sets of figures; the largest |difference| (inf if a metric is missing or NaN on one side)."""
    worst = 0.0
    for k in sorted(set(official) | set(ours)):
        a, b = float(official.get(k, math.nan)), float(ours.get(k, math.nan))
        d = 0.0 if math.isnan(a) and math.isnan(b) else abs(a - b)
        d = math.inf if math.isnan(d) else d
        worst = max(worst, d)
        print(f"  {k:12s} official {a:.8f}  edge-ad {b:.8f}  |diff| {d:.2e}")
    print(f"{what}: largest |official - edge-ad| {worst:.2e}")
    return worst


def load_anomalib_metrics(ulsad: str):
    """(AUROC, AUPRO) classes from ULSAD's anomalib (needs torchmetrics 0.10.3 importable). STAND-INS for unused
    imports: matplotlib's Figure and anomalib's plot helper (plots), kornia's GPU labelling (the CPU path runs)."""
    import importlib.util
    import sys

    stub("matplotlib")
    stub("matplotlib.figure", Figure=object)
    for pkg in ("anomalib", "anomalib.utils", "anomalib.utils.metrics", "anomalib.utils.cv"):
        sys.modules.setdefault(pkg, stub(pkg)).__path__ = []
    stub("kornia")
    stub("kornia.contrib", connected_components=None)
    an = f"{ulsad}/anomalib/utils"

    def load(name: str, path: str):
        spec = importlib.util.spec_from_file_location(name, path)
        mod = importlib.util.module_from_spec(spec)
        sys.modules[name] = mod
        spec.loader.exec_module(mod)
        return mod

    cc = load("anomalib.utils.cv.connected_components", f"{an}/cv/connected_components.py")
    sys.modules["anomalib.utils.cv"].connected_components_cpu = cc.connected_components_cpu
    sys.modules["anomalib.utils.cv"].connected_components_gpu = None
    load("anomalib.utils.metrics.pro", f"{an}/metrics/pro.py")
    load("anomalib.utils.metrics.binning", f"{an}/metrics/binning.py")
    stub("anomalib.utils.metrics.plotting_utils", plot_figure=None)
    aupro = load("anomalib.utils.metrics.aupro", f"{an}/metrics/aupro.py").AUPRO
    auroc = load("anomalib.utils.metrics.auroc", f"{an}/metrics/auroc.py").AUROC
    return auroc, aupro


def anomalib_metrics(auroc_cls, aupro_cls, labels, scores, masks, maps) -> dict[str, float]:
    """ULSAD's metrics (mvtec.yaml: image AUROC, pixel AUROC, pixel AUPRO) as anomalib computes them."""
    import torch

    out = {}
    for key, cls, preds, target in (("image_auroc", auroc_cls, scores, labels), ("pixel_auroc", auroc_cls, maps, masks),
                                    ("aupro", aupro_cls, maps, masks)):
        m = cls()
        m.update(torch.as_tensor(preds), torch.as_tensor(target).int())
        out[key] = float(m.compute())
    return out
