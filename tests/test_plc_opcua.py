"""OPC UA on loopback against real asyncua peers: edge-ad as server (PLC = asyncua Client; node tree, handshake,
time budget) and as client writing into the PLC's own server, which restarts mid-run; the OPC UA sample."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import quote

import cv2
import pytest
from test_plc_inspector import (
    BLOB_IMG,
    DARK_IMG,
    FAST_LINK,
    PlcProgram,
    QueueSource,
    SlowDetector,
    detector,
    free_port,
    plc_packages,
    wait_for,
)

from edge_ad.plc.inspector import Inspector
from edge_ad.plc.link import LoopThread, PlcLink, open_adapter
from edge_ad.plc.opcua import OpcUaClientAdapter
from edge_ad.plc.signals import SIGNALS, DefectCode, coerce
from edge_ad.runtime import Detector

pytest.importorskip("asyncua")
from asyncua import Client, Server, ua

ROOT = Path(__file__).resolve().parents[1]
__all__ = ["detector", "plc_packages"]  # session fixtures reused from test_plc_inspector
_VT = {"BOOL": ua.VariantType.Boolean, "UINT16": ua.VariantType.UInt16, "UINT32": ua.VariantType.UInt32,
       "REAL": ua.VariantType.Float}
SIG = {s.name: s for s in SIGNALS}


class ClientPlc:
    """The PLC/SCADA as an asyncua Client of edge-ad's server: one Read of all signals per scan."""

    def __init__(self, port: int) -> None:
        self.loop = LoopThread("test-plc-opcua-client")
        self.client = Client(f"opc.tcp://127.0.0.1:{port}/", timeout=2)
        wait_for(self._try_connect, 20.0, "OPC UA server")
        self.nodes = {s.name: self.client.get_node(f"ns=2;s=EdgeAD.{s.name}") for s in SIGNALS}
        self.cache: dict[str, Any] = {}

    def _try_connect(self) -> bool:
        try:
            self.loop.run(self.client.connect(), 5.0, "connect")
            return True
        except (OSError, ConnectionError, TimeoutError):
            return False

    def refresh(self) -> None:
        values = self.loop.run(self.client.read_values(list(self.nodes.values())), 2.0, "read")
        self.cache = dict(zip(self.nodes, values))

    def write(self, name: str, value: Any) -> None:
        dv = ua.DataValue(ua.Variant(coerce(SIG[name], value), _VT[SIG[name].type]))
        self.loop.run(self.nodes[name].write_value(dv), 2.0, "write")
        self.cache[name] = value

    def browse(self, *path: str) -> Any:
        """Value of Objects/<path...> by browse names in namespace 2."""
        async def _get() -> Any:
            node = await self.client.nodes.objects.get_child([f"2:{p}" for p in path])
            return await node.read_value()

        return self.loop.run(_get(), 2.0, "browse")

    def close(self) -> None:
        try:
            self.loop.run(self.client.disconnect(), 5.0, "disconnect")
        finally:
            self.loop.stop()


class ServerPlc:
    """The PLC's own OPC UA server with a 'VisionDB' object holding every signal (node ids ns=2;s=VisionDB.X)."""

    def __init__(self, port: int) -> None:
        self.loop = LoopThread("test-plc-opcua-server")
        self.server: Any = self.loop.run(self._start(port), 30.0, "PLC server")

    async def _start(self, port: int) -> Any:
        server = Server()
        await server.init()
        server.set_endpoint(f"opc.tcp://127.0.0.1:{port}/")
        server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
        idx = await server.register_namespace("urn:test-plc")
        db = await server.nodes.objects.add_object(ua.NodeId("VisionDB", idx), ua.QualifiedName("VisionDB", idx))
        self.ids = {}
        for s in SIGNALS:
            node = await db.add_variable(ua.NodeId(f"VisionDB.{s.name}", idx), ua.QualifiedName(s.name, idx),
                                         ua.Variant(coerce(s, 0), _VT[s.type]))
            await node.set_writable()
            self.ids[s.name] = node.nodeid
        await server.start()
        return server

    def read(self, name: str) -> Any:
        dv = self.loop.run(self._read(name), 2.0, "PLC read")
        return dv.Value.Value

    async def _read(self, name: str) -> Any:
        return await self.server.get_node(self.ids[name]).read_data_value()

    def write(self, name: str, value: Any) -> None:
        dv = ua.DataValue(ua.Variant(coerce(SIG[name], value), _VT[SIG[name].type]))
        self.loop.run(self.server.write_attribute_value(self.ids[name], dv), 2.0, "PLC write")

    def stop(self) -> None:
        try:
            self.loop.run(self.server.stop(), 10.0, "PLC stop")
        finally:
            self.loop.stop()


