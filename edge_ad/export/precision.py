"""fp32 package -> fp16, bf16 or int8 package, released only through the accuracy gate.

One package per precision: a strongly-typed FP16 graph (`fp16.py`), an explicit Q/DQ INT8
graph (`int8.py`, calibrated per `calibration/<model>.yaml`), or bf16: the fp32 graph unchanged, declared to run in
bf16 where the engine and the CPU have it (OpenVINO on AVX512-BF16/AMX x86 CPUs; elsewhere it runs as fp32, which
`onnx.variants.fp32` says) and gated in bf16 on OpenVINO. The converted graph is staged in a temporary package,
run against the fp32 package by ONNX Runtime on held-out images (`gate.py`), and written with re-derived
thresholds and the gate report in `export_metrics.gate` only when it passes. On refusal no package is written:
GateError carries the report table and the path of the report JSON (`<out>.gate-report.json`).
"""

from __future__ import annotations

import copy
import datetime as _dt
import hashlib
import json
import logging
import tempfile
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import onnx

from edge_ad.errors import ConfigError, ExportError, GateError
from edge_ad.evaluate import rundir
from edge_ad.export.gate import GateBudget, evaluate_gate, format_gate_report, gate_set
from edge_ad.fileio import atomic_write_json
from edge_ad.runtime.package import ModelPackage, load_package, write_package

log = logging.getLogger(__name__)

PRECISIONS = ("fp16", "bf16", "int8")
SCALES_IN_PACKAGE = "int8_scales.json"
#: int8 packages: the same quantisation between FP32 ops, for CPU runtimes (manifest onnx.cpu)
CPU_GRAPH = "model_cpu.onnx"


def _require_bf16_cpu() -> None:
    """bf16 is gated where it runs: OpenVINO on a CPU with native bf16; ConfigError naming what is missing."""
    from edge_ad.optional import require

    ov = require("openvino", "precision bf16 (gated on OpenVINO)")
    from edge_ad.runtime.backends.openvino import cpu_has_bf16

    if not cpu_has_bf16(ov.Core()):
        raise ConfigError("precision bf16: this CPU has no native bf16 (AVX512-BF16 or AMX), so the gate cannot run "
                          "the package the way a bf16 line PC will; export it on such a CPU, or use int8/fp16")


def _opset(model: onnx.ModelProto) -> int:
    return next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))


def _check_tensorrt_rules(model: onnx.ModelProto, what: str, pkg: ModelPackage) -> None:
    """ExportError listing every TensorRT parser rule `model` breaks (graph_check), at the batch `pkg`'s engine is
    built for (one per view of its geometry)."""
    from edge_ad.export.graph_check import check_graph, format_problems

    geometry = pkg.geometry()
    problems = check_graph(model, batch=geometry.max_views() if geometry is not None else 1)
    if problems:
        raise ExportError(f"{what} breaks TensorRT's rules; no package written:\n  " + format_problems(problems))


def default_scales_path(pkg: ModelPackage, method: str) -> Path:
    """calibration/<package-name>.<method>.scales.json (relative to the working directory)."""
    return Path("calibration") / f"{pkg.root.name}.{method}.scales.json"


def _holdout(pkg: ModelPackage) -> list[str]:
    run = (pkg.manifest.get("training") or {}).get("run")
    return rundir.holdout(Path(run)) if run and (Path(run) / rundir.VAL_SPLIT).is_file() else []


def _convert_int8(
    pkg: ModelPackage,
    model: onnx.ModelProto,
    data: str | None,
    fallback_root: str,
    calib: str | Path | None,
    method: str | None,
    exclude: Sequence[str] | None,
    scales: str | Path | None,
    scales_out: str | Path | None,
    progress: bool,
) -> tuple[onnx.ModelProto, onnx.ModelProto, dict[str, Any], Path]:
    """(TensorRT graph, CPU graph, conversion info, scales file) of the int8 conversion."""
    from edge_ad.export.calibration import (
        image_batches,
        load_calibration_config,
        select_images,
        validate_config,
    )
    from edge_ad.export.int8 import (
        calibrate_scales,
        check_scales,
        cpu_graph,
        load_scales,
        tensorrt_graph,
    )

    cfg = load_calibration_config(pkg.name, calib)
    if method is not None or exclude is not None:  # CLI overrides, validated like the YAML
        raw = {k: v for k, v in cfg.to_dict().items() if k != "source"}
        raw.update({k: v for k, v in (("method", method), ("exclude", None if exclude is None else list(exclude)))
                    if v is not None})
        cfg = validate_config(raw, f"{cfg.source} (with overrides)", pkg.name)
    info: dict[str, Any] = {"manifest": cfg.to_dict()}
    if scales is not None:
        doc = load_scales(scales)
        check_scales(model, doc, str(scales))
        path = Path(scales)
        info["reused_scales"] = True
    else:
        root = data or cfg.data_root or fallback_root  # --data > manifest data_root > the package's dataset
        paths = select_images(cfg, root, exclude_paths=_holdout(pkg))
        doc = calibrate_scales(model, image_batches(paths, pkg.preprocess, progress=progress, geometry=pkg.geometry()),
                               input_name=pkg.input_name, method=cfg.method, percentile=cfg.percentile,
                               exclude=cfg.exclude, activation_gemms=cfg.activation_gemms)
        doc["calibration"] = {"manifest": cfg.to_dict(), "data_root": str(root), "n_images": len(paths),
                              "images_sha256": hashlib.sha256("\n".join(map(str, paths)).encode()).hexdigest()}
        path = Path(scales_out) if scales_out else default_scales_path(pkg, cfg.method)
        atomic_write_json(path, doc)
        log.info("int8: wrote the scales of %d quantised nodes to %s", len(doc["nodes"]), path)
        info["reused_scales"] = False
        info["n_images"] = len(paths)
    qmodel = tensorrt_graph(model, doc, fp16_policy(pkg.name))
    info.update({"scales_file": str(path), "method": doc["method"], "quantized_nodes": len(doc["nodes"])})
    return qmodel, cpu_graph(model, doc), info, path


