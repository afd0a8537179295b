"""Traceability: one durable SQLite row per inspection, written before the PLC sees the result; retention, schema
versions, queries and `edge-ad results`; kill -9 mid-stream loses no committed row and never corrupts the file."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from plc_peers import BLOB_IMG, DARK_IMG, FAST_LINK, MemoryAdapter, QueueSource
from runtime_fixtures import event

from edge_ad.cli.main import main
from edge_ad.errors import ConfigError
from edge_ad.runtime.result import Region, Result
from edge_ad.station.record import DefectCode, InspectionRecord
from edge_ad.traceability import Retention, TraceRecorder, TraceStore, open_readonly
from edge_ad.traceability.store import SCHEMA_VERSION
from edge_ad.traceability.timespec import parse_time

ROOT = Path(__file__).resolve().parents[1]
IMG = np.full((48, 64, 3), 90, np.uint8)


def _rec(seq: int, part: int, code: DefectCode, late: bool = False, error: str | None = None) -> InspectionRecord:
    return InspectionRecord(seq=seq, part_id=part, ok=code == DefectCode.OK, defect_code=code, anomaly_score=0.7,
                            max_pixel_score=0.6, defect_area=12, inspection_ms=41.5, model_id=1, late=late,
                            error=error)


def _result(score: float, ok: bool) -> Result:
    return Result(score=score, normalized_score=0.3 if ok else 0.8, is_anomalous=not ok, threshold=0.5,
                  regions=[] if ok else [Region(3, 4, 5, 6, 20, 0.9)], timings={"infer": 12.5},
                  frame={"frame_id": 77, "source_id": "cam-1"})


MODEL = {"name": "dinomaly-tiny", "precision": "fp32", "digest": "ab" * 32}


def test_rows_decisions_images_and_queries(tmp_path):
    db = tmp_path / "st.db"
    with TraceStore(db, "line3 'st\"1", keep_ok_every=2, retention=Retention(None, None, None)) as st:
        ids = [st.record(event(_rec(1, 4711, DefectCode.ANOMALY), _result(0.9, False), IMG, model=MODEL, when=1000.0)),
               st.record(event(_rec(2, 4712, DefectCode.OK), _result(0.1, True), IMG, model=MODEL, when=2000.0)),
               st.record(event(_rec(3, 4713, DefectCode.OK), _result(0.1, True), IMG, model=MODEL, when=3000.0)),
               st.record(event(_rec(4, 4714, DefectCode.LATE, late=True, error="time budget exceeded"), None, None,
                         model=MODEL, when=4000.0)),
               st.record(event(_rec(5, 4715, DefectCode.NO_IMAGE, error="no frame"), None, None, when=5000.0))]
        assert ids == [1, 2, 3, 4, 5] and st.count() == 5
    st = open_readonly(db)
    rows = st.query()
    assert [r["decision"] for r in rows] == ["NG", "OK", "OK", "LATE", "FAILED"]
    ng = rows[0]
    assert (ng["part_id"], ng["frame_id"], ng["source"], ng["model"], ng["package_digest"]) == (
        4711, 77, "cam-1", "dinomaly-tiny", "ab" * 32)
    assert ng["regions"] == [{"box": [3, 4, 5, 6], "area": 20, "peak": 0.9}] and ng["timings"] == {"infer": 12.5}
    assert ng["station"] == "line3 'st\"1"  # stored as given: parameters, never SQL text
    assert rows[3]["late"] is True and rows[3]["error"] == "time budget exceeded" and rows[3]["score"] is None
    # NG always, every 2nd OK (the 1st), no image for failed frames
    assert [st.image_file(r) is not None for r in rows] == [True, True, False, False, False]
    assert st.query(part=4711)[0]["id"] == 1 and [r["id"] for r in st.query(since=2000, until=4000)] == [2, 3]
    assert [r["id"] for r in st.query(decisions=["NG", "LATE"], newest_first=True)] == [4, 1]
    assert st.query(station="other") == [] and len(st.query(limit=2)) == 2
    with pytest.raises(ConfigError, match="decision: expected any of"):
        st.query(decisions=["BAD"])
    with pytest.raises(ConfigError, match="opened for reading only"):
        st.record(event(_rec(6, 1, DefectCode.OK), None))
    st.close()


def test_retention_by_rows_age_and_image_budget(tmp_path, monkeypatch):
    import edge_ad.traceability.store as store_mod

    monkeypatch.setattr(store_mod, "RETENTION_EVERY", 5)
    big = np.random.default_rng(0).integers(0, 256, (200, 200, 3), dtype=np.uint8)  # ~100 kB as JPEG
    with TraceStore(tmp_path / "r.db", retention=Retention(max_age_days=1.0, max_rows=8, image_budget_mb=0.3)) as st:
        old = time.time() - 3 * 86400
        for i in range(3):
            st.record(event(_rec(i + 1, i, DefectCode.ANOMALY), _result(0.9, False), big, when=old))
        for i in range(12):
            st.record(event(_rec(i + 4, 100 + i, DefectCode.ANOMALY), _result(0.9, False), big))
        time.sleep(0.5)
        removed = st.apply_retention()
        rows = st.query()
        assert len(rows) == 8 and all(r["part_id"] >= 100 for r in rows)  # the 3 old ones and the oldest new ones
        files = list(st.images_dir.rglob("*.jpg"))
        assert sum(p.stat().st_size for p in files) <= 0.3 * 2**20 and removed["images"] >= 0
        kept = [r for r in rows if r["image_path"]]
        assert len(kept) == len(files) and all(st.image_file(r) for r in kept)
        assert kept and kept[-1]["id"] == rows[-1]["id"]  # the newest images survive
    with pytest.raises(ConfigError, match=r"retention.max_rows: expected a number > 0"):
        Retention(max_rows=0)


def test_schema_version_and_bad_files(tmp_path):
    db = tmp_path / "v.db"
    TraceStore(db).close()
    con = sqlite3.connect(db)
    assert con.execute("SELECT version FROM schema_version").fetchall() == [(SCHEMA_VERSION,)]
    con.execute("UPDATE schema_version SET version = ?", (SCHEMA_VERSION + 1,))
    con.commit()
    con.close()
    with pytest.raises(ConfigError, match=rf"v.db: schema version {SCHEMA_VERSION + 1} is newer than this "
                                          rf"edge-ad's {SCHEMA_VERSION}"):
        TraceStore(db)
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(ConfigError, match=r"junk.db: not a usable SQLite traceability database"):
        TraceStore(junk)
    with pytest.raises(ConfigError, match="no traceability database here"):
        open_readonly(tmp_path / "missing.db")
    with pytest.raises(ConfigError, match="keep_ok_every"):
        TraceStore(tmp_path / "x.db", keep_ok_every=-1)


_WRITER = r"""
import sys
from edge_ad.station.event import InspectionEvent, PackageIdentity
from edge_ad.station.record import DefectCode, InspectionRecord
from edge_ad.traceability import Retention, TraceStore
st = TraceStore(sys.argv[1], "kill", retention=Retention(None, None, None), images=False)
n = st.count()
while True:
    n += 1
    rec = InspectionRecord(seq=n, part_id=n, ok=n % 3 != 0, defect_code=DefectCode.OK if n % 3 else
                           DefectCode.ANOMALY, anomaly_score=0.5, max_pixel_score=0.5, defect_area=0,
                           inspection_ms=1.0, model_id=1)
    st.record(InspectionEvent(rec, None, None, {}, PackageIdentity()))
    print(n, flush=True)  # = "delivered": only after the commit returned
