"""Per-frame latency of a tiled package against the whole-frame path, per backend, in one interleaved run.

    .venv/bin/python benchmarks/tiles_latency.py --model dinomaly-s --out /tmp/tiles --threads 2 --rounds 3

Exports the untrained package of `--model` once (speed only: weights do not change the cost), then writes copies
with a 1600x1200 line geometry (`synth --line` reference and ROI; alignment on) cut into 1, 4 and 12 tiles, and
runs `edge-ad bench`'s code on the reference frame for each (package, backend), round-robin over `--rounds` rounds
so every configuration sees the same machine state. Reports the median per-frame latency, ms per tile and the
alignment milliseconds.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
from pathlib import Path
from typing import Any

import cv2

from edge_ad.data.synth_line import _rng, make_frame, roi_mask
from edge_ad.runtime.bench import run_bench
from edge_ad.runtime.geometry import AlignSpec, Geometry, Reference, TileSpec
from edge_ad.runtime.package import load_package, write_package


def _spec_for(n_tiles: int, h: int, w: int) -> TileSpec | None:
    """The least-overlapping square tiles that cut an h x w box into exactly `n_tiles` (None: one view)."""
    if n_tiles == 1:
        return None
    best: TileSpec | None = None
    for size in range(64, max(h, w) + 1, 2):
        for stride in range(max(16, size // 2), size + 1, 2):
            spec = TileSpec(size, stride)
            if len(spec.grid(h, w)) == n_tiles and (best is None or size - stride < best.size - best.stride or (
                    size - stride == best.size - best.stride and size < best.size)):
                best = spec
        if best is not None and best.size < size - 64:
            break
    if best is None:
        raise SystemExit(f"no tiling gives {n_tiles} tiles for a {w}x{h} box")
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="dinomaly-s")
    ap.add_argument("--out", required=True)
    ap.add_argument("--tiles", default="1,4,12")
    ap.add_argument("--backends", default="onnxruntime,openvino")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    out = Path(a.out)
    base_dir = out / f"{a.model}-fp32"
    if not (base_dir / "manifest.json").is_file():
        from edge_ad.export.exporter import export_package

        export_package(model_name=a.model, out=base_dir, force=True)
    base = load_package(base_dir)
    hw = (1200, 1600)
    ref_img, _ = make_frame("plate_a", "good", hw, _rng(0, "reference"), nominal=True)
    ref = Reference("plate_a", ref_img, roi_mask("plate_a", hw))
    _, _, bw, bh = ref.box
    configs: list[tuple[str, Path, str]] = []
    for backend in a.backends.split(","):
        configs.append(("whole frame", base_dir, backend))
    for n in (int(t) for t in a.tiles.split(",")):
        spec = _spec_for(n, bh, bw)
        geo = Geometry({"plate_a": ref}, AlignSpec(), spec)
        man = copy.deepcopy(base.manifest)
        man["input"]["preprocess"]["resize"] = man["input"]["preprocess"]["crop"]
        man["geometry"] = geo.to_dict()
        for k in ("digest", "files", "engines"):
            man.pop(k, None)
        pkg_dir = out / f"{a.model}-tiles{n}"
        write_package(pkg_dir, {"model.onnx": base.onnx_path(), **geo.files()}, man, overwrite=True)
        for backend in a.backends.split(","):
            configs.append((f"{n} tile(s)" + (f" of {spec.size}/{spec.stride}" if spec else " (ROI box)"), pkg_dir,
                            backend))
    frame = out / "frame.png"
    cv2.imwrite(str(frame), ref_img)
    runs: dict[int, list[dict[str, Any]]] = {i: [] for i in range(len(configs))}
    for _ in range(a.rounds):
        for i, (_, pkg, backend) in enumerate(configs):
            runs[i].append(run_bench(pkg, backend=backend, runs=1, warmup=1, image=frame, threads=a.threads))
    rows = []
    for i, (label, _, _backend) in enumerate(configs):
        reps = runs[i]
        e2e = statistics.median(r["end_to_end_ms"]["p50"] for r in reps)
        tiles = reps[0]["tiles_per_frame"]
        align = statistics.median(r["align_ms"]["p50"] for r in reps) if reps[0]["align_ms"] else None
        rows.append({"config": label, "backend": reps[0]["backend"], "tiles": tiles, "frame_ms": round(e2e, 1),
                     "ms_per_tile": round(e2e / tiles, 1), "align_ms": None if align is None else round(align, 2)})
    for r in rows:
        print(f"{r['config']:28s} {r['backend']:12s} {r['frame_ms']:9.1f} ms/frame {r['ms_per_tile']:8.1f} ms/tile"
              + (f"  align {r['align_ms']:.2f} ms" if r["align_ms"] is not None else ""))
    if a.json:
        Path(a.json).write_text(json.dumps({"model": a.model, "threads": a.threads, "rounds": a.rounds,
                                            "frame": "1600x1200", "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
