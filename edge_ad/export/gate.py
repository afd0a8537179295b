"""Accuracy gate of a converted (fp16/int8) package against its fp32 package, both run by ONNX Runtime.

Tensor tolerances say little for anomaly detection: what matters is the ranking of images
(AUROC), the localisation (pixel AUROC, AUPRO) and the OK/NG decision at the deployed threshold. The gate runs
both packages over the same held-out images: the run's held-out good images (thresholds are re-derived on them for
each model with the same procedure) and the dataset's test split (per-category metric deltas, when it has
anomalous images). It always reports the score Spearman correlation and the OK/NG agreement.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from edge_ad.errors import ConfigError, DataError
from edge_ad.evaluate import rundir
from edge_ad.runtime.package import GraphChoice, ModelPackage, default_graph_choices
from edge_ad.runtime.ranking import rank_agreement

log = logging.getLogger(__name__)

GATED_METRICS = ("image_auroc", "pixel_auroc", "aupro")


@dataclass(frozen=True)
class GateBudget:
    """Largest allowed drops (fp32 - converted) and smallest allowed agreement; None = reported, not gated."""

    max_drop: float = 0.005  # image AUROC, per category
    min_agreement: float = 0.99  # OK/NG agreement over all gate images
    max_pixel_drop: float | None = None  # pixel AUROC and AUPRO, per category
    min_spearman: float | None = None  # image scores over all gate images

    def __post_init__(self) -> None:
        def check(name: str, v: float | None, lo: float, hi: float) -> None:
            if v is None and name in ("max_pixel_drop", "min_spearman"):
                return
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or not lo <= v <= hi:
                raise ConfigError(f"gate budget {name}: expected a number in [{lo}, {hi}], got {v!r}")

        check("max_drop", self.max_drop, 0.0, 1.0)
        check("min_agreement", self.min_agreement, 0.0, 1.0)
        check("max_pixel_drop", self.max_pixel_drop, 0.0, 1.0)
        check("min_spearman", self.min_spearman, -1.0, 1.0)


@dataclass
class GateSet:
    """Gate images: held-out good images (threshold derivation) and labelled test samples (metrics)."""

    good: list[Any]  # edge_ad.data.mvtec.Sample, label 0
    test: list[Any]  # edge_ad.data.mvtec.Sample, with masks for anomalous ones
    good_source: str


def gate_set(pkg: ModelPackage, data_root: str | Path) -> GateSet:
    """Held-out good images from the run's val_split.json (else the test split's good images) plus the test split."""
    from edge_ad.data.mvtec import load_samples

    cats = list(pkg.manifest.get("categories") or []) or None
    try:
        test = load_samples(data_root, cats, split="test")
    except DataError as e:
        log.warning("gate: no usable test split in %s (%s): Spearman and agreement only", data_root, e)
        test = []
    run = (pkg.manifest.get("training") or {}).get("run")
    val = Path(run) / "val_split.json" if run else None
    if run and val is not None and val.is_file():
        held = {str(Path(p).resolve()) for p in rundir.holdout(Path(run))}
        train = load_samples(data_root, cats, split="train")
        good = [s for s in train if str(Path(s.path).resolve()) in held]
        if good:
            return GateSet(good, test, f"{len(good)} held-out good images ({val})")
    good = [s for s in test if s.label == 0]
    if not good:
        raise ConfigError(f"gate: no held-out good images: {val or 'the package has no training.run'} lists none and "
                          f"{data_root} has no test/good images; pass --data with an MVTec-layout dataset")
    return GateSet(good, test, f"{len(good)} test/good images (no val_split.json)")


def _nearest(mask: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize with PyTorch's 'nearest' index rule (floor(i * in / out)), as the evaluation."""
    ys = np.minimum((np.arange(hw[0]) * mask.shape[0] / hw[0]).astype(np.int64), mask.shape[0] - 1)
    xs = np.minimum((np.arange(hw[1]) * mask.shape[1] / hw[1]).astype(np.int64), mask.shape[1] - 1)
    return (mask[ys][:, xs] > 0).astype(np.uint8)


