"""edge-ad's inference paths next to its peers, in one process, interleaved, on the same input and package.

    python benchmarks/peers.py --package packages/dinomaly-s --int8 packages/dinomaly-s-int8 --threads 2 \
        --runs 6 --tiles 1,4,12 --json peers.json

Paths (each skipped with a note when its library is missing): edge-ad ONNX Runtime fp32 / int8 (its manifest graph),
edge-ad OpenVINO f32 / bf16 / int8 (the graph and precision the manifest's `onnx.backends.openvino` names), raw
OpenVINO on the same package files (what a user without edge-ad would run: each graph file of the package with
OpenVINO's own defaults, which are bf16 on AMX CPUs, and the fp32 graph with an explicit f32 hint), edge-ad's `auto`
choice, PyTorch eager of the same model, and anomalib's Dinomaly eager when anomalib is installed.
Inference only, on preprocessed crops; the median of `--runs` interleaved rounds (each round runs every path once,
in a new order, after a pause: drifting clocks, a busy neighbour or a still-spinning thread pool affect all paths
alike). Untrained weights are fine: latency does not depend
on the weight values. Without --package an untrained fp32 package of --model is exported first.

Then, per precision, edge-ad's best CPU path against the best raw OpenVINO path on the same files; and with
--tiles, the frame of N tiles (one call of N crops) through edge-ad's OpenVINO (LATENCY: one stream; THROUGHPUT:
the batch split over streams), ONNX Runtime, and raw OpenVINO on the same graph at the same batch, per tile.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np


def _bf16_copy(fp32: Path, out: Path) -> Path:
    """The fp32 package re-declared as bf16 (same graph; for speed measurement only, no gate)."""
    from edge_ad.runtime.package import load_package, write_package

    pkg = load_package(fp32)
    man = json.loads((pkg.root / "manifest.json").read_text())
    man["precision"] = "bf16"
    man["onnx"]["variants"] = {"fp32": man["onnx"]["file"]}
    man["onnx"]["backends"] = {"openvino": {"file": man["onnx"]["file"], "inference_precision": "bf16",
                                            "checked": "none: a speed-only copy (benchmarks/peers.py)"}}
    return write_package(out, {man["onnx"]["file"]: pkg.onnx_path()}, man)


def _crops(pkg: Any, n: int) -> np.ndarray:
    rng = np.random.default_rng(0)
    return np.stack([pkg.preprocess.apply(rng.integers(0, 256, (1080, 1440, 3), dtype=np.uint8)) for _ in range(n)])


def _raw_openvino(graph: Path, input_name: str, x: np.ndarray, threads: int, hint: str | None) -> Callable[[], Any]:
    """OpenVINO as a user would call it on a package file: its defaults, the batch fixed to x's, LATENCY hint."""
    import openvino as ov

    core = ov.Core()
    model = core.read_model(str(graph))
    model.reshape({input_name: list(x.shape)})
    cfg: dict[str, Any] = {"INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY"}
    if hint:
        cfg["INFERENCE_PRECISION_HINT"] = hint
    req = core.compile_model(model, "CPU", cfg).create_infer_request()
    return lambda: req.infer({input_name: x})


def _paths(args: argparse.Namespace, fp32: Path, bf16: Path | None) -> dict[str, Callable[[], Any] | str]:
    """name -> a zero-argument callable running one inference, or a string saying why the path is skipped."""
    from edge_ad.runtime.backends import create_backend
    from edge_ad.runtime.package import load_package

    pkg = load_package(fp32)
    crop = _crops(pkg, 1)
    t = args.threads
    out: dict[str, Callable[[], Any] | str] = {}

    def backend(p: Path, name: str) -> Callable[[], Any]:
        be = create_backend(load_package(p), name, threads=t)
        return lambda: be.run(crop)

    out["edge-ad ONNX Runtime fp32"] = backend(fp32, "onnxruntime")
    int8 = Path(args.int8) if args.int8 else None
    out["edge-ad ONNX Runtime int8"] = backend(int8, "onnxruntime") if int8 else "no --int8 package"
    try:
        import openvino  # noqa: F401
    except ImportError:
        for k in ("edge-ad OpenVINO f32", "edge-ad OpenVINO bf16", "edge-ad OpenVINO int8",
                  "OpenVINO raw f32 (fp32 model.onnx)", "OpenVINO raw defaults (fp32 model.onnx)",
                  "OpenVINO raw defaults (int8 model.onnx)", "OpenVINO raw defaults (int8 model_cpu.onnx)"):
            out[k] = "openvino not installed"
    else:
        out["edge-ad OpenVINO f32"] = backend(fp32, "openvino")
        out["edge-ad OpenVINO bf16"] = backend(bf16, "openvino") if bf16 else "this CPU has no native bf16"
        out["edge-ad OpenVINO int8"] = backend(int8, "openvino") if int8 else "no --int8 package"
        out["OpenVINO raw f32 (fp32 model.onnx)"] = _raw_openvino(pkg.onnx_path(), pkg.input_name, crop, t, "f32")
        out["OpenVINO raw defaults (fp32 model.onnx)"] = _raw_openvino(pkg.onnx_path(), pkg.input_name, crop, t, None)
        for graph in ("model.onnx", "model_cpu.onnx"):
            if int8 and (int8 / graph).is_file():
                out[f"OpenVINO raw defaults (int8 {graph})"] = _raw_openvino(int8 / graph, pkg.input_name, crop, t,
                                                                             None)
            else:
                out[f"OpenVINO raw defaults (int8 {graph})"] = "no --int8 package"
    from edge_ad.runtime import Detector

    for candidate in (fp32, bf16, int8):  # what `backend: auto` picks for each package of the model
        if candidate:
            auto = Detector.load(candidate, threads=t)
            label = f"edge-ad auto, {load_package(candidate).precision} package ({auto.backend.name})"
            out[label] = lambda a=auto: a.backend.run(crop)
    try:
        import torch

        from edge_ad.export.onnx_export import PackagedModel
        from edge_ad.models.registry import create_model

        torch.set_num_threads(t)
        model = create_model(args.model, pretrained=False, state_dict_follows=True).eval()
        wrapped = PackagedModel(model, model.preprocess).eval()
        x = torch.from_numpy(crop)

        def eager() -> Any:
            with torch.inference_mode():
                return wrapped(x)

        out["PyTorch eager (edge-ad model)"] = eager
    except ImportError:
        out["PyTorch eager (edge-ad model)"] = "torch not installed"
    out["anomalib Dinomaly eager"] = _anomalib(args, crop) if args.model.startswith("dinomaly") else "not Dinomaly"
    return out


