"""A new dataset revision from a station's own parts: what the line taught it (`edge-ad dataset from-station`).

MVTec layout under OUT/CATEGORY: kept OK parts and the operators' false rejects go to `train/good` (every 5th OK
part to `test/good` instead, so the revision can measure its false-reject rate), confirmed NG parts to
`test/station_ng` with a mask in `ground_truth/station_ng` (the operator's drawn region, else the model's own
regions). `dataset.json` records the source, the period, the counts and the revision: the sha256 over every file's
path and content. Written to a temporary folder beside OUT and swapped into place (`fileio.staged_directory`):
nothing half-written. Line side: the traceability store and OpenCV only.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from edge_ad.errors import ConfigError
from edge_ad.fileio import staged_directory

#: one OK part in this many goes to test/good
TEST_GOOD_EVERY = 5


def _mask(shape: tuple[int, int], boxes: list[list[int]]) -> np.ndarray:
    m = np.zeros(shape, np.uint8)
    for x, y, w, h in boxes:
        m[max(0, y):max(0, y + h), max(0, x):max(0, x + w)] = 255
    return m


def from_station(db: str | Path, out: str | Path, *, since: float | None = None, until: float | None = None,
                 category: str = "station", images_dir: str | Path | None = None,
                 force: bool = False) -> dict[str, Any]:
    """Write the revision; returns dataset.json's content."""
    import cv2

    from edge_ad.imageio import read_image
    from edge_ad.traceability import open_readonly

    target = Path(out)
    if target.exists() and not force:
        raise ConfigError(f"{target}: already exists; choose another --out or pass --force")
    if not category or "/" in category or category.startswith("."):
        raise ConfigError(f"--category: expected a folder name, got {category!r}")
    store = open_readonly(db, images_dir)
    try:
        feedback = {f["row"]["id"]: f for f in store.feedback(since, until)}
        ok_rows = [r for r in store.query(since=since, until=until, decisions=["OK"]) if r.get("image_path")]
        files: list[tuple[Path, Path | np.ndarray]] = []  # (relative target, source file or mask)
        counts = {"train_good": 0, "test_good": 0, "false_rejects": 0, "confirmed_ng": 0, "missing_images": 0}
        for i, r in enumerate(ok_rows):
            src = store.image_file(r)
            if src is None:
                counts["missing_images"] += 1
                continue
            split = "test" if i % TEST_GOOD_EVERY == TEST_GOOD_EVERY - 1 else "train"
            files.append((Path(category, split, "good", f"{r['station']}_{r['id']}.jpg"), src))
            counts[f"{split}_good"] += 1
        for rid, f in feedback.items():
            row = f["row"]
            src = store.image_file(row)
            if src is None:
                counts["missing_images"] += 1
                continue
            name = f"{row['station']}_{rid}"
            if f["label"] == "false_reject":
                files.append((Path(category, "train", "good", f"{name}.jpg"), src))
                counts["false_rejects"] += 1
                counts["train_good"] += 1
            else:
                files.append((Path(category, "test", "station_ng", f"{name}.jpg"), src))
                h, w = read_image(src).shape[:2]
                boxes = [f["region"]] if f["region"] else [  # the operator's region, else the model's
                    [int(v) for v in g["box"]] for g in row.get("regions") or [] if isinstance(g, dict) and "box" in g]
                files.append((Path(category, "ground_truth", "station_ng", f"{name}_mask.png"), _mask((h, w), boxes)))
                counts["confirmed_ng"] += 1
    finally:
        store.close()
    if counts["train_good"] == 0:
        raise ConfigError(f"{db}: no stored OK images or false rejects in the period: nothing to train on (keep OK "
                          f"images with serve --keep-ok-every N, or mark false rejects on the HMI)")
    with staged_directory(target) as tmp:
        digest = hashlib.sha256()
        for rel, item in sorted(files, key=lambda x: str(x[0])):
            dst = tmp / rel
            dst.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(item, np.ndarray):
                ok, buf = cv2.imencode(".png", item)
                if not ok:
                    raise ConfigError(f"{rel}: the mask could not be encoded")
                dst.write_bytes(buf.tobytes())
            else:
                shutil.copyfile(item, dst)
            digest.update(str(rel).encode() + b"\0" + hashlib.sha256(dst.read_bytes()).digest())
        doc = {"source": str(db), "since": since, "until": until, "category": category, "counts": counts,
               "revision": digest.hexdigest(),
               "layout": "MVTec AD: train/good, test/good, test/station_ng + ground_truth/station_ng"}
        (tmp / "dataset.json").write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    return doc