def gate_backend(pkg: ModelPackage) -> str:
    """Which engine a package's main graph is gated on: OpenVINO for bf16 (the engine that runs it in bf16), else
    ONNX Runtime (standing in for TensorRT, which builds that graph strongly typed)."""
    return "openvino" if pkg.precision == "bf16" else "onnxruntime"


def _describe(choice: GraphChoice) -> str:
    precision = f" {choice.inference_precision}" if choice.inference_precision else ""
    return f"{choice.backend}-cpu{precision} on {choice.file}"


def engine_candidates(cand: ModelPackage) -> dict[str, list[GraphChoice]]:
    """The per-engine graphs a converted package is gated on besides its main graph, fastest first: ONNX Runtime
    on the CPU graph (int8); OpenVINO on the main graph in bf16 (fp16/int8 on a CPU with bf16; its non-int8 parts
    then run in bf16), else on the CPU graph in f32. Empty for engines that are not installed here."""
    from edge_ad.optional import installed

    main = str(cand.manifest["onnx"]["file"])
    cpu = cand.cpu_onnx_path()
    out: dict[str, list[GraphChoice]] = {}
    if cpu is not None:
        out["onnxruntime"] = [GraphChoice("onnxruntime", cpu.name, None, "")]
    if cand.precision in ("fp16", "int8") and installed("openvino"):
        from edge_ad.runtime.backends.openvino import cpu_bf16_available

        ov: list[GraphChoice] = []
        if cpu_bf16_available():
            ov.append(GraphChoice("openvino", main, "bf16", ""))
        ov.append(GraphChoice("openvino", cpu.name if cpu is not None else main, "f32", ""))
        out["openvino"] = ov
    return out


