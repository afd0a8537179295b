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
from protocol_fixtures import FIXTURES, category
from sklearn.metrics import auc, average_precision_score, precision_recall_curve, roc_auc_score

from edge_ad.evaluate.metrics import CategoryPredictions, evaluate_categories
from edge_ad.evaluate.protocols import get_protocol

KEYS = ("image_auroc", "image_ap", "image_f1max", "pixel_auroc", "pixel_ap", "pixel_f1max", "aupro")


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
sys.path.insert(0, str(Path(__file__).resolve().parent))
from sbs_common import ader_metrics, load_ader_metric, stub

ader = load_ader_metric(args.ader)


def mambaad_official(c):
    return ader_metrics(ader, c["masks"][:, None].astype(int), c["maps"], c["labels"])


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
from sbs_common import anomalib_metrics, load_anomalib_metrics

AUROC, AUPRO = load_anomalib_metrics(args.ulsad)


def ulsad_official(c):
    return anomalib_metrics(AUROC, AUPRO, c["labels"], c["scores"], c["masks"], c["maps"])


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
