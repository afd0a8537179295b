"""Does the web HMI slow inspection? `edge-ad serve` throughput with the HMI off and on (a browser-like client
polling /api/state every second and the live frame twice a second, plus /api/ng every 5 s), interleaved.

    .venv/bin/python benchmarks/hmi_overhead.py --images 200 --rounds 2 [--package PKG] [--threads 1]

Each run: free trigger over a folder of synthetic good images (`--stop-at-end`, no PLC ack wait), Modbus server
on loopback, traceability database on in both cases (the station as deployed), so the difference is the HMI.
Throughput = images / wall time of the serve call. Without --package an untrained dinomaly-tiny is exported.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import socket
import statistics
import tempfile
import threading
import time
import urllib.request
from pathlib import Path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _poller(url: str, stop: threading.Event, counts: dict[str, int]) -> None:
    t0 = time.monotonic()
    k = 0
    while not stop.is_set():
        paths = ["/api/state", "/api/live.jpg"] if k % 2 == 0 else ["/api/live.jpg"]
        if k % 10 == 0:
            paths.append("/api/ng")
        for p in paths:
            try:
                with urllib.request.urlopen(url + p, timeout=2) as r:
                    r.read()
                    counts["ok"] += 1
            except OSError:
                counts["err"] += 1  # before the server is up, or a 404 before the first frame
        k += 1
        stop.wait(max(0.0, t0 + k * 0.5 - time.monotonic()))


def _serve(pkg: str, images: Path, tmp: Path, ui: bool, tag: str) -> tuple[float, dict[str, int]]:
    from edge_ad.cli.main import main

    port = _free_port()
    args = ["serve", pkg, "--source", str(images), "--plc", f"modbus://127.0.0.1:{_free_port()}", "--trigger",
            "free", "--no-ack", "--hold-ms", "0", "--stop-at-end", "--backend", "onnxruntime", "--status-every-s", "0",
            "--db", str(tmp / f"{tag}.db")]
    counts = {"ok": 0, "err": 0}
    stop = threading.Event()
    poller = None
    if ui:
        args += ["--ui", f"127.0.0.1:{port}"]
        poller = threading.Thread(target=_poller, args=(f"http://127.0.0.1:{port}", stop, counts), daemon=True)
        poller.start()
    t = time.perf_counter()
    with contextlib.redirect_stderr(io.StringIO()):
        rc = main(args)
    dt = time.perf_counter() - t
    stop.set()
    if poller:
        poller.join(5)
    if rc != 0:
        raise SystemExit(f"serve failed ({rc})")
    return dt, counts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--package", help="model package (default: export an untrained dinomaly-tiny)")
    ap.add_argument("--images", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    import cv2
    import numpy as np

    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        pkg = args.package
        if not pkg:
            from edge_ad.export.exporter import export_package

            pkg = str(export_package(model_name="dinomaly-tiny", out=tmp / "pkg")[0])
        images = tmp / "images"
        images.mkdir()
        rng = np.random.default_rng(0)
        for i in range(args.images):
            cv2.imwrite(str(images / f"{i:05d}.png"), rng.integers(0, 256, (480, 640, 3), dtype=np.uint8))
        res: dict[bool, list[float]] = {False: [], True: []}
        served = {"ok": 0, "err": 0}
        for r in range(args.rounds):
            for ui in (False, True):
                dt, counts = _serve(pkg, images, tmp, ui, f"r{r}-{int(ui)}")
                res[ui].append(args.images / dt)
                served = {k: served[k] + counts[k] for k in served}
        off, on = statistics.median(res[False]), statistics.median(res[True])
        print(f"| HMI | images/s (median of {args.rounds}) | runs |")
        print("|---|---:|---|")
        print(f"| off | {off:.1f} | {', '.join(f'{v:.1f}' for v in res[False])} |")
        print(f"| on, polled | {on:.1f} | {', '.join(f'{v:.1f}' for v in res[True])} |")
        print(f"change: {100 * (on - off) / off:+.1f} %; HMI requests answered {served['ok']}, failed {served['err']}")


if __name__ == "__main__":
    main()
