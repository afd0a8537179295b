"""OPC UA specifics on loopback against real asyncua peers (the handshake and restart tests of every protocol are
in test_plc_protocols): the node tree, the sample, and security (Basic256Sha256, users, anonymous refused, client
allow-list, URL options, `edge-ad plc-user`)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import cv2
import pytest
from plc_peers import (
    BLOB_IMG,
    DARK_IMG,
    FAST_LINK,
    OpcUaClientPlc,
    QueueSource,
    free_port,
    wait_for,
)

from edge_ad.plc.inspector import Inspector
from edge_ad.plc.link import LoopThread, open_adapter
from edge_ad.runtime import Detector

pytest.importorskip("asyncua")
from asyncua import Client, ua

pytestmark = pytest.mark.slow  # trains/exports models or starts real peers: not in `make test-fast`

ROOT = Path(__file__).resolve().parents[1]


def test_server_node_tree_names_the_opc_40100_state(detector: Detector) -> None:
    port = free_port()
    insp = Inspector(detector, QueueSource(), f"opcua://127.0.0.1:{port}", poll_s=0.002, link_options=FAST_LINK)
    with insp:
        peer = OpcUaClientPlc(port)
        try:
            wait_for(lambda: (peer.refresh(), peer.read("Ready"))[1], 20.0, "Ready")
            assert peer.browse("EdgeAD", "VisionStateMachine", "CurrentState") == "Operational.Ready"
            assert peer.browse("EdgeAD", "RecipeManagement", "ModelId") == 1
            assert peer.browse("EdgeAD", "Status", "TriggersIgnored") == 0
        finally:
            peer.stop()


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
    except Exception:
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
    from edge_ad.passwords import verify_password
    from edge_ad.plc.opcua_security import load_users

    users = tmp_path / "users.yaml"
    monkeypatch.setattr("sys.stdin", io.StringIO("correct horse\n"))
    assert main(["plc-user", str(users), "line", "--password-stdin"]) == 0
    stored = load_users(users)["line"]
    assert verify_password("correct horse", stored) and not verify_password("correct horsf", stored)
    assert "correct horse" not in users.read_text()
    monkeypatch.setattr("sys.stdin", io.StringIO("x\n"))
    assert main(["plc-user", str(users), "bad name!", "--password-stdin"]) == 2
    assert "user name" in capsys.readouterr().err