def test_server_node_tree_handshake_and_time_budget(detector: Detector) -> None:
    port = free_port()
    src = QueueSource()
    slow = SlowDetector(detector, 0.05)
    insp = Inspector(slow, src, f"opcua://127.0.0.1:{port}", budget_s=0.3, poll_s=0.002, link_options=FAST_LINK)
    with insp:
        plc_io = ClientPlc(port)
        plc = PlcProgram(lambda n: plc_io.cache[n], plc_io.write, plc_io.refresh)
        try:
            plc.run_until(lambda: plc_io.cache.get("Ready"), what="Ready")
            assert plc_io.browse("EdgeAD", "VisionStateMachine", "CurrentState") == "Operational.Ready"
            assert plc_io.browse("EdgeAD", "RecipeManagement", "ModelId") == 1
            for part, img, ok in ((9001, BLOB_IMG, False), (9002, DARK_IMG, True)):
                src.push(img)
                plc.trigger(part)
                plc.run_until(lambda p=part: plc.results and plc.results[-1]["PartIdEcho"] == p, what=f"part {part}")
                assert (plc.results[-1]["OK"], plc.results[-1]["NG"]) == (ok, not ok)
                assert (plc.results[-1]["AnomalyScore"] > 0.5) == (not ok)
                plc.run_until(lambda: plc_io.cache["Ready"] and not plc_io.cache["TriggerAck"], what="Ready again")
            assert plc.busy_before_toggle(), "Busy/TriggerAck must be set before ResultValid toggles"
            assert plc_io.browse("EdgeAD", "ResultManagement", "ResultSeq") == 2
            slow.delay = 0.6
            src.push(DARK_IMG)
            plc.trigger(9003)
            plc.run_until(lambda: len(plc.results) == 3, what="fail-safe result")
            assert (plc.results[-1]["Late"], plc.results[-1]["DefectCode"]) == (True, DefectCode.LATE)
        finally:
            plc_io.close()
    assert plc.seqs() == [1, 2, 3]


def test_client_mode_plc_server_restart_loses_no_result(detector: Detector) -> None:
    port = free_port()
    plc_mem = ServerPlc(port)
    src = QueueSource()
    url = f"opcua-client://127.0.0.1:{port}/?nodes={quote('ns=2;s=VisionDB.{name}')}&timeout=1"
    adapter = open_adapter(url)
    assert isinstance(adapter, OpcUaClientAdapter) and adapter.template == "ns=2;s=VisionDB.{name}"
    insp = Inspector(detector, src, PlcLink(adapter, **FAST_LINK), trigger="camera", poll_s=0.002)
    plc = PlcProgram(plc_mem.read, plc_mem.write)
    try:
        with insp:
            src.push(BLOB_IMG)
            plc.run_until(lambda: plc.seqs() == [1], what="first result")
            plc_mem.stop()
            for img in (DARK_IMG, BLOB_IMG, DARK_IMG):
                src.push(img)
            wait_for(lambda: insp.stats.inspections == 4 and not insp.link.connected, timeout=10.0,
                     what="inspections while down")
            plc_mem = ServerPlc(port)
            plc.read, plc.write = plc_mem.read, plc_mem.write
            plc.run_until(lambda: plc.seqs() == [1, 2, 3, 4], timeout=30.0, what="queued results after restart")
    finally:
        plc_mem.stop()
    by_seq = {int(r["ResultSeq"]): r for r in plc.results}
    assert [by_seq[k]["OK"] for k in range(1, 5)] == [False, True, False, True]
    assert [by_seq[k]["PartIdEcho"] for k in range(1, 5)] == [0, 1, 2, 3]