#: per precision: (edge-ad paths, raw OpenVINO paths on the same package files)
PRECISION_ROWS = {
    "fp32": (("edge-ad ONNX Runtime fp32", "edge-ad OpenVINO f32", "edge-ad auto, fp32 package (openvino)"),
             ("OpenVINO raw f32 (fp32 model.onnx)",)),
    "bf16": (("edge-ad OpenVINO bf16", "edge-ad auto, bf16 package (openvino)"),
             ("OpenVINO raw defaults (fp32 model.onnx)",)),
    "int8": (("edge-ad ONNX Runtime int8", "edge-ad OpenVINO int8", "edge-ad auto, int8 package (openvino)"),
             ("OpenVINO raw defaults (int8 model.onnx)", "OpenVINO raw defaults (int8 model_cpu.onnx)")),
}


def _tile_paths(args: argparse.Namespace, pkg_path: Path, n: int) -> dict[str, Callable[[], Any] | str]:
    """A frame of n tiles through edge-ad's backends and raw OpenVINO on the same graph, one call each."""
    from edge_ad.runtime.backends import create_backend
    from edge_ad.runtime.package import load_package

    pkg = load_package(pkg_path)
    x = _crops(pkg, n)
    t = args.threads
    out: dict[str, Callable[[], Any] | str] = {}

    def backend(name: str, **kw: Any) -> Callable[[], Any]:
        be = create_backend(pkg, name, threads=t, **kw)
        return lambda: be.run(x)

    out["edge-ad ONNX Runtime"] = backend("onnxruntime")
    try:
        import openvino  # noqa: F401
    except ImportError:
        return {**out, "edge-ad OpenVINO latency": "openvino not installed"}
    out["edge-ad OpenVINO latency"] = backend("openvino", hint="latency")
    out["edge-ad OpenVINO throughput"] = backend("openvino", hint="throughput")
    choice = pkg.graph_for("openvino")
    out[f"OpenVINO raw defaults ({choice.file})"] = _raw_openvino(pkg.root / choice.file, pkg.input_name, x, t, None)
    return out


def _interleaved(paths: dict[str, Callable[[], Any] | str], runs: int, warmup: int,
                 pause_s: float = 0.2) -> dict[str, float]:
    """Median ms of each callable path over `runs` interleaved rounds after `warmup` rounds. Each round runs the
    paths in a new (seeded) order with a pause before each call: a thread pool still spinning after its own call
    (ONNX Runtime's, OpenVINO's) would otherwise slow whichever path always follows it."""
    live = {k: v for k, v in paths.items() if callable(v)}
    times: dict[str, list[float]] = {k: [] for k in live}
    rng = np.random.default_rng(0)
    for r in range(warmup + runs):
        for i in rng.permutation(len(live)):
            name, fn = list(live.items())[i]
            time.sleep(pause_s)
            t0 = time.perf_counter()
            fn()
            if r >= warmup:
                times[name].append((time.perf_counter() - t0) * 1e3)
    return {k: float(np.median(v)) for k, v in times.items()}


