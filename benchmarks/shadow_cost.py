"""What a shadow model costs the production path: station throughput and inspection time with and without one.

    python benchmarks/shadow_cost.py --package P [--shadow P2] --parts 200 --rounds 3 --threads 2 --json s.json

A camera-triggered Inspector (in-memory PLC, frames queued in advance, so the station runs as fast as it can)
judges `--parts` parts of --size noise frames; rounds alternate without and with the shadow (ShadowRunner, one
thread at the lowest priority; default: the same package as the shadow). Reported per mode: parts/s (median of the
rounds) and for the shadow the parts it judged and skipped (inspection times are not reported: with every frame
queued in advance they measure the backlog, not the station). Untrained packages are fine:
speed does not depend on the weights.
"""

from __future__ import annotations

import argparse
import json
import queue
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def _round(package: str, shadow: str | None, parts: int, size: tuple[int, int], threads: int,
           shadow_backend: str) -> dict[str, Any]:
    from plc_peers import FAST_LINK, MemoryAdapter, QueueSource

    from edge_ad.plc.inspector import Inspector
    from edge_ad.plc.link import PlcLink
    from edge_ad.runtime import Detector
    from edge_ad.station.shadow import ShadowRunner

    det = Detector.load(package, backend="auto", threads=threads)
    runner = ShadowRunner(Detector.load(shadow, backend=shadow_backend, threads=1)) if shadow else None
    cam = QueueSource()
    cam._q = queue.Queue()
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (*size, 3), dtype=np.uint8) for _ in range(8)]
    insp = Inspector(det, cam, PlcLink(MemoryAdapter(), **{**FAST_LINK, "queue_size": parts + 8, "ack": False,
                                                            "hold_s": 0.0}),
                     trigger="camera", poll_s=0.001, budget_ms=60_000.0, recorder=runner)
    with insp:
        t0 = time.perf_counter()
        for i in range(parts):
            cam.push(frames[i % len(frames)])
        while insp.stats.inspections < parts:
            time.sleep(0.002)
        wall = time.perf_counter() - t0
    out: dict[str, Any] = {"parts_per_s": parts / wall}
    if runner is not None:
        runner.flush(60)
        st = runner.status()
        out.update({"shadow_judged": st["judged"], "shadow_skipped": st["skipped"]})
        runner.close()
    det.close()
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--package", required=True)
    ap.add_argument("--shadow", help="the shadow package (default: --package)")
    ap.add_argument("--parts", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--size", default="640x480", help="frame WxH")
    ap.add_argument("--shadow-backend", default="onnxruntime",
                    help="the shadow's engine (default onnxruntime: it runs on the shadow's own, lowest-priority "
                         "thread; OpenVINO's worker threads would not inherit that priority)")
    ap.add_argument("--json", dest="json_out")
    args = ap.parse_args()
    w, h = (int(v) for v in args.size.lower().split("x"))
    rows: dict[str, list[dict[str, Any]]] = {"without shadow": [], "with shadow": []}
    for _ in range(args.rounds):
        rows["without shadow"].append(_round(args.package, None, args.parts, (h, w), args.threads, args.shadow_backend))
        rows["with shadow"].append(_round(args.package, args.shadow or args.package, args.parts, (h, w), args.threads,
                                          args.shadow_backend))
    summary = {}
    print(f"{args.parts} parts x {args.rounds} rounds, {w}x{h} frames, {args.threads} production threads")
    print(f"{'mode':16s} {'parts/s':>8s} {'shadow judged/skipped':>22s}")
    for mode, rs in rows.items():
        s = {"parts_per_s": float(np.median([r["parts_per_s"] for r in rs]))}
        if mode == "with shadow":
            s["shadow_judged"] = float(np.median([r["shadow_judged"] for r in rs]))
            s["shadow_skipped"] = float(np.median([r["shadow_skipped"] for r in rs]))
        summary[mode] = s
        extra = f"{s['shadow_judged']:.0f}/{s['shadow_skipped']:.0f}" if "shadow_judged" in s else "-"
        print(f"{mode:16s} {s['parts_per_s']:8.1f} {extra:>22s}")
    if args.json_out:
        Path(args.json_out).write_text(json.dumps({"summary": summary, "rounds": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
