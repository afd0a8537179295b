"""`edge-ad export` as a library call: run/checkpoint -> verified ONNX -> model package directory."""

from __future__ import annotations

import datetime as _dt
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from edge_ad import __version__
from edge_ad.errors import ConfigError, ExportError
from edge_ad.evaluate import rundir
from edge_ad.export.gemm_share import gemm_precision
from edge_ad.export.graph_check import check_graph, format_problems, op_histogram
from edge_ad.export.onnx_export import PackagedModel, check_parity, export_onnx
from edge_ad.export.profile import load_profile
from edge_ad.fileio import read_json_file
from edge_ad.models.base import AnomalyModel
from edge_ad.models.registry import create_model, model_info

log = logging.getLogger(__name__)


def _params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def load_for_export(name: str | None, run: str | None, checkpoint: str | None, profile_path: str | None
                    ) -> tuple[AnomalyModel, dict[str, Any], dict[str, Any] | None, dict[str, Any], dict[str, Any]]:
    """(model, profile, thresholds or None, run config or {}, run info or {}) for the requested source."""
    if run:
        model, cfg, thresholds = rundir.load_run(run)
        if name and name != cfg["model"]:
            raise ConfigError(f"{run}: the run holds model {cfg['model']!r}, not --model {name!r}")
        info_p = Path(run) / rundir.RUN_INFO
        info = read_json_file(info_p, "run info") if info_p.is_file() else {}
        return model, load_profile(cfg["model"], profile_path), thresholds, cfg, info
    if not name:
        raise ConfigError("export: --model is required unless --run is given")
    try:
        model_info(name)
    except KeyError as e:
        raise ConfigError(str(e.args[0])) from e
    profile = load_profile(name, profile_path)
    kw = dict(profile.get("model_kwargs") or {})
    for k in ("resize", "crop"):
        if profile.get(k):
            kw[k] = int(profile[k])
    if checkpoint:
        model = create_model(name, pretrained=False, state_dict_follows=True, **kw)  # the checkpoint holds the encoder
        rundir.load_weights(model, Path(checkpoint))
        thr_p = Path(checkpoint).parent / rundir.THRESHOLDS
        thresholds = read_json_file(thr_p, "thresholds") if thr_p.is_file() else None
        model.encoder_weights = "checkpoint"
        return model.eval(), profile, thresholds, {}, {}
    log.warning("exporting %s with UNTRAINED weights (random-init encoder and decoder): for measuring speed only; "
                "its scores mean nothing. Pass --run to export a trained model.", name)
    model = create_model(name, pretrained=False, **kw)
    return model.eval(), profile, None, {}, {}