def fp16_policy(model_name: str) -> Any:
    """The fp16 policy of a model: the defaults plus its export profile's `fp16` section (extra node-name regexes
    kept in fp32, e.g. a memory read; the decoder pattern that delimits the head)."""
    from edge_ad.export.fp16 import Fp16Policy
    from edge_ad.export.profile import load_profile

    section = load_profile(model_name).get("fp16") or {}
    kw: dict[str, Any] = {}
    if section.get("keep_fp32"):
        kw["keep_name_patterns"] = tuple(str(x) for x in section["keep_fp32"])
    if section.get("decoder_pattern"):
        kw["decoder_pattern"] = str(section["decoder_pattern"])
    return Fp16Policy(**kw)


def convert_package(
    fp32_pkg: str | Path,
    precision: str,
    out_dir: str | Path,
    *,
    calib: str | Path | None = None,
    data: str | Path | None = None,
    max_drop: float = 0.005,
    min_agreement: float = 0.99,
    max_pixel_drop: float | None = None,
    method: str | None = None,
    exclude: Sequence[str] | None = None,
    scales: str | Path | None = None,
    scales_out: str | Path | None = None,
    force: bool = False,
    progress: bool = True,
) -> tuple[Path, dict[str, Any]]:
    """Convert an fp32 package to `precision` ("fp16" | "bf16" | "int8") and write it to `out_dir` if the gate
    passes (bf16 is gated on OpenVINO and needs a CPU with bf16).

    int8 only: `calib` is the calibration manifest (default calibration/<model>.yaml), `method`/`exclude` override
    it, `scales` is an existing scales JSON (skips calibration), `scales_out` where new scales are written.
    `data` overrides the dataset root recorded in the fp32 manifest (gate images, calibration images).
    Returns (package path, report) where report["gate"] is the gate report.
    """
    t0 = time.perf_counter()
    if precision not in PRECISIONS:
        raise ConfigError(f"precision: expected one of {list(PRECISIONS)}, got {precision!r}")
    budget = GateBudget(max_drop=max_drop, min_agreement=min_agreement, max_pixel_drop=max_pixel_drop)
    if precision != "int8" and any(v is not None for v in (calib, method, exclude, scales, scales_out)):
        raise ConfigError(f"calib/method/exclude/scales apply to int8 only, not to {precision}")
    if precision == "bf16":
        _require_bf16_cpu()
    pkg = load_package(fp32_pkg)
    if pkg.precision != "fp32":
        raise ConfigError(f"{pkg.root}: precision: expected an fp32 package to convert, got {pkg.precision!r}")
    out = Path(out_dir)
    if out.exists() and not force:
        raise ConfigError(f"{out}: already exists; choose another directory or pass force=True (--force)")
    data_root = str(data) if data is not None else (pkg.manifest.get("training") or {}).get("data_root")
    if data_root is None or not Path(data_root).is_dir():
        raise ConfigError(f"{pkg.root}: training.data_root: the gate needs the dataset, got {data_root!r}; pass --data")
    images = gate_set(pkg, data_root)

    model = onnx.load(str(pkg.onnx_path()))
    files: dict[str, Any] = {}
    cpu: onnx.ModelProto | None = None
    if precision == "fp16":
        from edge_ad.export.fp16 import convert_to_fp16

        converted, conv_info = convert_to_fp16(model, fp16_policy(pkg.name))
    elif precision == "bf16":  # the same graph; the engine runs it in bf16
        converted, conv_info = model, {"graph": "the fp32 graph, executed in bf16 by OpenVINO"}
    else:
        converted, cpu, conv_info, scales_path = _convert_int8(
            pkg, model, None if data is None else str(data), data_root, calib, method, exclude, scales, scales_out,
            progress)
        files[SCALES_IN_PACKAGE] = scales_path
        conv_info["scales_in_package"] = SCALES_IN_PACKAGE
    # constants a model normalises with (e.g. ULSAD's map quantiles) are re-measured on each converted graph
    from edge_ad.export.constants import rederive_package_constants
    from edge_ad.export.gemm_share import format_gemm_share, gemm_precision

    if precision == "bf16":  # constants measured through ONNX Runtime would be fp32 ones: keep the package's
        new_constants, conv_info["constants"] = copy.deepcopy(pkg.manifest.get("constants") or {}), {}
    else:
        converted, new_constants, conv_info["constants"] = rederive_package_constants(converted, pkg, images.good)
    _check_tensorrt_rules(converted, f"{out}: the {precision} graph", pkg)
    islands = fp16_policy(pkg.manifest["model"]["name"]).keep_name_patterns  # required FP32, counted apart
    gemms = gemm_precision(converted, islands)
    log.info("%s: %s", precision, format_gemm_share(gemms))
    onnx_bytes = converted.SerializeToString()
    files["model.onnx"] = onnx_bytes

    manifest = copy.deepcopy(pkg.manifest)
    for rel in manifest.get("files", {}):  # the geometry's references and ROIs go along unchanged
        if rel.startswith("geometry/"):
            files[rel] = pkg.root / rel
    manifest["precision"] = precision
    manifest["constants"] = new_constants
    manifest["created"] = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    keep = {k: v for k, v in manifest["onnx"].items() if k not in ("variants", "nodes", "gemm_precision", "cpu")}
    manifest["onnx"] = {**keep, "file": "model.onnx", "opset": _opset(converted), "nodes": len(converted.graph.node),
                        "gemm_precision": gemms}
    if precision == "bf16":  # engines without bf16 run the same file exactly as fp32
        manifest["onnx"]["variants"] = {"fp32": "model.onnx"}
    if cpu is not None:
        cpu, cpu_constants, conv_info["cpu_constants"] = rederive_package_constants(cpu, pkg, images.good)
        _check_tensorrt_rules(cpu, f"{out}: the {precision} CPU graph", pkg)
        files[CPU_GRAPH] = cpu.SerializeToString()
        manifest["onnx"]["cpu"] = {"file": CPU_GRAPH, "opset": _opset(cpu), "nodes": len(cpu.graph.node),
                                   "gemm_precision": gemm_precision(cpu, islands), "constants": cpu_constants}
    manifest.pop("engines", None)
    target_frr = float(pkg.thresholds["image"].get("target_frr", 0.01))
    with tempfile.TemporaryDirectory(prefix=".edge-ad-gate-") as tmp:
        staged = load_package(write_package(Path(tmp) / "candidate", files, manifest))
        report = evaluate_gate(pkg, staged, images, budget, target_frr=target_frr, progress=progress)
    text = format_gate_report(report)
    if not report["passed"]:
        rpath = out.with_name(out.name + ".gate-report.json")
        rpath.parent.mkdir(parents=True, exist_ok=True)
        rpath.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        knobs = ("--max-drop / --min-agreement (the budget), --exclude NODE-PATTERN (keep the failing layers in "
                 "float), --method percentile|entropy|minmax, or more calibration images (calibration/<model>.yaml)"
                 if precision == "int8" else "--max-drop / --min-agreement (the budget), or keep the model in fp32")
        raise GateError(f"{out}: {precision} conversion refused by the accuracy gate; no package written "
                        f"(report: {rpath})\n{text}\nTo trade accuracy for speed, adjust: {knobs}")
    good_scores = report.pop("good_scores", None)
    thresholds = report["thresholds"]["converted"]
    thresholds["source"] = {"note": f"re-derived for the {precision} graph by ONNX Runtime on "
                                    f"{report['images']['good']}"}
    manifest["thresholds"] = thresholds
    manifest["onnx"]["backends"] = report["choices"]  # each engine's graph, as the gate ran it
    if manifest.get("drift") is not None and good_scores:  # the drift reference's scores: this graph's
        from edge_ad.export.drift_reference import normalized_scores
        from edge_ad.runtime.drift import reference_values

        th = {**pkg.thresholds, **{k: thresholds[k] for k in ("image", "normalization")}}
        manifest["drift"]["score"] = reference_values(normalized_scores(
            replace(pkg, thresholds=th), good_scores))
        manifest["drift"]["source"] += f"; scores re-measured on the {precision} graph ({report['backend']})"
    manifest["export_metrics"] = {
        "gate": report,
        "conversion": {
            "from": str(pkg.root),
            "from_onnx_sha256": pkg.manifest["files"][pkg.manifest["onnx"]["file"]]["sha256"],
            **conv_info,
        },
    }
    path = write_package(out, files, manifest, overwrite=force)
    log.info("%s", text)
    summary = {"package": str(path), "precision": precision, "gate": report, "table": text, "gemm_precision": gemms,
               "conversion": manifest["export_metrics"]["conversion"], "onnx_mb": len(onnx_bytes) / 2**20,
               "seconds": time.perf_counter() - t0}
    return path, summary
