"""The traceability store on a real PostgreSQL server started here (Debian `postgresql`, a throw-away cluster):
same schema and behaviour as SQLite, migrations versioned, `edge-ad results` against it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from plc_peers import free_port
from runtime_fixtures import event

from edge_ad.cli.main import main
from edge_ad.errors import ConfigError
from edge_ad.station.record import DefectCode, InspectionRecord
from edge_ad.traceability import Retention, TraceStore, open_readonly
from edge_ad.traceability.store import SCHEMA_VERSION

psycopg = pytest.importorskip("psycopg", reason="needs psycopg (edge-ad[postgres])")
BIN = next((d for d in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)), None) \
    if Path("/usr/lib/postgresql").is_dir() else None
pytestmark = [pytest.mark.slow, pytest.mark.skipif(BIN is None or not (BIN / "initdb").exists(),
                                reason="needs the PostgreSQL server binaries (apt install postgresql)")]


def _as_postgres(cmd: list[str]) -> list[str]:
    """initdb/postgres refuse to run as root: run them as the `postgres` system user then."""
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


@pytest.fixture(scope="module")
def pg_url(tmp_path_factory):
    root = tmp_path_factory.mktemp("pg")
    data = root / "data"
    if os.geteuid() == 0:
        shutil.chown(root, "postgres")
        os.chmod(root, 0o700)
        for parent in root.parents:  # the postgres user must be able to reach its directory
            if parent == Path("/"):
                break
            os.chmod(parent, os.stat(parent).st_mode | 0o011)
    subprocess.run(_as_postgres([str(BIN / "initdb"), "-D", str(data), "-A", "trust", "-U", "edgead"]),
                   check=True, capture_output=True)
    port = free_port()
    subprocess.run(_as_postgres([str(BIN / "pg_ctl"), "-D", str(data), "-l", str(root / "log"), "-w", "-o",
                                 f"-p {port} -k {root} -h 127.0.0.1", "start"]), check=True, capture_output=True)
    url = f"postgresql://edgead@127.0.0.1:{port}/postgres"
    try:
        yield url
    finally:
        subprocess.run(_as_postgres([str(BIN / "pg_ctl"), "-D", str(data), "-m", "fast", "stop"]),
                       capture_output=True)


def _rec(seq: int, part: int, ok: bool) -> InspectionRecord:
    return InspectionRecord(seq=seq, part_id=part, ok=ok, defect_code=DefectCode.OK if ok else DefectCode.ANOMALY,
                            anomaly_score=0.4, max_pixel_score=0.3, defect_area=0, inspection_ms=12.0, model_id=1)


def test_same_schema_rows_queries_and_retention_on_postgres(pg_url, tmp_path, capsys):
    import numpy as np

    img = np.full((40, 60, 3), 80, np.uint8)
    model = {"name": "dinomaly-s", "precision": "int8", "digest": "ef" * 32}
    with TraceStore(pg_url, "pg-st", retention=Retention(None, 3, None), images_dir=tmp_path / "img") as st:
        ids = [st.record(event(_rec(i, 4_000_000_000 + i, i % 2 == 0), None, img, model=model, when=1000.0 + i))
               for i in range(1, 6)]  # part ids beyond 2^31: PostgreSQL columns are BIGINT
        assert ids == sorted(ids) and st.count() == 5
        st.audit("anna", "sensitivity", {"to": 1.1})
        st.apply_retention()
        rows = st.query()
        assert [r["part_id"] for r in rows] == [4_000_000_003, 4_000_000_004, 4_000_000_005]
        assert [r["decision"] for r in rows] == ["NG", "OK", "NG"] and rows[0]["package_digest"] == "ef" * 32
        assert st.image_file(rows[0]) is not None and st.image_file(rows[1]) is None  # NG images, in images_dir
    con = psycopg.connect(pg_url)
    assert con.execute("SELECT version FROM schema_version").fetchall() == [(SCHEMA_VERSION,)]
    types = dict(con.execute("SELECT column_name, data_type FROM information_schema.columns "
                             "WHERE table_name = 'inspections'").fetchall())
    assert types["part_id"] == "bigint" and types["score"] == "double precision"
    con.close()
    assert main(["results", "query", pg_url, "--decision", "NG", "--json"]) == 0
    assert [r["part_id"] for r in json.loads(capsys.readouterr().out)] == [4_000_000_005, 4_000_000_003]  # newest first
    with open_readonly(pg_url) as ro:
        assert ro.audit_log()[0]["user"] == "anna"


def test_multi_view_parts_on_postgres(pg_url):
    """One row per part plus one per view, migrated schema, the view query, as on SQLite."""
    import numpy as np

    from edge_ad.station.event import InspectionEvent, PackageIdentity, RecordBuilder, ViewEvent, judge
    from edge_ad.station.record import ViewVerdict

    b = RecordBuilder()
    pkg = PackageIdentity("dinomaly-s", "fp32", "ab" * 32)
    img = np.full((20, 30, 3), 50, np.uint8)
    with TraceStore(pg_url, "pg-mv", images=False) as st:
        for part in (1, 2):
            verdicts = [judge(None, "top"), judge(None, "side")] if part == 2 else [
                ViewVerdict("top", True, DefectCode.OK, 0.2, 0.1, 0),
                ViewVerdict("side", True, DefectCode.OK, 0.3, 0.2, 0)]
            rec = b.combine(verdicts, part_id=part, inspection_ms=5.0, recipe=1)
            views = tuple(ViewEvent(v, None, img, {"frame_id": part}, pkg, v.name) for v in verdicts)
            st.record(InspectionEvent(rec, None, img, {}, pkg, "top", views=views))
        assert [(r["part_id"], r["decision"], r["views"]) for r in st.query(station="pg-mv")] == [
            (1, "OK", 2), (2, "FAILED", 2)]
        side = st.query_views("side", station="pg-mv", decisions=["FAILED"])
        assert [(v["part_id"], v["defect_code"], v["frame_id"]) for v in side] == [(2, int(DefectCode.NO_IMAGE), 2)]
    con = psycopg.connect(pg_url)
    types = dict(con.execute("SELECT column_name, data_type FROM information_schema.columns "
                             "WHERE table_name = 'inspection_views'").fetchall())
    assert types["inspection_id"] == "bigint" and types["normalized_score"] == "double precision"
    con.close()


def test_unreachable_server_is_a_config_error_without_the_password():
    with pytest.raises(ConfigError, match=r"postgresql://127.0.0.1:1/x: cannot use this PostgreSQL database") as e:
        TraceStore("postgresql://someone:secret@127.0.0.1:1/x", "st")
    assert "secret" not in str(e.value)


def test_stations_starting_together_migrate_once(pg_url):
    import threading

    admin = psycopg.connect(pg_url, autocommit=True)
    admin.execute("CREATE DATABASE race")
    admin.close()
    url = pg_url.rsplit("/", 1)[0] + "/race"
    errors: list[BaseException] = []

    def open_one(i: int) -> None:
        try:
            TraceStore(url, f"st{i}", images=False).close()
        except BaseException as e:  # collected: every station must come up
            errors.append(e)

    threads = [threading.Thread(target=open_one, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    con = psycopg.connect(url)
    assert con.execute("SELECT version FROM schema_version").fetchall() == [(SCHEMA_VERSION,)]
    con.close()