def test_sample_plc_opcua_runs(plc_packages: dict[str, Path], tmp_path: Path) -> None:
    d = tmp_path / "images"
    d.mkdir()
    for i, img in enumerate((DARK_IMG, BLOB_IMG)):
        cv2.imwrite(str(d / f"{i}.png"), img)
    out = subprocess.run([sys.executable, str(ROOT / "samples" / "plc_opcua.py"), str(plc_packages["a"]), str(d),
                          "--port", str(free_port())], capture_output=True, text=True, timeout=80, check=False,
                         env={**os.environ, "PYTHONPATH": str(ROOT)}, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("part ")]
    assert [ln.split()[2] for ln in lines] == ["OK", "NG"], out.stdout


# ---- security ------------------------------------------------------------------------------------------------
def _secure_client(port: int, certs: Path, user: str | None, password: str | None, mode: str = "SignAndEncrypt",
                   server_cert: Path | None = None) -> tuple[LoopThread, Client]:
    """A raw asyncua client (a third-party PLC/SCADA) with Basic256Sha256 and its own self-signed certificate."""
    from asyncua.crypto.security_policies import SecurityPolicyBasic256Sha256

    from edge_ad.plc.opcua_security import CLIENT_URI, ensure_certificate

    loop = LoopThread("test-opcua-secure-client")
    client = Client(f"opc.tcp://127.0.0.1:{port}/", timeout=2)
    client.application_uri = CLIENT_URI
    cert, key = ensure_certificate(certs, "client", CLIENT_URI)
    loop.run(client.set_security(SecurityPolicyBasic256Sha256, str(cert), str(key),
                                 server_certificate=str(server_cert) if server_cert else None,
                                 mode=getattr(ua.MessageSecurityMode, mode)), 10.0, "set_security")
    if user is not None:
        client.set_user(user)
        client.set_password(password or "")
    return loop, client


def _connects(loop: LoopThread, client: Client) -> bool:
    try:
        loop.run(client.connect(), 10.0, "connect")
    except Exception:  # noqa: BLE001 - any refusal (status code, closed channel) counts as refused
        return False
    loop.run(client.disconnect(), 5.0, "disconnect")
    return True


def test_secured_server_requires_a_user_and_encrypts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from edge_ad.plc.opcua_security import set_user

    users = tmp_path / "users.yaml"
    set_user(users, "line", "s3cret-pw")
    assert "s3cret-pw" not in users.read_text() and (users.stat().st_mode & 0o077) == 0
    port = free_port()
    srv_certs, cli_certs = tmp_path / "server", tmp_path / "client"
    server = open_adapter(f"opcua://127.0.0.1:{port}?security=sign,encrypt&users={users}&certs={srv_certs}")
    server.connect()
    try:
        assert (srv_certs / "server_cert.der").is_file() and (srv_certs / "server_key.pem").stat().st_mode & 0o077 == 0
        server.write_outputs({"OK": True, "NG": False, "AnomalyScore": 0.25})
        pinned = srv_certs / "server_cert.der"
        # edge-ad's own client, password from the environment, server certificate pinned
        monkeypatch.setenv("EDGE_AD_OPCUA_PASSWORD", "s3cret-pw")
        ours = open_adapter(f"opcua-client://127.0.0.1:{port}/?security=encrypt&user=line&certs={cli_certs}"
                            f"&server_cert={pinned}")
        ours.connect()
        try:
            out = ours.read_outputs()
            assert out["OK"] is True and abs(out["AnomalyScore"] - 0.25) < 1e-6
        finally:
            ours.close()
        # a third-party client with the right password, both modes
        for mode in ("Sign", "SignAndEncrypt"):
            assert _connects(*_secure_client(port, cli_certs, "line", "s3cret-pw", mode, pinned)), mode
        # refused: anonymous, wrong password, unknown user, no security at all
        assert not _connects(*_secure_client(port, cli_certs, None, None, server_cert=pinned))
        assert not _connects(*_secure_client(port, cli_certs, "line", "wrong", server_cert=pinned))
        assert not _connects(*_secure_client(port, cli_certs, "intruder", "s3cret-pw", server_cert=pinned))
        plain_loop, plain = LoopThread("test-opcua-plain"), Client(f"opc.tcp://127.0.0.1:{port}/", timeout=2)
        assert not _connects(plain_loop, plain)
        # an authenticated client still cannot write a result node (outputs are read-only for every client)
        loop, client = _secure_client(port, cli_certs, "line", "s3cret-pw", server_cert=pinned)
        loop.run(client.connect(), 10.0, "connect")
        try:
            ok_node = client.get_node("ns=2;s=EdgeAD.OK")
            with pytest.raises(ua.UaStatusCodeError):
                loop.run(ok_node.write_value(ua.DataValue(ua.Variant(False, ua.VariantType.Boolean))), 5.0, "w")
            trig = client.get_node("ns=2;s=EdgeAD.Trigger")
            loop.run(trig.write_value(ua.DataValue(ua.Variant(True, ua.VariantType.Boolean))), 5.0, "trigger")
        finally:
            loop.run(client.disconnect(), 5.0, "disconnect")
            loop.stop()
        assert server.read_inputs()["Trigger"] is True and server.read_outputs()["OK"] is True
    finally:
        server.close()


