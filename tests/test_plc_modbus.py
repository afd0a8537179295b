"""Modbus TCP on loopback against real pymodbus peers: edge-ad as server (PLC = pymodbus client) and as client
(PLC = pymodbus server that restarts mid-run); `edge-ad serve` end to end and its SIGTERM shutdown; the sample."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

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
from edge_ad.plc.link import LoopThread, PlcLink
from edge_ad.plc.modbus import ModbusClientAdapter, decode_block, encode_signal
from edge_ad.plc.signals import (
    BY_NAME,
    REGISTER_COUNT,
    SIGNALS,
    TYPE_REGISTERS,
    DefectCode,
)
from edge_ad.runtime import Detector

pytest.importorskip("pymodbus")
ROOT = Path(__file__).resolve().parents[1]
__all__ = ["detector", "plc_packages"]  # session fixtures reused from test_plc_inspector


class ClientPlc:
    """The PLC as a Modbus client of edge-ad's server: one block read per scan, single-signal writes."""

    def __init__(self, port: int) -> None:
        from pymodbus.client import ModbusTcpClient

        self.client = ModbusTcpClient("127.0.0.1", port=port, timeout=1.0, retries=0)
        wait_for(self.client.connect, 10.0, "Modbus server")
        self.cache: dict[str, Any] = {}

    def refresh(self) -> None:
        rr = self.client.read_holding_registers(0, count=REGISTER_COUNT, device_id=1)
        assert not rr.isError(), rr
        self.cache = decode_block(rr.registers, 0, SIGNALS)

    def write(self, name: str, value: Any) -> None:
        sig = BY_NAME[name]
        assert not self.client.write_registers(sig.register, encode_signal(sig, value), device_id=1).isError()
        self.cache[name] = value

    def program(self) -> PlcProgram:
        return PlcProgram(lambda n: self.cache[n], self.write, self.refresh)


class ServerPlc:
    """The PLC as a Modbus server holding the signal map; its program reads/writes its own registers."""

    def __init__(self, port: int) -> None:
        from pymodbus.server import ModbusTcpServer
        from pymodbus.simulator import DataType, SimData, SimDevice

        self.loop = LoopThread("test-plc-modbus")

        async def _start() -> Any:
            dev = SimDevice(id=0, simdata=[SimData(address=0, values=[0] * REGISTER_COUNT, datatype=DataType.REGISTERS)])
            srv = ModbusTcpServer(dev, address=("127.0.0.1", port))
            await srv.serve_forever(background=True)
            return srv

        self.server = self.loop.run(_start(), 10.0, "test PLC")

    def read(self, name: str) -> Any:
        sig = BY_NAME[name]
        words = self.loop.run(self.server.async_getValues(1, 3, sig.register, TYPE_REGISTERS[sig.type]), 2.0,
                              "PLC read")
        return decode_block(words, sig.register, [sig])[name]

    def write(self, name: str, value: Any) -> None:
        sig = BY_NAME[name]
        self.loop.run(self.server.async_setValues(1, 16, sig.register, encode_signal(sig, value)), 2.0, "PLC write")

    def stop(self) -> None:
        self.loop.run(self.server.shutdown(), 5.0, "PLC shutdown")
        self.loop.stop()


def test_server_mode_handshake_and_time_budget(detector: Detector) -> None:
    port = free_port()
    src = QueueSource()
    slow = SlowDetector(detector, 0.05)
    insp = Inspector(slow, src, f"modbus://127.0.0.1:{port}", budget_s=0.3, poll_s=0.002, link_options=FAST_LINK)
    with insp:
        plc_io = ClientPlc(port)
        plc = plc_io.program()
        try:
            plc.run_until(lambda: plc_io.cache.get("Ready"), what="Ready")
            for part, img, ok in ((5001, BLOB_IMG, False), (5002, DARK_IMG, True)):
                src.push(img)
                plc.trigger(part)
                plc.run_until(lambda p=part: plc.results and plc.results[-1]["PartIdEcho"] == p, what=f"part {part}")
                assert (plc.results[-1]["OK"], plc.results[-1]["NG"]) == (ok, not ok)
                plc.run_until(lambda: plc_io.cache["Ready"] and not plc_io.cache["TriggerAck"], what="Ready again")
            assert plc.busy_before_toggle(), "Busy/TriggerAck must be set before ResultValid toggles"
            slow.delay = 0.6  # longer than the 0.3 s budget
            src.push(DARK_IMG)
            plc.trigger(5003)
            plc.run_until(lambda: len(plc.results) == 3, what="fail-safe result")
            assert (plc.results[-1]["Late"], plc.results[-1]["NG"], plc.results[-1]["DefectCode"]) == \
                (True, True, DefectCode.LATE)
        finally:
            plc_io.client.close()
    assert plc.seqs() == [1, 2, 3]


def test_client_mode_plc_restart_loses_no_result(detector: Detector) -> None:
    port = free_port()
    plc_mem = ServerPlc(port)
    src = QueueSource()
    adapter = ModbusClientAdapter("127.0.0.1", port, timeout=0.5)
    insp = Inspector(detector, src, PlcLink(adapter, **FAST_LINK), trigger="camera", poll_s=0.002)
    plc = PlcProgram(plc_mem.read, plc_mem.write)
    try:
        with insp:
            for img in (BLOB_IMG, DARK_IMG):
                src.push(img)
            plc.run_until(lambda: plc.seqs() == [1, 2], what="first two results")
            plc_mem.stop()  # PLC restarts: down while three parts are inspected
            for img in (DARK_IMG, BLOB_IMG, DARK_IMG):
                src.push(img)
            wait_for(lambda: insp.stats.inspections == 5 and not insp.link.connected, what="inspections while down")
            assert insp.link.queue_depth == 3
            plc_mem = ServerPlc(port)  # back with zeroed memory on the same port
            plc.read, plc.write = plc_mem.read, plc_mem.write
            plc.run_until(lambda: plc.seqs() == [1, 2, 3, 4, 5], timeout=15.0, what="queued results after restart")
            wait_for(lambda: plc_mem.read("Ready") or plc_mem.read("VisionState") == 5, what="status rewritten")
    finally:
        plc_mem.stop()
    by_seq = {int(r["ResultSeq"]): r for r in plc.results}
    assert [by_seq[k]["PartIdEcho"] for k in range(1, 6)] == [0, 1, 2, 3, 4]  # frame ids, in order
    assert [by_seq[k]["OK"] for k in range(1, 6)] == [False, True, True, False, True]
    assert insp.link.reconnects >= 1 and insp.link.overflows == 0


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
               "--stop-at-end", "--duration", "30", "--backend", "onnxruntime", "--status-every", "0.2"])
    err = capsys.readouterr().err
    assert rc == 0, err
    assert "stopped." in err and "recipe=1 n=3 ok=1 ng=2 late=0 err=0" in err and "queue=0" in err
    assert main(["serve", str(plc_packages["a"]), "--source", str(tmp_path), "--plc", "ftp://x:1"]) == 2


def test_serve_sigterm_stops_cleanly(plc_packages: dict[str, Path], tmp_path: Path) -> None:
    port = free_port()
    cmd = [sys.executable, "-m", "edge_ad.cli.main", "serve", str(plc_packages["a"]), "--source",
           str(_images(tmp_path)), "--plc", f"modbus://127.0.0.1:{port}", "--backend", "onnxruntime",
           "--status-every", "0.2"]
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
