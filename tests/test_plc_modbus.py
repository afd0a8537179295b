"""Modbus TCP specifics on loopback (the handshake and restart tests of every protocol are in test_plc_protocols):
writes to the result registers refused, one unit id, loopback by default; `edge-ad serve` end to end and its
SIGTERM shutdown; the sample."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import cv2
import pytest
from plc_peers import BLOB_IMG, DARK_IMG, free_port, wait_for

from edge_ad.plc.modbus import decode_block, encode_signal
from edge_ad.plc.signals import BY_NAME, REGISTER_COUNT, SIGNALS

pytest.importorskip("pymodbus")
ROOT = Path(__file__).resolve().parents[1]


def _images(tmp_path: Path) -> Path:
    d = tmp_path / "images"
    d.mkdir()
    for i, img in enumerate((BLOB_IMG, DARK_IMG, BLOB_IMG)):
        cv2.imwrite(str(d / f"{i}.png"), img)
    return d


def test_serve_cli_free_run_to_the_end(plc_packages: dict[str, Path], tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    from edge_ad.cli.main import main

    rc = main(["serve", str(plc_packages["a"]), "--source", str(_images(tmp_path)), "--plc",
               f"modbus://127.0.0.1:{free_port()}", "--trigger", "free", "--no-ack", "--hold-ms", "0",
               "--stop-at-end", "--duration-s", "30", "--backend", "onnxruntime", "--status-every-s", "0.2"])
    err = capsys.readouterr().err
    assert rc == 0, err
    assert "stopped." in err and "recipe=1 n=3 ok=1 ng=2 late=0 err=0" in err and "queue=0" in err
    assert main(["serve", str(plc_packages["a"]), "--source", str(tmp_path), "--plc", "ftp://x:1"]) == 2


def test_serve_sigterm_stops_cleanly(plc_packages: dict[str, Path], tmp_path: Path) -> None:
    port = free_port()
    cmd = [sys.executable, "-m", "edge_ad.cli.main", "serve", str(plc_packages["a"]), "--source",
           str(_images(tmp_path)), "--plc", f"modbus://127.0.0.1:{port}", "--backend", "onnxruntime",
           "--status-every-s", "0.2"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=env, cwd=ROOT)
    try:
        line = ""
        end = time.monotonic() + 60
        while "plc=up" not in line and time.monotonic() < end and proc.poll() is None:
            line = proc.stderr.readline() if proc.stderr else ""
        assert "plc=up" in line, "serve did not come up"
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert proc.returncode == 0, err
    assert "SIGTERM, stopping" in err and "stopped." in err
    with socket.socket() as s:  # the server socket is closed
        assert s.connect_ex(("127.0.0.1", port)) != 0


def test_sample_plc_modbus_runs(plc_packages: dict[str, Path], tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, str(ROOT / "samples" / "plc_modbus.py"), str(plc_packages["a"]),
                          str(_images(tmp_path)), "--port", str(free_port())], capture_output=True, text=True,
                         timeout=80, check=False, env={**os.environ, "PYTHONPATH": str(ROOT)}, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("part ")]
    assert [ln.split()[2] for ln in lines] == ["NG", "OK", "NG"], out.stdout


def test_server_refuses_client_writes_to_outputs_and_other_units() -> None:
    """Spoofing: no client may write a result/status register or coil; only the configured unit answers."""
    from pymodbus.client import ModbusTcpClient

    from edge_ad.plc.modbus import adapter_from_url

    port = free_port()
    adapter = adapter_from_url(f"modbus://127.0.0.1:{port}?unit=3")
    adapter.connect()
    client = ModbusTcpClient("127.0.0.1", port=port, timeout=1.0, retries=0)
    try:
        wait_for(client.connect, 10.0, "Modbus server")
        adapter.write_outputs({"OK": False, "NG": True, "AnomalyScore": 0.9})  # internal writes still go through
        ok_reg, score_reg = BY_NAME["OK"].register, BY_NAME["AnomalyScore"].register
        attempts = [client.write_register(ok_reg, 1, device_id=3),
                    client.write_registers(ok_reg - 1, [0, 1, 0], device_id=3),  # ResultValid..NG
                    client.write_registers(score_reg, encode_signal(BY_NAME["AnomalyScore"], 0.0), device_id=3),
                    client.write_registers(5, [0] * 10, device_id=3),  # starts in the inputs, runs into outputs
                    client.write_register(8, 1, device_id=3),  # the gap between the blocks
                    client.write_coil(ok_reg, True, device_id=3),  # shared block: a coil is a register's bit
                    client.mask_write_register(address=ok_reg, and_mask=0, or_mask=1, device_id=3)]
        for rr in attempts:
            assert rr.isError() and rr.exception_code == 2, rr
        assert adapter.rejected_writes == len(attempts)
        out = adapter.read_outputs()
        rr = client.read_holding_registers(0, count=REGISTER_COUNT, device_id=3)
        wire = decode_block(rr.registers, 0, SIGNALS)
        assert (wire["OK"], wire["NG"], out["OK"]) == (False, True, False)
        assert abs(wire["AnomalyScore"] - 0.9) < 1e-6
        assert not client.write_register(BY_NAME["Trigger"].register, 1, device_id=3).isError()  # inputs writable
        assert adapter.read_inputs()["Trigger"] is True
        other = client.read_holding_registers(0, count=4, device_id=1)  # not our unit id
        assert other.isError() and other.exception_code == 0x0B, other
    finally:
        client.close()
        adapter.close()


def test_server_url_defaults_to_loopback() -> None:
    from edge_ad.plc.link import PlcError
    from edge_ad.plc.modbus import ModbusServerAdapter, adapter_from_url

    a = adapter_from_url("modbus://:5020")
    assert isinstance(a, ModbusServerAdapter) and a.host == "127.0.0.1" and a.unit == 1
    assert ModbusServerAdapter().host == "127.0.0.1"
    assert adapter_from_url("modbus://0.0.0.0:5020").host == "0.0.0.0"  # the network only when asked for
    for bad in ("modbus://:5020?unit=0", "modbus://:5020?unit=300", "modbus-client://:502"):
        with pytest.raises(PlcError, match="unit|expected SCHEME"):
            adapter_from_url(bad)
