"""Side-by-side check of edge-ad's official-protocol metrics against the four official evaluation codes.

    python benchmarks/sbs_eval_official.py --dinomaly /path/to/Dinomaly --ader /path/to/ADer \\
        --dualad /path/to/DualAD --ulsad /path/to/ULSAD-2024 --deps /path/to/deps [--json out.json]

    /path/to/deps: pip install --target /path/to/deps torchmetrics==0.10.3 lightning-utilities==0.3.0 pandas \\
        "setuptools<70"   (ULSAD's anomalib pins torchmetrics 0.10.3, which needs pkg_resources)

On the fixed maps/masks of tests/protocol_fixtures.py it runs, per category fixture:
- Dinomaly `utils.py`: `compute_pro`, `f1_score_max` + sklearn AUROC/AP, exactly as `evaluation_batch` calls them;
- ADer `util/metric.py::Evaluator.run` with MambaAD's released metric list and `pooling_ks=None, max_step_aupro=100`
  (use_adeval off, as configs/mambaad/mambaad_mvtec.py);
- DualAD `utils/eval_helper.py::performances` with the released metric list;
- ULSAD's anomalib `AUROC` (image and pixel) and `AUPRO` (torchmetrics 0.10.3),
and edge-ad's `evaluate_categories` with each protocol's `MetricVariants`, and prints the largest difference.
Only the official functions used are loaded; STAND-INS (labelled below) replace imports they do not use for
these metrics (numba's jit, ADer's CUDA adeval, plotting, kornia's GPU labelling, tabulate, logging helpers).
`--json` writes the official figures, which tests/test_protocols.py pins.
"""
import argparse
import importlib.machinery
import importlib.util
import json
import math
import re
import sys
import types
from pathlib import Path

ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
ap.add_argument("--dinomaly", required=True)
ap.add_argument("--ader", required=True)
ap.add_argument("--dualad", required=True)
ap.add_argument("--ulsad", required=True)
ap.add_argument("--deps", required=True, help="folder with torchmetrics 0.10.3 (see above)")
ap.add_argument("--json", help="write the official figures here")
args = ap.parse_args()
sys.path.insert(0, args.deps)
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import numpy as np
import pandas as pd
import torch
from protocol_fixtures import FIXTURES, category
from sklearn.metrics import auc, average_precision_score, precision_recall_curve, roc_auc_score

from edge_ad.evaluate.metrics import CategoryPredictions, evaluate_categories
from edge_ad.evaluate.protocols import get_protocol

KEYS = ("image_auroc", "image_ap", "image_f1max", "pixel_auroc", "pixel_ap", "pixel_f1max", "aupro")


def stub(name, **attrs):
    m = types.ModuleType(name)
    m.__spec__ = importlib.machinery.ModuleSpec(name, None)  # torch's import scanning needs a spec
    m.__dict__.update(attrs)
    sys.modules[name] = m
    return m


# ---- Dinomaly: the functions evaluation_batch uses, loaded from utils.py ------------------------------------
np.bool = bool  # the official compute_pro uses np.bool (removed in NumPy 1.24)
if not hasattr(pd.DataFrame, "append"):  # ... and DataFrame.append (removed in pandas 2)
    pd.DataFrame.append = lambda self, row, ignore_index=True: pd.concat([self, pd.DataFrame([row])],
                                                                          ignore_index=ignore_index)
from statistics import mean

from skimage import measure

src = open(f"{args.dinomaly}/utils.py").read()
dino = {"np": np, "pd": pd, "measure": measure, "mean": mean, "auc": auc, "ndarray": np.ndarray,
        "precision_recall_curve": precision_recall_curve}
for fn in ("compute_pro", "f1_score_max"):
    exec(re.search(rf"^def {fn}\(.*?(?=^def |\Z)", src, re.S | re.M).group(0), dino)


