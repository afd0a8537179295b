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
