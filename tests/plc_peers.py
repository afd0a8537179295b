"""Shared PLC test helpers (imported by the PLC, fail-safe and hostile tests; fixtures live in conftest.py):
polling helpers, a camera the test feeds, a slow detector, the PLC side of the handshake (`PlcProgram`), an
in-memory adapter, and one real peer per protocol and role, all with the same read/write/refresh/stop face.

Peer kinds are named by edge-ad's role: "modbus-server" and "opcua-server" (edge-ad serves, the peer is the PLC as
a client), "modbus-client", "opcua-client" and "s7" (edge-ad is the client of the PLC's own server, which a test
can restart with zeroed memory).
"""

from __future__ import annotations

import queue
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import quote

import numpy as np
from runtime_fixtures import blob_image

from edge_ad.plc.signals import (
    BY_NAME,
    REGISTER_COUNT,
    SIGNALS,
    TYPE_REGISTERS,
    coerce,
    default_inputs,
    default_outputs,
)
from edge_ad.plc.transport import LoopThread, PlcConnectionError
from edge_ad.sources.base import Source
from edge_ad.sources.frame import Frame

DARK_IMG = blob_image(box=(0, 0, 1, 1))  # score ~0.08: OK with threshold 0.5
BLOB_IMG = blob_image()  # score 1.0: NG
FAST_LINK = {"heartbeat_s": 0.05, "backoff_s": (0.02, 0.1), "plc_watchdog_s": 0.0}
SERVER_KINDS = ("modbus-server", "opcua-server")
CLIENT_KINDS = ("modbus-client", "opcua-client", "s7")
KINDS = SERVER_KINDS + CLIENT_KINDS
LIBRARY = {"modbus-server": "pymodbus", "modbus-client": "pymodbus", "opcua-server": "asyncua",
           "opcua-client": "asyncua", "s7": "snap7"}


def free_port() -> int:
    """A free TCP port on 127.0.0.1 for a loopback protocol peer."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(cond: Callable[[], Any], timeout: float = 5.0, what: str = "condition") -> Any:
    """Poll `cond` every 5 ms until truthy (returned) or fail after `timeout` seconds."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        v = cond()
        if v:
            return v
        time.sleep(0.005)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


class QueueSource(Source):
    """A camera the test feeds: `push(image)` delivers one frame (image None = undecodable frame)."""

    def __init__(self) -> None:
        super().__init__("test-camera", poll_s=0.05)
        self._q: queue.Queue[tuple[np.ndarray | None, str | None]] = queue.Queue()

    def push(self, image: np.ndarray | None, error: str | None = None) -> None:
        self._q.put((image, error))

    def end(self) -> None:
        """No more frames: the source reports finished."""
        self._q.put((None, "__end__"))

    def _open(self) -> None:
        """Nothing to connect."""

    def _close(self) -> None:
        """Nothing to release."""

    def _grab(self, timeout: float) -> Frame | None:
        try:
            image, error = self._q.get(timeout=timeout)
        except queue.Empty:
            return None
        if error == "__end__":
            self._finished = True
            return None
        return self._emit(image, "BGR8", error=error)


class SlowDetector:
    """Delegates to a Detector after `delay` seconds (to exercise the time budget and observe Busy)."""

    def __init__(self, det: Any, delay: float) -> None:
        self.det, self.delay = det, delay
        self.package, self.threshold = det.package, det.threshold

    @property
    def sensitivity(self) -> float:
        return float(self.det.sensitivity)

    @sensitivity.setter
    def sensitivity(self, value: float) -> None:
        self.det.sensitivity = value

    def predict(self, image: Any, frame: dict[str, Any] | None = None) -> Any:
        time.sleep(self.delay)
        return self.det.predict(image, frame=frame)

    def close(self) -> None:
        """The wrapped detector belongs to the test."""