def validation_images(model: AnomalyModel, cfg: dict[str, Any], run: str | None, data: str | None, n: int, seed: int = 0
                      ) -> tuple[np.ndarray, str]:
    """uint8 crops for parity: held-out good + test images of the dataset, or seeded synthetic images."""
    from edge_ad.data.mvtec import load_samples
    from edge_ad.imageio import read_image

    paths: list[Path] = []
    root = data or cfg.get("data")
    if run and (Path(run) / rundir.VAL_SPLIT).is_file():
        paths += [Path(p) for p in rundir.holdout(Path(run))][: n // 2]
    if root and Path(root).is_dir():
        test = load_samples(root, cfg.get("categories"), split="test")
        rng = np.random.default_rng(seed)
        if test:
            pick = rng.choice(len(test), size=min(n - len(paths), len(test)), replace=False)
            paths += [test[i].path for i in sorted(pick)]
    pre = model.preprocess
    if paths:
        imgs = np.stack([pre.apply(read_image(p)) for p in paths[:n]])
        return imgs, f"{len(imgs)} dataset images"
    rng = np.random.default_rng(seed)
    h, w = pre.crop
    base = rng.integers(0, 256, size=(n, 1, 1, 3))
    xx = np.mgrid[0:h, 0:w][1]
    imgs = np.clip(base + 40 * np.sin(xx / (3 + np.arange(n)[:, None, None]))[..., None]
                   + rng.normal(0, 12, size=(n, h, w, 3)), 0, 255).astype(np.uint8)
    return imgs, f"{n} synthetic images (no dataset given)"


def _untrained_thresholds(model: AnomalyModel, images: np.ndarray, target_frr: float) -> dict[str, Any]:
    from edge_ad.evaluate.thresholds import derive_thresholds

    with torch.no_grad():
        maps, scores = PackagedModel(model, model.preprocess).eval()(torch.from_numpy(images))
    thr = derive_thresholds(scores.numpy(), maps.reshape(len(images), -1).max(1).values.numpy(), target_frr=target_frr)
    thr["source"] = {"note": "UNTRAINED export: thresholds derived from the export's validation images; meaningless"}
    return thr


def export_package(
    *,
    model_name: str | None = None,
    run: str | None = None,
    checkpoint: str | None = None,
    out: str | Path | None = None,
    data: str | None = None,
    profile_path: str | None = None,
    force: bool = False,
) -> tuple[Path, dict[str, Any]]:
    """Export, check the graph for TensorRT, verify against PyTorch and write the package; returns (path, summary)."""
    from edge_ad.runtime.package import GRAPH_BACKENDS, write_package

    t0 = time.perf_counter()
    model, profile, thresholds, cfg, info = load_for_export(model_name, run, checkpoint, profile_path)
    name = model.name
    untrained = run is None and checkpoint is None
    out_dir = Path(out) if out else Path("packages") / (name + ("-untrained" if untrained else ""))

    proto = export_onnx(model, opset=int(profile["opset"]), dynamic_batch=bool(profile["dynamic_batch"]),
                        input_name=profile["input"]["name"])
    problems = check_graph(proto, batch=model.geometry.max_views() if model.geometry is not None else 1)
    if problems:
        raise ExportError("exported graph breaks TensorRT's rules; no package written:\n  " + format_problems(problems))
    onnx_bytes = proto.SerializeToString()

    par_cfg = profile["parity"]
    images, images_desc = validation_images(model, cfg, run, data, int(par_cfg["n_images"]))
    parity = check_parity(model, onnx_bytes, images)
    ok = parity.max_abs_map_diff <= float(par_cfg["max_abs_map_diff"]) and (
        parity.score_spearman >= float(par_cfg["min_score_spearman"]))
    if not ok:
        raise ExportError(
            f"ONNX Runtime disagrees with PyTorch on {images_desc}: max |map diff| {parity.max_abs_map_diff:.3g} "
            f"(limit {par_cfg['max_abs_map_diff']}), score Spearman {parity.score_spearman:.5f} "
            f"(limit {par_cfg['min_score_spearman']}); no package written")
    if thresholds is None:
        if not untrained:
            raise ConfigError(f"{checkpoint}: no thresholds.json beside the checkpoint; export from the run with --run")
        thresholds = _untrained_thresholds(model, images, 0.01)

    pre = model.preprocess
    hist = op_histogram(proto)
    manifest: dict[str, Any] = {
        "schema_version": 2,
        "edge_ad_version": __version__,
        "created": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "model": {
            "name": name,
            "family": model_info(name).family,
            "paper": model_info(name).paper,
            "untrained": untrained,
            "encoder_weights": str(getattr(model, "encoder_weights", info.get("encoder_weights", "unknown"))),
            "params_total": _params(model),
        },
        "categories": list(info.get("categories") or cfg.get("categories") or []),
        "precision": "fp32",
        "onnx": {"file": "model.onnx", "opset": int(profile["opset"]), "nodes": hist["nodes"],
                 "gemm_precision": gemm_precision(proto),
                 "backends": {b: {"file": "model.onnx", "checked": "the fp32 reference itself (nothing to gate)",
                                  **({"inference_precision": "f32"} if b == "openvino" else {})}
                              for b in GRAPH_BACKENDS}},
        "input": {
            "name": profile["input"]["name"], "dtype": "uint8", "layout": "NHWC",
            "height": pre.crop[0], "width": pre.crop[1], "batch": "dynamic" if profile["dynamic_batch"] else 1,
            "preprocess": pre.to_dict(),
        },
        "outputs": {
            "anomaly_map": {"height": parity.map_hw[0], "width": parity.map_hw[1], "dtype": "float32"},
            "score": {"dtype": "float32"},
        },
        "postprocess": dict(profile["postprocess"]),
        "thresholds": thresholds,
        "constants": model.package_constants(),
        "export_metrics": {**parity.as_dict(), "images": images_desc},
        "training": {
            "run": str(run) if run else None,
            "data_root": cfg.get("data"),
            "data_fingerprint": info.get("data_fingerprint"),
            "iters": cfg.get("iters"),
            "profile": profile["source"],
        },
    }
    files: dict[str, Any] = {"model.onnx": onnx_bytes}
    if model.geometry is not None:
        manifest["geometry"] = model.geometry.to_dict()
        files.update(model.geometry.files())
    pkg = write_package(out_dir, files, manifest, overwrite=force)
    data_root = cfg.get("data")
    if not untrained and data_root and Path(data_root).is_dir():  # the station's drift reference, on this graph
        from edge_ad.export.drift_reference import drift_reference
        from edge_ad.runtime.package import load_package

        written = load_package(pkg)
        drift = drift_reference(written, data_root, run)
        if drift is not None:
            manifest["drift"] = drift
            pkg = write_package(out_dir, {name: pkg / name for name in written.manifest["files"]}, manifest,
                                overwrite=True)
    summary = {
        "package": str(pkg), "model": name, "precision": "fp32", "untrained": untrained,
        "onnx_mb": len(onnx_bytes) / 2**20, "opset": int(profile["opset"]), "nodes": hist["nodes"],
        "input": f"image uint8 [B,{pre.crop[0]},{pre.crop[1]},3] {pre.color_order}",
        "outputs": f"anomaly_map [B,1,{parity.map_hw[0]},{parity.map_hw[1]}], score [B]",
        "parity": parity.as_dict(), "seconds": time.perf_counter() - t0,
    }
    return pkg, summary