def test_secured_server_trust_list_refuses_unknown_client_certificates(tmp_path: Path) -> None:
    from edge_ad.plc.opcua_security import set_user

    users, trust = tmp_path / "users.yaml", tmp_path / "trusted"
    set_user(users, "line", "pw")
    trust.mkdir()
    known, stranger = tmp_path / "known", tmp_path / "stranger"
    from edge_ad.plc.opcua_security import CLIENT_URI, ensure_certificate

    cert, _ = ensure_certificate(known, "client", CLIENT_URI)
    (trust / "line-pc.der").write_bytes(cert.read_bytes())
    port = free_port()
    server = open_adapter(f"opcua://127.0.0.1:{port}?security=encrypt&users={users}&certs={tmp_path / 'srv'}"
                          f"&trust={trust}")
    server.connect()
    try:
        pinned = tmp_path / "srv" / "server_cert.der"
        assert _connects(*_secure_client(port, known, "line", "pw", server_cert=pinned))
        assert not _connects(*_secure_client(port, stranger, "line", "pw", server_cert=pinned))
    finally:
        server.close()


def test_security_url_options_are_checked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from edge_ad.plc.link import PlcError
    from edge_ad.plc.opcua import OpcUaServerAdapter

    monkeypatch.delenv("EDGE_AD_OPCUA_PASSWORD", raising=False)
    cases = {"opcua://:4840?security=encrypt": "needs users=FILE",
             "opcua://:4840?security=rot13&users=u.yaml": "security: expected",
             "opcua://:4840?users=u.yaml": "without security",
             "opcua-client://h:4840/?security=sign": "needs user=NAME",
             "opcua-client://h:4840/?security=sign&user=line": "EDGE_AD_OPCUA_PASSWORD"}
    for url, msg in cases.items():
        with pytest.raises(PlcError, match=msg):
            open_adapter(url)
    a = open_adapter("opcua://:4840")
    assert isinstance(a, OpcUaServerAdapter) and a.host == "127.0.0.1" and not a.security.enabled
    plain = tmp_path / "users.yaml"
    plain.write_text("users: {line: hunter2}\n")
    bad = open_adapter(f"opcua://127.0.0.1:{free_port()}?security=sign&users={plain}&certs={tmp_path}")
    from edge_ad.errors import ConfigError

    with pytest.raises(ConfigError, match="not a plain password"):
        bad.connect()


def test_plc_user_cli_writes_a_hash(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    import io

    from edge_ad.cli.main import main
    from edge_ad.plc.opcua_security import load_users, verify_password

    users = tmp_path / "users.yaml"
    monkeypatch.setattr("sys.stdin", io.StringIO("correct horse\n"))
    assert main(["plc-user", str(users), "line", "--password-stdin"]) == 0
    stored = load_users(users)["line"]
    assert verify_password("correct horse", stored) and not verify_password("correct horsf", stored)
    assert "correct horse" not in users.read_text()
    monkeypatch.setattr("sys.stdin", io.StringIO("x\n"))
    assert main(["plc-user", str(users), "bad name!", "--password-stdin"]) == 2
    assert "user name" in capsys.readouterr().err
