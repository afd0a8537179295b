"""What queueing one MQTT message costs with N messages already waiting in the spool (broker away).

    .venv/bin/python benchmarks/mqtt_spool.py --waiting 0,100000 --json spool.json

Each enqueue writes and fsyncs one file (the durability the station needs before the PLC gets its result); the
spool's index makes the rest O(1).
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import tempfile
import time
from pathlib import Path


def main() -> None:
    from edge_ad.pipeline.mqtt import MqttPublisher

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--waiting", default="0,100000")
    ap.add_argument("--samples", type=int, default=200)
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    with socket.socket() as s:  # a port nobody listens on: the broker is away, everything spools
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
    rows = []
    for n in (int(v) for v in a.waiting.split(",")):
        with tempfile.TemporaryDirectory() as tmp:
            spool = Path(tmp) / "spool"
            spool.mkdir()
            body = '{"topic": "t/result", "retain": false, "payload": {}}'
            for i in range(1, n + 1):
                (spool / f"{i:012d}.json").write_text(body)
            t0 = time.perf_counter()
            pub = MqttPublisher(f"mqtt://127.0.0.1:{dead}", "bench/st", spool, max_spool=n + a.samples + 10)
            start_s = time.perf_counter() - t0
            ms = []
            for k in range(a.samples):
                t = time.perf_counter()
                pub.enqueue("result", {"seq": k})
                ms.append((time.perf_counter() - t) * 1e3)
            pub.close(timeout=0.1)
            rows.append({"waiting": n, "enqueue_ms_p50": round(statistics.median(ms), 3),
                         "enqueue_ms_p99": round(sorted(ms)[int(0.99 * (len(ms) - 1))], 3),
                         "startup_s": round(start_s, 3)})
            print(rows[-1])
    if a.json:
        Path(a.json).write_text(json.dumps({"rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