def dinomaly_official(c):
    """evaluation_batch's metric block, on the fixture's maps/masks/scores."""
    gt_px, pr_px, gt_sp, pr_sp = c["masks"].astype(bool), c["maps"], c["labels"], c["scores"]
    aupro_px = dino["compute_pro"](gt_px.astype(int), pr_px)  # `set(masks.flatten()) == {0, 1}` holds for ints
    gt_px, pr_px = gt_px.ravel(), pr_px.ravel()
    return {"image_auroc": roc_auc_score(gt_sp, pr_sp), "image_ap": average_precision_score(gt_sp, pr_sp),
            "image_f1max": dino["f1_score_max"](gt_sp, pr_sp), "pixel_auroc": roc_auc_score(gt_px, pr_px),
            "pixel_ap": average_precision_score(gt_px, pr_px), "pixel_f1max": dino["f1_score_max"](gt_px, pr_px),
            "aupro": aupro_px}


# ---- ADer Evaluator (MambaAD) -----------------------------------------------------------------------------
stub("numba", jit=lambda *a, **k: (lambda f: f))  # STAND-IN: unused decorator import
stub("adeval", EvalAccumulatorCuda=None)  # STAND-IN: CUDA accumulator, only with use_adeval=True
stub("util")
stub("util.util", get_timepc=lambda: 0.0, log_msg=lambda logger, msg: None)  # STAND-IN: timing/log helpers


class _Registry:  # STAND-IN: ADer's class registry (only the constructor is used at import)
    def __init__(self, name):
        self.name = name


stub("util.registry", Registry=_Registry)
sys.path.insert(0, args.ader)
spec = importlib.util.spec_from_file_location("ader_metric", f"{args.ader}/util/metric.py")
ader = importlib.util.module_from_spec(spec)
spec.loader.exec_module(ader)
MAMBAAD_METRICS = ['mAUROC_sp_max', 'mAP_sp_max', 'mF1_max_sp_max', 'mAUROC_px', 'mAP_px', 'mF1_max_px', 'mAUPRO_px']
ADER_NAMES = dict(zip(MAMBAAD_METRICS, KEYS[:6] + ("aupro",)))
ADER_NAMES = {'mAUROC_sp_max': "image_auroc", 'mAP_sp_max': "image_ap", 'mF1_max_sp_max': "image_f1max",
              'mAUROC_px': "pixel_auroc", 'mAP_px': "pixel_ap", 'mF1_max_px': "pixel_f1max", 'mAUPRO_px': "aupro"}


def mambaad_official(c):
    ev = ader.Evaluator(metrics=MAMBAAD_METRICS, pooling_ks=None, max_step_aupro=100)
    results = {"imgs_masks": c["masks"][:, None].astype(int), "anomaly_maps": c["maps"],
               "cls_names": np.array(["x"] * len(c["labels"])), "anomalys": c["labels"]}
    out = ev.run(results, "x")
    return {ADER_NAMES[k]: float(v) for k, v in out.items()}


# ---- DualAD eval_helper -------------------------------------------------------------------------------------
stub("tabulate", tabulate=lambda *a, **k: "")  # STAND-IN: report printing only
spec = importlib.util.spec_from_file_location("dualad_eval", f"{args.dualad}/utils/eval_helper.py")
dual = importlib.util.module_from_spec(spec)
spec.loader.exec_module(dual)
DUAL_NAMES = {"image_auc": "image_auroc", "image_ap": "image_ap", "image_f1max": "image_f1max",
              "pixel_auc": "pixel_auroc", "pixel_ap": "pixel_ap", "pixel_f1max": "pixel_f1max", "pixel_aupro": "aupro"}


def dualad_official(c):
    infos = {"preds_pixel": c["maps"], "preds_image": c["scores"], "masks": c["masks"][:, None].astype(int),
             "labels": c["labels"], "classes": np.array(["x"] * len(c["labels"]))}
    out = dual.performances(infos, list(DUAL_NAMES))
    return {DUAL_NAMES[k[len("x_"):]]: float(v) for k, v in out.items() if k.startswith("x_")}