def run_package(pkg: ModelPackage, samples: Sequence[Any], batch: int = 4, desc: str = "gate",
                progress: bool = True, choice: GraphChoice | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(maps [N,h,w], scores [N]) of the package on the samples, through the runtime's backends: `choice` names an
    engine and graph (None: the main graph on `gate_backend`)."""
    from edge_ad.imageio import read_image
    from edge_ad.runtime.backends.base import Backend

    be: Backend
    if choice is None and gate_backend(pkg) == "openvino":
        choice = GraphChoice("openvino", str(pkg.manifest["onnx"]["file"]), "bf16", "")
    if choice is not None and choice.backend == "openvino":
        from edge_ad.runtime.backends.openvino import OpenVinoBackend

        be = OpenVinoBackend(pkg, cache=False, choice=choice)
    else:
        from edge_ad.runtime.backends.onnxruntime import OnnxRuntimeBackend

        cpu = pkg.cpu_onnx_path()
        graph = "cpu" if choice is not None and cpu is not None and choice.file == cpu.name else "main"
        be = OnnxRuntimeBackend(pkg, providers=["CPUExecutionProvider"], graph=graph)
    geo = pkg.geometry()
    if geo is not None:  # the tiled path, as the runtime runs it
        from edge_ad.evaluate.inference import frame_predictions

        try:
            preds = frame_predictions(geo, pkg.preprocess, samples, lambda crops: be.run(crops)[0][:, 0],
                                      desc=desc, progress=progress)
        finally:
            be.close()
        return preds.maps, preds.scores
    maps, scores = [], []
    try:
        for i in tqdm(range(0, len(samples), batch), desc=desc, disable=not progress, leave=False):
            crops = np.stack([pkg.preprocess.apply(read_image(s.path)) for s in samples[i : i + batch]])
            m, sc = be.run(crops)
            maps.append(m[:, 0])
            scores.append(sc)
    finally:
        be.close()
    if not maps:
        return np.zeros((0, *pkg.map_hw), np.float32), np.zeros(0, np.float32)
    return np.concatenate(maps), np.concatenate(scores)


def _masks(pkg: ModelPackage, samples: Sequence[Any]) -> np.ndarray:
    from edge_ad.data.mvtec import read_mask

    geo = pkg.geometry()
    if geo is not None:
        from edge_ad.evaluate.inference import frame_predictions

        return np.asarray(frame_predictions(geo, pkg.preprocess, samples,
                                            lambda crops: np.zeros((len(crops), *pkg.map_hw), np.float32),
                                            with_masks=True, progress=False).masks)
    h, w = pkg.input_hw
    out = []
    for s in samples:
        m = pkg.preprocess.apply_mask(read_mask(s.mask_path)) if s.mask_path is not None else np.zeros((h, w), np.uint8)
        out.append(_nearest(m, pkg.map_hw))
    return np.stack(out) if out else np.zeros((0, *pkg.map_hw), np.uint8)


def _finite(v: float) -> float | None:
    return float(v) if math.isfinite(v) else None


def evaluate_gate(ref: ModelPackage, cand: ModelPackage, images: GateSet, budget: GateBudget,
                  target_frr: float = 0.01, progress: bool = True) -> dict[str, Any]:
    """Run both packages, compare, and return the JSON-ready report (`passed`, `failures`, per-category rows).

    The candidate's re-derived thresholds are in `report["thresholds"]["converted"]`. Besides its main graph (what
    TensorRT builds), each engine's own choice is gated with the same thresholds, because that is what a station on
    that engine decides with (`engine_candidates`: ONNX Runtime on the int8 CPU graph, OpenVINO in bf16 or f32):
    `report["engines"]` lists every run, `report["choices"]` the graph each engine will run (the manifest's
    `onnx.backends`). An engine's fastest candidate that fails falls back to its next; when none passes, the
    failures refuse the package.
    """
    from edge_ad.evaluate.thresholds import derive_thresholds

    good, test = images.good, images.test

    def run(pkg: ModelPackage, choice: GraphChoice | None = None) -> dict[str, Any]:
        what = "main" if choice is None else _describe(choice)
        gm, gs = run_package(pkg, good, desc=f"gate {pkg.precision} {what} good", progress=progress, choice=choice)
        tm, ts = run_package(pkg, test, desc=f"gate {pkg.precision} {what} test", progress=progress, choice=choice)
        return {"good": (gm, gs), "test": (tm, ts)}

    runs = {"fp32": run(ref), "converted": run(cand)}
    for key in runs:
        gm, gs = runs[key]["good"]
        runs[key]["thresholds"] = derive_thresholds(gs, gm.reshape(len(good), -1).max(axis=1), target_frr=target_frr)
    masks = _masks(ref, test)
    metrics = {k: _test_metrics(r, test, masks) for k, r in runs.items()} if test else {}
    main = _compare(runs["fp32"], runs["converted"], runs["converted"]["thresholds"], metrics, good, test, budget)
    main_backend = "openvino-cpu-bf16" if gate_backend(cand) == "openvino" else "onnxruntime-cpu"
    main_file = str(cand.manifest["onnx"]["file"])
    report: dict[str, Any] = {
        "passed": not main["failures"],
        "failures": main["failures"],
        "budget": asdict(budget),
        "backend": main_backend,
        "precision": cand.precision,
        "images": {"good": images.good_source, "test": len(test)},
        "thresholds": {"fp32": runs["fp32"]["thresholds"], "converted": runs["converted"]["thresholds"]},
        "overall": main["overall"],
        "categories": main["rows"],
    }
    checked_main = f"export gate: {main_backend} on {main_file}"
    choices = default_graph_choices(cand.manifest, checked_main)
    if cand.precision == "bf16":  # ONNX Runtime has no bf16: it computes the graph in fp32, the reference itself
        choices["onnxruntime"] = GraphChoice("onnxruntime", main_file, None, "fp32 computation: the reference")
        choices["openvino"] = GraphChoice("openvino", main_file, "bf16", checked_main)
    elif cand.cpu_onnx_path() is None:  # fp16: no CPU graph; OpenVINO defaults to f32 on the gated main graph
        choices["openvino"] = GraphChoice("openvino", main_file, "f32", checked_main)
    candidates = engine_candidates(cand)
    if "openvino" not in candidates and cand.precision in ("fp16", "int8"):
        c = choices["openvino"]
        choices["openvino"] = GraphChoice("openvino", c.file, "f32",
                                          f"not run on OpenVINO at export (not installed): the graph of "
                                          f"{choices['onnxruntime'].checked}, in f32; check it with "
                                          f"`edge-ad verify --backend openvino`")
    engines: list[dict[str, Any]] = []
    for backend, options in candidates.items():
        for i, choice in enumerate(options):
            r = run(cand, choice)
            em = {"fp32": metrics.get("fp32", {}), "converted": _test_metrics(r, test, masks)} if test else {}
            cmp = _compare(runs["fp32"], r, runs["converted"]["thresholds"], em, good, test, budget)
            label = _describe(choice)
            for f in cmp["failures"]:
                f["message"] = f"{label}: " + f["message"]
            passed = not cmp["failures"]
            engines.append({"backend": backend, "file": choice.file, "inference_precision": choice.inference_precision,
                            "label": label, "overall": cmp["overall"], "categories": cmp["rows"],
                            "failures": cmp["failures"], "chosen": passed})
            if passed:
                choices[backend] = GraphChoice(backend, choice.file, choice.inference_precision,
                                               f"export gate: {label}")
                break
            if i + 1 < len(options):
                log.warning("gate: %s failed the budget (%s); trying %s", label, cmp["failures"][0]["message"],
                            _describe(options[i + 1]))
            else:
                report["failures"] = report["failures"] + cmp["failures"]
    report["engines"] = engines
    report["choices"] = {b: c.to_dict() for b, c in choices.items()}
    report["good_scores"] = [float(x) for x in runs["converted"]["good"][1]]  # the drift reference's scores
    report["passed"] = not report["failures"]
    return report


def _test_metrics(run: dict[str, Any], test: Sequence[Any], masks: np.ndarray) -> dict[str, Any]:
    """Per-category metrics of one run on the labelled test samples."""
    from edge_ad.evaluate.metrics import CategoryPredictions, evaluate_categories

    labels = np.array([s.label for s in test])
    tcats = np.array([s.category for s in test], dtype=object)
    dtypes = np.array([s.defect_type for s in test], dtype=object)
    tm, ts = run["test"]
    per = {c: CategoryPredictions(labels[tcats == c], ts[tcats == c], masks[tcats == c], tm[tcats == c],
                                  list(dtypes[tcats == c])) for c in sorted(set(tcats.tolist()))}
    result: dict[str, Any] = evaluate_categories(per)["categories"]
    return result


def _compare(ref_run: dict[str, Any], cand_run: dict[str, Any], cand_thresholds: dict[str, Any],
             metrics: dict[str, Any], good: Sequence[Any], test: Sequence[Any], budget: GateBudget
             ) -> dict[str, Any]:
    """Per-category rows, the overall row and the budget failures of one candidate run against fp32."""
    samples = list(good) + list(test)
    cats = np.array([s.category for s in samples], dtype=object)
    s32 = np.concatenate([ref_run["good"][1], ref_run["test"][1]])
    sc = np.concatenate([cand_run["good"][1], cand_run["test"][1]])
    agree = (s32 > ref_run["thresholds"]["image"]["value"]) == (sc > cand_thresholds["image"]["value"])
    rows: dict[str, dict[str, Any]] = {}
    for c in sorted(set(cats.tolist())):
        sel = cats == c
        row: dict[str, Any] = {"n": int(sel.sum()), "score_spearman": rank_agreement(s32[sel], sc[sel]),
                               "agreement": float(agree[sel].mean()), "flips": int((~agree[sel]).sum())}
        for m in GATED_METRICS:
            if c in metrics.get("fp32", {}):
                a, b = metrics["fp32"][c][m], metrics["converted"][c][m]
                row[m] = {"fp32": _finite(a), "converted": _finite(b), "drop": _finite(a - b)}
        rows[c] = row
    overall = {"n": len(samples), "score_spearman": rank_agreement(s32, sc), "agreement": float(agree.mean()),
               "flips": int((~agree).sum()), "max_abs_score_diff": float(np.max(np.abs(s32 - sc)))}
    return {"rows": rows, "overall": overall, "failures": _failures(rows, overall, budget)}


def _failures(rows: dict[str, dict[str, Any]], overall: dict[str, Any], budget: GateBudget) -> list[dict[str, Any]]:
    fails: list[dict[str, Any]] = []
    for c, row in rows.items():
        limits = {"image_auroc": budget.max_drop, "pixel_auroc": budget.max_pixel_drop, "aupro": budget.max_pixel_drop}
        for m, limit in limits.items():
            drop = (row.get(m) or {}).get("drop")
            if limit is not None and drop is not None and drop > limit + 1e-12:
                fails.append({"category": c, "metric": m, "value": drop, "limit": limit,
                              "message": f"{c}: {m} dropped by {drop:.4f} (budget {limit:.4f}): "
                                         f"{row[m]['fp32']:.4f} -> {row[m]['converted']:.4f}"})
    if overall["agreement"] < budget.min_agreement:
        worst = max(rows, key=lambda c: rows[c]["flips"])
        fails.append({"category": "all", "metric": "agreement", "value": overall["agreement"],
                      "limit": budget.min_agreement,
                      "message": f"all categories: OK/NG agreement {overall['agreement']:.4f} < {budget.min_agreement} "
                                 f"({overall['flips']} of {overall['n']} decisions flipped, most in {worst!r}: "
                                 f"{rows[worst]['flips']})"})
    if budget.min_spearman is not None and overall["score_spearman"] < budget.min_spearman:
        fails.append(
            {
                "category": "all",
                "metric": "score_spearman",
                "value": overall["score_spearman"],
                "limit": budget.min_spearman,
                "message": f"all categories: score Spearman {overall['score_spearman']:.4f} < {budget.min_spearman}",
            }
        )
    return fails


def format_gate_report(report: dict[str, Any]) -> str:
    """Printable table: one row per category with fp32 -> converted values and deltas, then the verdict."""
    from edge_ad.evaluate.report import format_table

    def cell(row: dict[str, Any], m: str) -> str:
        v = row.get(m)
        if not v or v["fp32"] is None or v["converted"] is None:
            return "-"
        return f"{v['fp32']:.4f}->{v['converted']:.4f} ({-v['drop']:+.4f})"

    failed = {(f["category"], f["metric"]) for f in report["failures"]}
    rows = []
    for c, r in report["categories"].items():
        mark = " FAIL" if any(k[0] == c for k in failed) else ""
        rows.append([c + mark, str(r["n"]), cell(r, "image_auroc"), cell(r, "pixel_auroc"), cell(r, "aupro"),
                     f"{r['score_spearman']:.4f}", f"{r['agreement']:.3f}"])
    o = report["overall"]
    rows.append(["all" + (" FAIL" if any(k[0] == "all" for k in failed) else ""), str(o["n"]), "", "", "",
                 f"{o['score_spearman']:.4f}", f"{o['agreement']:.3f}"])
    table = format_table(rows, ["category", "n", "image AUROC", "pixel AUROC", "AUPRO", "Spearman", "agreement"])
    for eng in report.get("engines", []):
        crows = [[c, str(r["n"]), cell(r, "image_auroc"), f"{r['score_spearman']:.4f}", f"{r['agreement']:.3f}"]
                 for c, r in eng["categories"].items()]
        o = eng["overall"]
        crows.append(["all", str(o["n"]), "", f"{o['score_spearman']:.4f}", f"{o['agreement']:.3f}"])
        state = "chosen" if eng["chosen"] else "FAILED" if eng["failures"] else "not chosen"
        table += (f"\n{eng['label']} (same thresholds; {state}):\n"
                  + format_table(crows, ["category", "n", "image AUROC", "Spearman", "agreement"]))
    if report.get("choices"):
        table += "\nengines run: " + ", ".join(
            f"{b} {c['file']}" + (f" ({c['inference_precision']})" if c.get("inference_precision") else "")
            for b, c in report["choices"].items())
    b = report["budget"]
    verdict = "PASSED" if report["passed"] else "FAILED:\n  " + "\n  ".join(f["message"] for f in report["failures"])
    return (f"accuracy gate, {report['precision']} vs fp32 ({report['backend']}; {report['images']['good']}, "
            f"{report['images']['test']} test images)\n{table}\nbudget: image AUROC drop <= {b['max_drop']}, "
            f"agreement >= {b['min_agreement']}\n{verdict}")