"""


def test_kill_9_mid_stream_loses_no_committed_row(tmp_path):
    db = tmp_path / "k.db"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    delivered = 0
    rng = np.random.default_rng(0)
    for _ in range(5):
        p = subprocess.Popen([sys.executable, "-c", _WRITER, str(db)], stdout=subprocess.PIPE, text=True, env=env)
        assert p.stdout is not None
        target = delivered + int(rng.integers(20, 120))
        while delivered < target:
            line = p.stdout.readline()
            assert line, f"writer died early: {p.wait()}"
            delivered = int(line)
        os.kill(p.pid, signal.SIGKILL)
        p.wait()
        con = sqlite3.connect(db)
        assert con.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        rows = [r[0] for r in con.execute("SELECT part_id FROM inspections ORDER BY id")]
        con.close()
        # every result reported as delivered has its row; at most the one in flight beyond it
        assert rows[:delivered] == list(range(1, delivered + 1)) and len(rows) - delivered in (0, 1)
        delivered = len(rows)


def test_station_records_every_published_result_before_the_plc_sees_it(detector, tmp_path):
    from edge_ad.plc.inspector import Inspector
    from edge_ad.plc.link import PlcLink

    store = TraceStore(tmp_path / "s.db", "st3", retention=Retention(None, None, None))
    seen_at_record: list[int] = []
    mem, src = MemoryAdapter(), QueueSource()
    plc = mem.program()

    class Recorder(TraceRecorder):
        def write(self, event):
            seen_at_record.append(len(plc.results))  # results the PLC had when the row was written
            super().write(event)

    insp = Inspector(detector, src, PlcLink(mem, **FAST_LINK), poll_s=0.002, backend="onnxruntime",
                     recorder=Recorder(store))
    with insp:
        plc.run_until(lambda: mem.get("Ready"), what="Ready")
        for part, img in ((9001, BLOB_IMG), (9002, DARK_IMG), (9003, None)):
            if img is not None:
                src.push(img)
            n = len(plc.results)
            plc.trigger(part)
            plc.run_until(lambda n=n: len(plc.results) > n, timeout=10.0, what=f"result of part {part}")
            plc.run_until(lambda: mem.get("Ready") and not mem.get("TriggerAck"), what="Ready again")
    rows = store.query()
    store.close()
    assert [r["part_id"] for r in rows] == [9001, 9002, 9003] == [r["PartIdEcho"] for r in plc.results]
    assert [r["decision"] for r in rows] == ["NG", "OK", "LATE"]  # no frame within the budget: fail-safe, late
    assert rows[2]["error"] == "time budget exceeded"
    assert seen_at_record == [0, 1, 2]  # each row was committed before its result reached the PLC
    assert {r["package_digest"] for r in rows} == {detector.package.digest} and rows[0]["source"] == "test-camera"
    assert rows[0]["image_path"] and rows[1]["image_path"] is None  # NG image kept, OK not (keep_ok_every=0)


def test_results_cli_query_and_export(tmp_path, capsys):
    db = tmp_path / "c.db"
    now = time.time()
    with TraceStore(db, "st1", retention=Retention(None, None, None)) as st:
        st.record(event(_rec(1, 1, DefectCode.ANOMALY), _result(0.9, False), None, model=MODEL, when=now - 86400 - 60))
        st.record(event(_rec(2, 2, DefectCode.ANOMALY), _result(0.9, False), None, model=MODEL, when=now - 60))
        st.record(event(_rec(3, 3, DefectCode.OK), _result(0.1, True), None, model=MODEL, when=now - 30))
    assert main(["results", "query", str(db), "--since", "2h", "--decision", "NG", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["part_id"] for r in rows] == [2] and rows[0]["model"] == "dinomaly-tiny"
    assert main(["results", "query", str(db)]) == 0
    out = capsys.readouterr().out
    assert "3 inspection(s)" in out and "dinomaly-tiny (abababababab): OK 1, NG 2" in out
    csv_path = tmp_path / "out.csv"
    assert main(["results", "export", str(db), "--csv", str(csv_path), "--decision", "NG"]) == 0
    lines = csv_path.read_text().splitlines()
    assert lines[0].startswith("id,time,station") and len(lines) == 3
    jl = tmp_path / "out.jsonl"
    assert main(["results", "export", str(db), "--jsonl", str(jl), "--part", "3"]) == 0
    assert [json.loads(x)["decision"] for x in jl.read_text().splitlines()] == ["OK"]
    pq = pytest.importorskip("pyarrow.parquet")
    pq_path = tmp_path / "out.parquet"
    assert main(["results", "export", str(db), "--parquet", str(pq_path)]) == 0
    table = pq.read_table(pq_path)
    assert table.num_rows == 3 and table.column("decision").to_pylist() == ["NG", "NG", "OK"]
    assert json.loads(table.column("regions").to_pylist()[0]) == [{"box": [3, 4, 5, 6], "area": 20, "peak": 0.9}]
    assert main(["results", "query", str(db), "--since", "last tuesday"]) == 2
    assert "--since 'last tuesday': expected an ISO time" in capsys.readouterr().err
    assert main(["results", "query", str(db), "--decision", "MAYBE"]) == 2


def test_parse_time_forms():
    now = 1_700_000_000.0
    assert parse_time("24h", "--since", now) == now - 86400 and parse_time("90m", "--since", now) == now - 5400
    today = parse_time("today", "--since", now)
    assert parse_time("yesterday", "--since", now) == today - 86400 and today <= now < today + 86400
    assert parse_time("2026-12-01T08:30", "--since") == time.mktime((2026, 12, 1, 8, 30, 0, 0, 0, -1))


def test_serve_writes_a_row_per_result_and_answers_which_parts_failed(plc_packages, tmp_path, capsys):
    import cv2
    from plc_peers import free_port

    images = tmp_path / "images"
    images.mkdir()
    for i, img in enumerate((BLOB_IMG, DARK_IMG, BLOB_IMG)):
        cv2.imwrite(str(images / f"{i}.png"), img)
    db = tmp_path / "station.db"
    rc = main(["serve", str(plc_packages["a"]), "--source", str(images), "--plc", f"modbus://127.0.0.1:{free_port()}",
               "--trigger", "free", "--no-ack", "--hold-ms", "0", "--stop-at-end", "--duration-s", "30",
               "--backend", "onnxruntime", "--status-every-s", "0", "--db", str(db), "--station", "line3-st7",
               "--keep-ok-every", "1"])
    assert rc == 0, capsys.readouterr().err
    capsys.readouterr()
    assert main(["results", "query", str(db), "--since", "today", "--decision", "NG,FAILED,LATE", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert len(rows) == 2 and {r["station"] for r in rows} == {"line3-st7"}
    from edge_ad.runtime.package import load_package

    pkg = load_package(plc_packages["a"])
    assert {(r["model"], r["package_digest"], r["precision"]) for r in rows} == {(pkg.name, pkg.digest, "fp32")}
    with open_readonly(db) as st:
        every = st.query()
        assert [r["decision"] for r in every] == ["NG", "OK", "NG"]
        assert all(st.image_file(r) is not None for r in every)  # NG always, OK with --keep-ok-every 1


def test_serve_reads_a_station_config(plc_packages, tmp_path, capsys):
    import cv2
    import yaml
    from plc_peers import free_port

    images = tmp_path / "images"
    images.mkdir()
    for i, img in enumerate((BLOB_IMG, DARK_IMG)):
        cv2.imwrite(str(images / f"{i}.png"), img)
    sample = yaml.safe_load((ROOT / "samples" / "station.yaml").read_text())
    cfg = {**sample, "package": str(plc_packages["a"]), "recipes": {}, "source": str(images),
           "plc": f"modbus://127.0.0.1:{free_port()}", "trigger": "free", "backend": "onnxruntime",
           "db": str(tmp_path / "cfg.db"), "mqtt": None, "ui": None}
    cfg = {k: v for k, v in cfg.items() if v is not None}
    path = tmp_path / "station.yaml"
    path.write_text(yaml.safe_dump(cfg))
    rc = main(["serve", "--config", str(path), "--no-ack", "--hold-ms", "0", "--stop-at-end", "--duration-s", "30",
               "--status-every-s", "0", "--station", "from-cli"])
    assert rc == 0, capsys.readouterr().err
    with open_readonly(tmp_path / "cfg.db") as st:
        rows = st.query()
    assert [r["decision"] for r in rows] == ["NG", "OK"] and {r["station"] for r in rows} == {"from-cli"}
    for bad, match in (({"colour": 1}, "colour: unknown key"), ({"retention": {"weeks": 2}}, "retention.weeks"),
                       ({"budget_ms": "fast"}, "budget_ms: expected a number")):
        path.write_text(yaml.safe_dump({**cfg, **bad}))
        assert main(["serve", "--config", str(path)]) == 2
        assert match in capsys.readouterr().err
    assert main(["serve"]) == 2
    assert "missing package, source, plc" in capsys.readouterr().err


def test_a_version_1_database_is_migrated_in_place(tmp_path):
    from edge_ad.traceability.store import MIGRATIONS

    db = tmp_path / "old.db"
    con = sqlite3.connect(db)
    con.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
    for stmt in MIGRATIONS[0]:
        con.execute(stmt)
    con.execute("INSERT INTO schema_version VALUES (1)")
    con.execute("INSERT INTO inspections (time, station, seq, part_id, decision, defect_code, late) "
                "VALUES (1.0, 'old', 1, 42, 'NG', 2, 0)")
    con.commit()
    con.close()
    with TraceStore(db, "old", retention=Retention(None, None, None)) as st:
        assert [r["part_id"] for r in st.query()] == [42]  # kept
        st.audit("anna", "sensitivity", {"to": 1.2})  # the table version 2 added
        assert st.audit_log()[0]["user"] == "anna"
    assert sqlite3.connect(db).execute("SELECT version FROM schema_version").fetchall() == [(SCHEMA_VERSION,)]


def test_hmi_user_cli_stores_a_hash(tmp_path, monkeypatch, capsys):
    import io

    from edge_ad.hmi.auth import load_users

    users = tmp_path / "u.yaml"
    monkeypatch.setattr("sys.stdin", io.StringIO("long-enough-pw\n"))
    assert main(["hmi-user", str(users), "anna", "--role", "engineer", "--password-stdin"]) == 0
    loaded = load_users(users)
    assert loaded["anna"]["role"] == "engineer" and loaded["anna"]["password"].startswith("scrypt$")
    assert "long-enough-pw" not in users.read_text() and oct(users.stat().st_mode & 0o777) == "0o600"
    monkeypatch.setattr("sys.stdin", io.StringIO("short\n"))
    assert main(["hmi-user", str(users), "bob", "--password-stdin"]) == 2
    assert "at least 8 characters" in capsys.readouterr().err