class PlcProgram:
    """The PLC side of the handshake over `read(name)`/`write(name, value)` on the PLC's view of the signals.

    Acknowledges every new result (ResultValid != ResultAck -> record it, ResultAck := ResultValid) and drops
    Trigger once the result of the current trigger is in, like a PLC program would.
    """

    def __init__(self, read: Callable[[str], Any], write: Callable[[str, Any], None],
                 refresh: Callable[[], None] | None = None) -> None:
        self.read, self.write, self.refresh = read, write, refresh
        self.results: list[dict[str, Any]] = []
        self.trace: list[tuple[bool, bool, bool, bool]] = []  # (Ready, Busy, TriggerAck, ResultValid) per scan

    def cycle(self) -> None:
        """One PLC scan."""
        if self.refresh is not None:
            self.refresh()
        valid = bool(self.read("ResultValid"))
        self.trace.append((bool(self.read("Ready")), bool(self.read("Busy")), bool(self.read("TriggerAck")), valid))
        if valid != bool(self.read("ResultAck")):
            rec = {k: self.read(k) for k in ("ResultSeq", "PartIdEcho", "OK", "NG", "Late", "DefectCode",
                                             "AnomalyScore", "ModelId", "Busy", "ViewNG", "ViewFault",
                                             "ViewDefectCode1", "ViewDefectCode2")}
            self.results.append(rec)
            self.write("ResultAck", valid)
            if self.read("Trigger"):
                self.write("Trigger", False)

    def trigger(self, part_id: int) -> None:
        self.write("PartId", part_id)
        self.write("Trigger", True)

    def run_until(self, cond: Callable[[], Any], timeout: float = 10.0, what: str = "PLC condition") -> Any:
        """Scan every 5 ms until `cond()` is truthy (bounded)."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            self.cycle()
            v = cond()
            if v:
                return v
            time.sleep(0.005)
        raise AssertionError(f"timed out after {timeout} s waiting for {what}; results so far {self.results}")

    def busy_before_toggle(self) -> bool:
        """True if, in the trace, Busy and TriggerAck were seen set before each ResultValid toggle."""
        seen, prev_valid = False, self.trace[0][3] if self.trace else False
        for _ready, busy, ack, valid in self.trace:
            if valid != prev_valid:
                if not seen:
                    return False
                seen, prev_valid = False, valid
            seen = seen or (busy and ack)
        return True

    def seqs(self) -> list[int]:
        """Result sequence numbers in arrival order, duplicates removed (delivery is at-least-once)."""
        return list(dict.fromkeys(int(r["ResultSeq"]) for r in self.results))


class MemoryAdapter:
    """PLC memory in a dict; `down = True` makes every call fail like a dead connection; writes are logged."""

    description = "memory"

    def __init__(self) -> None:
        self.inputs = default_inputs()
        self.outputs = default_outputs()
        self.writes: list[dict[str, Any]] = []
        self.down = False
        self.lock = threading.Lock()

    def _check(self) -> None:
        if self.down:
            raise PlcConnectionError("memory: down")

    def connect(self) -> None:
        self._check()

    def close(self) -> None:
        """Nothing to release."""

    def read_inputs(self) -> dict[str, Any]:
        self._check()
        with self.lock:
            return dict(self.inputs)

    def read_outputs(self) -> dict[str, Any]:
        self._check()
        with self.lock:
            return dict(self.outputs)

    def write_outputs(self, values: Any) -> None:
        self._check()
        with self.lock:
            self.outputs.update(values)
            self.writes.append(dict(values))

    def get(self, name: str) -> Any:
        with self.lock:
            return self.outputs[name] if name in self.outputs else self.inputs[name]

    def put(self, name: str, value: Any) -> None:
        with self.lock:
            self.inputs[name] = value

    def program(self) -> PlcProgram:
        return PlcProgram(self.get, self.put)


# ---- real peers --------------------------------------------------------------------------------------------------
class ModbusClientPlc:
    """The PLC as a Modbus client of edge-ad's server: one block read per scan, single-signal writes."""

    def __init__(self, port: int) -> None:
        from pymodbus.client import ModbusTcpClient

        self.client = ModbusTcpClient("127.0.0.1", port=port, timeout=1.0, retries=0)
        self.cache: dict[str, Any] = {}
        self._up = False

    def refresh(self) -> None:
        from edge_ad.plc.modbus import decode_block

        if not self._up:
            wait_for(self.client.connect, 10.0, "Modbus server")
            self._up = True
        rr = self.client.read_holding_registers(0, count=REGISTER_COUNT, device_id=1)
        assert not rr.isError(), rr
        self.cache = decode_block(rr.registers, 0, SIGNALS)

    def read(self, name: str) -> Any:
        return self.cache[name]

    def write(self, name: str, value: Any) -> None:
        from edge_ad.plc.modbus import encode_signal

        sig = BY_NAME[name]
        assert not self.client.write_registers(sig.register, encode_signal(sig, value), device_id=1).isError()
        self.cache[name] = value

    def stop(self) -> None:
        self.client.close()