def _anomalib(args: argparse.Namespace, crop: np.ndarray) -> Callable[[], Any] | str:
    try:
        import torch
        from anomalib.models import Dinomaly
    except ImportError:
        return "anomalib not installed"
    size = {"dinomaly-s": "dinov2reg_vit_small_14", "dinomaly-b": "dinov2reg_vit_base_14",
            "dinomaly-l": "dinov2reg_vit_large_14"}.get(args.model)
    if size is None:
        return f"no anomalib counterpart of {args.model}"
    try:
        model = Dinomaly(encoder_name=size).model.eval()
    except Exception as e:  # anomalib downloads its encoder: offline machines cannot build it
        return f"anomalib could not build its model ({type(e).__name__}: {str(e)[:80]})"
    x = torch.from_numpy(crop).permute(0, 3, 1, 2).float() / 255.0

    def run() -> Any:
        with torch.inference_mode():
            return model(x)

    return run


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="dinomaly-s")
    ap.add_argument("--package", help="fp32 package (default: export an untrained one of --model)")
    ap.add_argument("--int8", help="int8 package of the same model (edge-ad export --precision int8)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--runs", type=int, default=6)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--tiles", default="", help="tile counts of the frame rows, e.g. 1,4,12 (default: none)")
    ap.add_argument("--json", dest="json_out")
    args = ap.parse_args()
    tiles = [int(v) for v in args.tiles.split(",") if v.strip()]
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        if args.package:
            fp32 = Path(args.package)
        else:
            from edge_ad.export.exporter import export_package

            fp32, _ = export_package(model_name=args.model, out=tmp / "fp32")
        bf16 = None
        try:
            import openvino as ov

            from edge_ad.runtime.backends.openvino import cpu_has_bf16

            bf16 = _bf16_copy(fp32, tmp / "bf16") if cpu_has_bf16(ov.Core()) else None
        except ImportError:
            pass
        paths = _paths(args, fp32, bf16)
        ms = _interleaved(paths, args.runs, args.warmup)
        frame_pkg = Path(args.int8) if args.int8 else fp32
        tile_rows: list[dict[str, Any]] = []
        for n in tiles:
            tpaths = _tile_paths(args, frame_pkg, n)
            tms = _interleaved(tpaths, args.runs, args.warmup)
            for name, v in tpaths.items():
                tile_rows.append({"tiles": n, "path": name, "ms": round(tms[name], 1), "ms_per_tile": round(
                    tms[name] / n, 1)} if callable(v) else {"tiles": n, "path": name, "skipped": v})
    base = ms["edge-ad ONNX Runtime fp32"]
    rows = []
    print(f"{args.model}, batch 1, {args.threads} thread(s), median of {args.runs} interleaved runs")
    print(f"{'path':48s} {'ms':>9s} {'vs ORT fp32':>12s}")
    for name, v in paths.items():
        if callable(v):
            rows.append({"path": name, "ms": round(ms[name], 1), "speedup": round(base / ms[name], 2)})
            print(f"{name:48s} {ms[name]:9.1f} {base / ms[name]:11.2f}x")
        else:
            rows.append({"path": name, "skipped": v})
            print(f"{name:48s} {'-':>9s} {'':>12s}  ({v})")
    best: list[dict[str, Any]] = []
    print("\nbest CPU path per precision: edge-ad vs raw OpenVINO on the same package files")
    for precision, (ours, raw) in PRECISION_ROWS.items():
        o = {k: ms[k] for k in ours if k in ms}
        r = {k: ms[k] for k in raw if k in ms}
        if not o or not r:
            continue
        ko, kr = min(o, key=o.__getitem__), min(r, key=r.__getitem__)
        best.append({"precision": precision, "edge_ad": ko, "edge_ad_ms": round(o[ko], 1), "raw": kr,
                     "raw_ms": round(r[kr], 1), "ratio": round(r[kr] / o[ko], 3)})
        print(f"{precision:5s} edge-ad {o[ko]:7.1f} ms ({ko}) | raw {r[kr]:7.1f} ms ({kr}) | "
              f"edge-ad speed / raw {r[kr] / o[ko]:.3f}")
    if tile_rows:
        print(f"\nframes of N tiles ({load_precision(frame_pkg)} package), one call per frame")
        print(f"{'tiles':>5s} {'path':48s} {'ms/frame':>9s} {'ms/tile':>8s}")
        for row in tile_rows:
            if "ms" in row:
                print(f"{row['tiles']:5d} {row['path']:48s} {row['ms']:9.1f} {row['ms_per_tile']:8.1f}")
            else:
                print(f"{row['tiles']:5d} {row['path']:48s} {'-':>9s} {'':>8s}  ({row['skipped']})")
    if args.json_out:
        info = {"model": args.model, "threads": args.threads, "runs": args.runs, "cpu": platform.processor(),
                "machine": platform.machine(), "cpus": os.cpu_count()}
        Path(args.json_out).write_text(json.dumps({"info": info, "rows": rows, "best": best, "tiles": tile_rows},
                                                  indent=2) + "\n")
    return 0


def load_precision(path: Path) -> str:
    from edge_ad.runtime.package import load_package

    return load_package(path).precision


if __name__ == "__main__":
    raise SystemExit(main())