# ---- ULSAD: anomalib 0.x AUROC/AUPRO ------------------------------------------------------------------------

stub("matplotlib")
stub("matplotlib.figure", Figure=object)  # STAND-IN: plotting only
for pkg in ("anomalib", "anomalib.utils", "anomalib.utils.metrics", "anomalib.utils.cv"):
    stub(pkg).__path__ = []
an = f"{args.ulsad}/anomalib/utils"


def load(name, path):
    s = importlib.util.spec_from_file_location(name, path)
    m = importlib.util.module_from_spec(s)
    sys.modules[name] = m
    s.loader.exec_module(m)
    return m


stub("kornia")
stub("kornia.contrib", connected_components=None)  # STAND-IN: the GPU labelling path (CPU path is used)
load("anomalib.utils.cv.connected_components", f"{an}/cv/connected_components.py")
sys.modules["anomalib.utils.cv"].connected_components_cpu = sys.modules["anomalib.utils.cv.connected_components"].connected_components_cpu
sys.modules["anomalib.utils.cv"].connected_components_gpu = None
load("anomalib.utils.metrics.pro", f"{an}/metrics/pro.py")
load("anomalib.utils.metrics.binning", f"{an}/metrics/binning.py")
stub("anomalib.utils.metrics.plotting_utils", plot_figure=None)  # STAND-IN: plotting only
AUPRO = load("anomalib.utils.metrics.aupro", f"{an}/metrics/aupro.py").AUPRO
AUROC = load("anomalib.utils.metrics.auroc", f"{an}/metrics/auroc.py").AUROC


def ulsad_official(c):
    out = {}
    m = AUROC()
    m.update(torch.from_numpy(c["scores"]), torch.from_numpy(c["labels"]).int())
    out["image_auroc"] = float(m.compute())
    m = AUROC()
    m.update(torch.from_numpy(c["maps"]), torch.from_numpy(c["masks"]).int())
    out["pixel_auroc"] = float(m.compute())
    m = AUPRO()
    m.update(torch.from_numpy(c["maps"]), torch.from_numpy(c["masks"]).int())
    out["aupro"] = float(m.compute())
    return out


OFFICIAL = {"dinomaly-s": dinomaly_official, "mambaad": mambaad_official, "dualad-he": dualad_official,
            "ulsad": ulsad_official}

figures = {}
worst = 0.0
import warnings

warnings.filterwarnings("ignore")
for fam_model, official in OFFICIAL.items():
    proto = get_protocol("official", fam_model)
    figures[proto.family] = {}
    for fx, (seed, scale) in FIXTURES.items():
        c = category(seed, scale=scale)
        off = official(c)
        ours = evaluate_categories({"x": CategoryPredictions(c["labels"], c["scores"], c["masks"], c["maps"],
                                                             ["good" if v == 0 else "d" for v in c["labels"]])},
                                   proto.variants)["categories"]["x"]
        figures[proto.family][fx] = off
        diffs = {k: 0.0 if math.isnan(off[k]) and math.isnan(ours[k]) else abs(off[k] - ours[k]) for k in off}
        diffs = {k: math.inf if math.isnan(d) else d for k, d in diffs.items()}  # NaN on one side only
        worst = max(worst, max(diffs.values()))
        print(f"{proto.family:9s} fixture {fx:5s} " + "  ".join(
            f"{k} {off[k]:.6f}/{ours[k]:.6f} ({diffs[k]:.1e})" for k in off))
        missing = [k for k in KEYS if k not in off and not math.isnan(ours[k])]
        assert not missing, f"{proto.family}: edge-ad reports {missing}, the official code does not"
print(f"largest |official - edge-ad| over all protocols, fixtures and metrics: {worst:.2e}")
if args.json:
    Path(args.json).write_text(json.dumps(figures, indent=1, sort_keys=True) + "\n")