class ModbusServerPlc:
    """The PLC as a Modbus server holding the signal map; its program reads/writes its own registers."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.start()

    def start(self) -> None:
        """(Re)start on the port with zeroed memory."""
        from pymodbus.server import ModbusTcpServer
        from pymodbus.simulator import DataType, SimData, SimDevice

        self.loop = LoopThread("test-plc-modbus")

        async def _serve() -> Any:
            dev = SimDevice(
                id=0, simdata=[SimData(address=0, values=[0] * REGISTER_COUNT, datatype=DataType.REGISTERS)]
            )
            srv = ModbusTcpServer(dev, address=("127.0.0.1", self.port))
            await srv.serve_forever(background=True)
            return srv

        self.server = self.loop.run(_serve(), 10.0, "test PLC")

    def refresh(self) -> None:
        """The PLC reads its own memory."""

    def read(self, name: str) -> Any:
        from edge_ad.plc.modbus import decode_block

        sig = BY_NAME[name]
        words = self.loop.run(self.server.async_getValues(1, 3, sig.register, TYPE_REGISTERS[sig.type]), 2.0,
                              "PLC read")
        return decode_block(words, sig.register, [sig])[name]

    def write(self, name: str, value: Any) -> None:
        from edge_ad.plc.modbus import encode_signal

        sig = BY_NAME[name]
        self.loop.run(self.server.async_setValues(1, 16, sig.register, encode_signal(sig, value)), 2.0, "PLC write")

    def stop(self) -> None:
        self.loop.run(self.server.shutdown(), 5.0, "PLC shutdown")
        self.loop.stop()

    def restart(self) -> None:
        """Power-cycle: back on the same port with zeroed memory."""
        self.stop()
        self.start()


def _ua_types() -> dict[str, Any]:
    from asyncua import ua

    return {"BOOL": ua.VariantType.Boolean, "UINT16": ua.VariantType.UInt16, "UINT32": ua.VariantType.UInt32,
            "REAL": ua.VariantType.Float}


class OpcUaClientPlc:
    """The PLC/SCADA as an asyncua Client of edge-ad's server: one Read of all signals per scan."""

    def __init__(self, port: int) -> None:
        from asyncua import Client

        self.loop = LoopThread("test-plc-opcua-client")
        self.client = Client(f"opc.tcp://127.0.0.1:{port}/", timeout=2)
        self.nodes: dict[str, Any] = {}
        self.cache: dict[str, Any] = {}

    def _try_connect(self) -> bool:
        try:
            self.loop.run(self.client.connect(), 5.0, "connect")
            return True
        except (OSError, ConnectionError, TimeoutError):
            return False

    def refresh(self) -> None:
        if not self.nodes:
            wait_for(self._try_connect, 20.0, "OPC UA server")
            self.nodes = {s.name: self.client.get_node(f"ns=2;s=EdgeAD.{s.name}") for s in SIGNALS}
        values = self.loop.run(self.client.read_values(list(self.nodes.values())), 2.0, "read")
        self.cache = dict(zip(self.nodes, values))

    def read(self, name: str) -> Any:
        return self.cache[name]

    def write(self, name: str, value: Any) -> None:
        from asyncua import ua

        sig = BY_NAME[name]
        dv = ua.DataValue(ua.Variant(coerce(sig, value), _ua_types()[sig.type]))
        self.loop.run(self.nodes[name].write_value(dv), 2.0, "write")
        self.cache[name] = value

    def browse(self, *path: str) -> Any:
        """Value of Objects/<path...> by browse names in namespace 2."""
        async def _get() -> Any:
            node = await self.client.nodes.objects.get_child([f"2:{p}" for p in path])
            return await node.read_value()

        return self.loop.run(_get(), 2.0, "browse")

    def stop(self) -> None:
        try:
            if self.nodes:
                self.loop.run(self.client.disconnect(), 5.0, "disconnect")
        finally:
            self.loop.stop()


