"""`edge-ad predict PACKAGE INPUTS...`: run a model package on image files, write overlays and results.jsonl.

results.jsonl gets one line per input, written as each image is done (`results.jsonl.partial` until the run
ends, then renamed), so an interrupted run keeps every finished result; inputs that could not be inspected get a
line with status ERROR and the reason. Overlays keep the input's path below the folder it was found in
(`crack/000.png` -> `crack/000_overlay.png`). Files an earlier run wrote into OUT (its results.jsonl and the
overlays it lists) are removed first; nothing else in OUT is touched.
Exit status: 0 when every input was inspected, 1 when some inputs were missing or unreadable (each reported and
recorded), 2 for a bad package or option (no traceback).
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import sys
from pathlib import Path

from edge_ad.cli.common import add_trusted_key
from edge_ad.fileio import atomic_write_bytes
from edge_ad.runtime.backends import BACKENDS

HELP = "run a model package on images: overlays, results.jsonl and an OK/NG table"

RESULTS = "results.jsonl"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("package", help="model package directory (or its manifest.json)")
    p.add_argument(
        "inputs", nargs="+", metavar="INPUTS", help="image files, directories (searched recursively) or globs"
    )
    p.add_argument("--out", default="predictions", help="output directory for overlays and results.jsonl "
                   "(default: predictions/)")
    p.add_argument("--backend", default="auto", choices=list(BACKENDS),
                   help="inference engine (auto: TensorRT on an NVIDIA GPU, else OpenVINO if installed, else ONNX "
                        "Runtime)")
    p.add_argument("--threshold", type=float, default=None, help="image-score threshold (default: the manifest's)")
    p.add_argument("--sensitivity", type=float, default=1.0,
                   help="effective threshold = threshold / sensitivity (>1 flags more parts; default 1.0)")
    p.add_argument("--max-pixels", dest="max_pixels", type=int, default=None,
                   help="largest image accepted, width x height (default 50000000 or $EDGE_AD_MAX_PIXELS)")
    p.add_argument("--no-overlay", action="store_true", help="write results.jsonl only")
    add_trusted_key(p)


def expand_inputs(inputs: list[str]) -> tuple[list[tuple[Path, Path]], list[str]]:
    """Files, directories (recursive, image extensions) and globs -> (sorted unique (file, name below its root)
    pairs, inputs matching nothing). The name keeps the sub-folders below a directory or glob root."""
    from edge_ad.imageio import IMAGE_EXTENSIONS

    found: list[tuple[Path, Path]] = []
    unmatched: list[str] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            hits = [(q, q.relative_to(p)) for q in sorted(p.rglob("*"))
                    if q.is_file() and q.suffix.lower() in IMAGE_EXTENSIONS]
        elif p.exists():
            hits = [(p, Path(p.name))]
        elif glob.has_magic(item):
            root = Path(item.split("*")[0].split("?")[0].split("[")[0] or ".")
            root = root if root.is_dir() else root.parent
            hits = []
            for q in sorted(Path(x) for x in glob.glob(item, recursive=True)):
                if q.is_file():
                    try:
                        hits.append((q, q.relative_to(root)))
                    except ValueError:
                        hits.append((q, Path(q.name)))
        else:
            hits = [(p, Path(p.name))]  # reported as unreadable, with its name
        if not hits:
            unmatched.append(item)
        found.extend(hits)
    seen: set[Path] = set()
    unique = []
    for f, rel in found:
        key = f.resolve()
        if key not in seen:
            seen.add(key)
            unique.append((f, rel))
    return unique, unmatched


def _clean_previous_run(out: Path) -> None:
    """Remove the results.jsonl of an earlier run in `out` and the overlays it lists (only those)."""
    previous = out / RESULTS
    if not previous.is_file():
        return
    for line in previous.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            name = json.loads(line).get("overlay")
        except (json.JSONDecodeError, AttributeError):
            continue
        if isinstance(name, str):
            target = (out / name).resolve()
            if target.is_relative_to(out.resolve()) and target.is_file():
                target.unlink()
    previous.unlink()


def _overlay_name(rel: Path, used: set[str]) -> str:
    """`<dir>/<stem>_overlay.png` below OUT, with a counter when two inputs map to the same name."""
    base = rel.with_name(f"{rel.stem}_overlay")
    name = base.as_posix() + ".png"
    k = 2
    while name in used:
        name = f"{base.as_posix()}_{k}.png"
        k += 1
    used.add(name)
    return name


def run(args: argparse.Namespace) -> int:
    import cv2

    from edge_ad.errors import DataError
    from edge_ad.imageio import read_image
    from edge_ad.runtime.detector import Detector
    from edge_ad.runtime.overlay import render_overlay
    from edge_ad.runtime.result import Fault

    files, unmatched = expand_inputs(args.inputs)
    for item in unmatched:
        print(f"edge-ad predict: {item}: no image files found", file=sys.stderr)
    if not files:
        raise DataError(f"INPUTS: expected image files, directories or globs that match images, got {args.inputs}")
    det = Detector.load(args.package, backend=args.backend, threshold=args.threshold, sensitivity=args.sensitivity,
                        max_pixels=args.max_pixels, trusted_keys=args.trusted_keys)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    _clean_previous_run(out)
    failed = len(unmatched)
    n_ok = n_ng = 0
    used: set[str] = set()
    partial = out / (RESULTS + ".partial")
    print(f"{'file':40s} {'score':>10s} {'norm':>6s} {'result':>6s} {'regions':>7s}")
    with open(partial, "w", encoding="utf-8") as jsonl:
        for f, rel in files:
            shown = str(f) if len(str(f)) <= 40 else "..." + str(f)[-37:]
            try:
                img = read_image(f, max_pixels=args.max_pixels)
                res = det.predict(img, frame={"path": str(f)})
            except DataError as e:
                print(f"edge-ad predict: {e}", file=sys.stderr)
                failed += 1
                record = {"file": str(f), "status": "ERROR", "error": str(e), "fault": Fault.IMAGE}
                print(f"{shown:40s} {'-':>10s} {'-':>6s} {'ERROR':>6s} {'-':>7s}")
            else:
                record = {"file": str(f), **res.to_dict()}
                if not args.no_overlay:
                    name = _overlay_name(rel, used)
                    ok, buf = cv2.imencode(".png", render_overlay(img, res))
                    if not ok:
                        raise DataError(f"{out / name}: PNG encoding failed")
                    atomic_write_bytes(out / name, buf.tobytes())
                    record["overlay"] = name
                failed += res.error is not None
                n_ok += res.passed
                n_ng += not res.passed and res.error is None
                print(f"{shown:40s} {res.score:10.5g} {res.normalized_score:6.3f} {res.status:>6s} "
                      f"{len(res.regions):7d}")
            jsonl.write(json.dumps(record, allow_nan=False) + "\n")
            jsonl.flush()
        os.fsync(jsonl.fileno())
    os.replace(partial, out / RESULTS)
    print(f"{n_ok + n_ng} inspected ({n_ok} OK, {n_ng} NG), {failed} failed; results in {out / RESULTS}")
    return 1 if failed else 0
