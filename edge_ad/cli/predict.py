"""`edge-ad predict PACKAGE INPUTS...`: run a model package on image files, write overlays and results.jsonl.

Exit status: 0 when every input was inspected, 1 when some inputs were missing or unreadable (each reported on
stderr and skipped; the others are still processed), 2 for a bad package or option (no traceback).
"""

from __future__ import annotations

import argparse
import glob
import json
import sys
from pathlib import Path

from edge_ad.fileio import atomic_write_bytes

HELP = "run a model package on images: overlays, results.jsonl and an OK/NG table"

IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".pgm", ".ppm"}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("package", help="model package directory (or its manifest.json)")
    p.add_argument("inputs", nargs="+", metavar="INPUTS", help="image files, directories (searched recursively) or globs")
    p.add_argument("--out", default="predictions", help="output directory for overlays and results.jsonl "
                   "(default: predictions/)")
    p.add_argument("--backend", default="auto", choices=["auto", "onnxruntime", "tensorrt"])
    p.add_argument("--threshold", type=float, default=None, help="image-score threshold (default: the manifest's)")
    p.add_argument("--sensitivity", type=float, default=1.0,
                   help="effective threshold = threshold / sensitivity (>1 flags more parts; default 1.0)")
    p.add_argument("--no-overlay", action="store_true", help="write results.jsonl only")


def expand_inputs(inputs: list[str]) -> tuple[list[Path], list[str]]:
    """Files, directories (recursive, image extensions) and globs -> (sorted unique files, inputs matching nothing)."""
    files: list[Path] = []
    unmatched: list[str] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            found = sorted(q for q in p.rglob("*") if q.is_file() and q.suffix.lower() in IMAGE_EXTS)
        elif p.exists():
            found = [p]
        elif glob.has_magic(item):
            found = sorted(Path(q) for q in glob.glob(item, recursive=True) if Path(q).is_file())
        else:
            found = [p]  # reported as unreadable by the detector, with its name
        if not found:
            unmatched.append(item)
        files.extend(found)
    seen: set[Path] = set()
    unique = []
    for f in files:
        key = f.resolve()
        if key not in seen:
            seen.add(key)
            unique.append(f)
    return unique, unmatched


def run(args: argparse.Namespace) -> int:
    import cv2

    from edge_ad.errors import DataError
    from edge_ad.runtime.detector import Detector, read_image
    from edge_ad.runtime.overlay import render_overlay

    files, unmatched = expand_inputs(args.inputs)
    for item in unmatched:
        print(f"edge-ad predict: {item}: no image files found", file=sys.stderr)
    if not files:
        raise DataError(f"INPUTS: expected image files, directories or globs that match images, got {args.inputs}")
    det = Detector.load(args.package, backend=args.backend, threshold=args.threshold, sensitivity=args.sensitivity)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    failed = len(unmatched)
    n_ng = 0
    lines: list[str] = []
    used_names: set[str] = set()
    print(f"{'file':40s} {'score':>10s} {'norm':>6s} {'result':>6s} {'regions':>7s}")
    for f in files:
        try:
            img = read_image(f)
            res = det.predict(img, frame={"path": str(f)})
        except DataError as e:
            print(f"edge-ad predict: {e}", file=sys.stderr)
            failed += 1
            continue
        record = {"file": str(f), **res.to_dict()}
        if not args.no_overlay:
            name = _unique_name(f.stem, used_names)
            ok, buf = cv2.imencode(".png", render_overlay(img, res))
            if not ok:
                raise DataError(f"{out / name}: PNG encoding failed")
            atomic_write_bytes(out / name, buf.tobytes())
            record["overlay"] = name
        lines.append(json.dumps(record))
        n_ng += int(res.is_anomalous)
        shown = str(f) if len(str(f)) <= 40 else "..." + str(f)[-37:]
        print(f"{shown:40s} {res.score:10.5g} {res.normalized_score:6.3f} {res.status:>6s} {len(res.regions):7d}")
    atomic_write_bytes(out / "results.jsonl", ("\n".join(lines) + "\n" if lines else "").encode("utf-8"))
    print(f"{len(lines)} inspected, {n_ng} NG, {failed} failed; results in {out / 'results.jsonl'}")
    return 1 if failed else 0


def _unique_name(stem: str, used: set[str]) -> str:
    """`<stem>_overlay.png`, with a counter when two inputs share a stem (a/x.png and b/x.png)."""
    name = f"{stem}_overlay.png"
    k = 2
    while name in used:
        name = f"{stem}_{k}_overlay.png"
        k += 1
    used.add(name)
    return name