class OpcUaServerPlc:
    """The PLC's own OPC UA server with a 'VisionDB' object holding every signal (node ids ns=2;s=VisionDB.X)."""

    TEMPLATE = "ns=2;s=VisionDB.{name}"

    def __init__(self, port: int) -> None:
        self.port = port
        self.start()

    def start(self) -> None:
        """(Re)start on the port with zeroed memory."""
        self.loop = LoopThread("test-plc-opcua-server")
        self.server: Any = self.loop.run(self._serve(), 30.0, "PLC server")

    async def _serve(self) -> Any:
        from asyncua import Server, ua

        server = Server()
        await server.init()
        server.set_endpoint(f"opc.tcp://127.0.0.1:{self.port}/")
        server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
        idx = await server.register_namespace("urn:test-plc")
        db = await server.nodes.objects.add_object(ua.NodeId("VisionDB", idx), ua.QualifiedName("VisionDB", idx))
        self.ids = {}
        for s in SIGNALS:
            node = await db.add_variable(ua.NodeId(f"VisionDB.{s.name}", idx), ua.QualifiedName(s.name, idx),
                                         ua.Variant(coerce(s, 0), _ua_types()[s.type]))
            await node.set_writable()
            self.ids[s.name] = node.nodeid
        await server.start()
        return server

    def refresh(self) -> None:
        """The PLC reads its own memory."""

    def read(self, name: str) -> Any:
        async def _read() -> Any:
            return await self.server.get_node(self.ids[name]).read_data_value()

        return self.loop.run(_read(), 2.0, "PLC read").Value.Value

    def write(self, name: str, value: Any) -> None:
        from asyncua import ua

        sig = BY_NAME[name]
        dv = ua.DataValue(ua.Variant(coerce(sig, value), _ua_types()[sig.type]))
        self.loop.run(self.server.write_attribute_value(self.ids[name], dv), 2.0, "PLC write")

    def stop(self) -> None:
        try:
            self.loop.run(self.server.stop(), 10.0, "PLC stop")
        finally:
            self.loop.stop()

    def restart(self) -> None:
        """Power-cycle: back on the same port with zeroed memory."""
        self.stop()
        self.start()


class SnapPlc:
    """snap7's server holding DB100; the PLC program works on the DB bytes directly, as a PLC would."""

    DB = 100

    def __init__(self, port: int) -> None:
        self.port = port
        self.start()

    def start(self) -> None:
        """(Re)start on the port with zeroed memory."""
        from snap7.server import Server
        from snap7.type import SrvArea

        from edge_ad.plc.signals import DB_SIZE

        self.db = bytearray(DB_SIZE)
        self.lock = threading.Lock()
        self.server = Server(log=False)
        self.server.register_area(SrvArea.DB, self.DB, self.db)
        self.server.start_to("127.0.0.1", self.port)

    def refresh(self) -> None:
        """The PLC reads its own memory."""

    def read(self, name: str) -> Any:
        from edge_ad.plc.s7 import decode_from

        with self.lock:
            return decode_from(self.db, 0, BY_NAME[name])

    def write(self, name: str, value: Any) -> None:
        from edge_ad.plc.s7 import encode_into

        with self.lock:
            encode_into(self.db, 0, BY_NAME[name], value)

    def stop(self) -> None:
        self.server.stop()

    def restart(self) -> None:
        """Power-cycle: back on the same port with zeroed memory."""
        self.stop()
        self.start()


def make_peer(kind: str) -> tuple[str, Any]:
    """(the PLC URL edge-ad uses, the peer) for a kind of KINDS; a server-kind peer connects on first refresh()."""
    port = free_port()
    if kind == "modbus-server":
        return f"modbus://127.0.0.1:{port}", ModbusClientPlc(port)
    if kind == "opcua-server":
        return f"opcua://127.0.0.1:{port}", OpcUaClientPlc(port)
    if kind == "modbus-client":
        return f"modbus-client://127.0.0.1:{port}?timeout=0.5", ModbusServerPlc(port)
    if kind == "opcua-client":
        return (f"opcua-client://127.0.0.1:{port}/?nodes={quote(OpcUaServerPlc.TEMPLATE)}&timeout=1",
                OpcUaServerPlc(port))
    if kind == "s7":
        return f"s7://127.0.0.1:{port}/0/1/{SnapPlc.DB}", SnapPlc(port)
    raise ValueError(f"unknown peer kind {kind!r}; expected one of {KINDS}")


@contextmanager
def station(kind: str, insp: Any, peer: Any) -> Iterator[None]:
    """Run the inspector; stop the peer inside (server kinds: the PLC client leaves first) or after it."""
    try:
        with insp:
            try:
                yield
            finally:
                if kind in SERVER_KINDS:
                    peer.stop()
    finally:
        if kind in CLIENT_KINDS:
            peer.stop()
