"""Modbus TCP (pymodbus): edge-ad as the server the PLC polls, or as a client writing into the PLC's registers.

Register map (holding registers, function codes 3 / 16, offsets from `base`; full table in samples/README.md and
`edge_ad.plc.signals.layout_markdown()`):

- HR base+0 .. base+6: PLC -> vision (Trigger, ResultAck, FaultReset, RecipeRequest, PartId, PlcHeartbeat).
- HR base+10 .. base+37: vision -> PLC (Ready ... QueueDepth).
- BOOL = one register holding 0 or 1; UINT16 = one register; UINT32 and REAL (IEEE 754) = two registers,
  high word first (big-endian, "ABCD"), as most PLCs expect.

URLs: `modbus://HOST:PORT` serves on HOST:PORT (default port 5020, unprivileged); `modbus-client://HOST:PORT`
connects to the PLC (default port 502). Query options: `unit=N` (device id, default 1), `base=N` (register offset,
default 0), `timeout=S` (client, default 1.0).
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Mapping, Sequence
from typing import Any

from edge_ad.plc.link import (
    LoopThread,
    PlcConnectionError,
    PlcError,
    Value,
    parse_url,
    require,
)
from edge_ad.plc.signals import (
    BY_NAME,
    INPUTS,
    OUTPUT_REGISTER,
    OUTPUTS,
    REGISTER_COUNT,
    TYPE_REGISTERS,
    Signal,
    coerce,
    default_value,
)

log = logging.getLogger(__name__)
INPUT_REGISTERS = max(s.register + TYPE_REGISTERS[s.type] for s in INPUTS)
OUTPUT_REGISTERS = REGISTER_COUNT - OUTPUT_REGISTER


def encode_signal(sig: Signal, value: Any) -> list[int]:
    """Registers (16-bit words) of one signal value, high word first."""
    v = coerce(sig, value)
    if sig.type in ("BOOL", "UINT16"):
        return [int(v)]
    raw = struct.pack(">f", v) if sig.type == "REAL" else struct.pack(">I", v)
    return list(struct.unpack(">HH", raw))


def decode_signal(sig: Signal, words: Sequence[int]) -> Value:
    """Value of one signal from its registers."""
    if sig.type == "BOOL":
        return bool(words[0])
    if sig.type == "UINT16":
        return int(words[0]) & 0xFFFF
    raw = struct.pack(">HH", int(words[0]) & 0xFFFF, int(words[1]) & 0xFFFF)
    return struct.unpack(">f", raw)[0] if sig.type == "REAL" else struct.unpack(">I", raw)[0]


def decode_block(words: Sequence[int], first_register: int, signals: Sequence[Signal]) -> dict[str, Value]:
    """Decode `signals` from a register block starting at map offset `first_register`."""
    out = {}
    for s in signals:
        i = s.register - first_register
        out[s.name] = decode_signal(s, words[i : i + TYPE_REGISTERS[s.type]])
    return out


class _OutputImage:
    """The vision -> PLC registers as last written, so one contiguous span can be written per call."""

    def __init__(self) -> None:
        self.words = [0] * OUTPUT_REGISTERS
        for s in OUTPUTS:
            self.put(s.name, default_value(s))

    def put(self, name: str, value: Value) -> tuple[int, int]:
        sig = BY_NAME[name]
        if sig.direction != "out":
            raise PlcError(f"Modbus: {name!r} is not a vision -> PLC signal")
        i = sig.register - OUTPUT_REGISTER
        words = encode_signal(sig, value)
        self.words[i : i + len(words)] = words
        return i, i + len(words)

    def update(self, values: Mapping[str, Value]) -> tuple[int, list[int]]:
        """Apply values; return (map offset of the first changed register, the span's words)."""
        spans = [self.put(n, v) for n, v in values.items()]
        lo, hi = min(a for a, _ in spans), max(b for _, b in spans)
        return OUTPUT_REGISTER + lo, self.words[lo:hi]


class ModbusServerAdapter:
    """edge-ad serves the register map; the PLC (Modbus client) polls outputs and writes inputs."""

    def __init__(self, host: str = "0.0.0.0", port: int = 5020, unit: int = 1, base: int = 0) -> None:
        self.host, self.port, self.unit, self.base = host, port, unit, base
        self.description = f"modbus://{host}:{port} (server, unit {unit}, base {base})"
        self._loop: LoopThread | None = None
        self._server: Any = None
        self._image = _OutputImage()

    def connect(self) -> None:
        if self._server is not None:
            return
        require("pymodbus", "Modbus TCP")
        from pymodbus.server import ModbusTcpServer
        from pymodbus.simulator import DataType, SimData, SimDevice

        self._loop = LoopThread("edge-ad-modbus-server")

        async def _start() -> Any:
            regs = [0] * self.base + [0] * INPUT_REGISTERS + [0] * (OUTPUT_REGISTER - INPUT_REGISTERS) + self._image.words
            device = SimDevice(id=0, simdata=[SimData(address=0, values=regs, datatype=DataType.REGISTERS)])
            server = ModbusTcpServer(device, address=(self.host, self.port))
            await server.serve_forever(background=True)
            return server

        try:
            self._server = self._loop.run(_start(), 10.0, self.description)
        except OSError as e:
            self.close()
            raise PlcConnectionError(f"{self.description}: cannot listen ({e})") from e
        log.info("Modbus TCP server listening on %s:%d", self.host, self.port)

    def _call(self, coro_fn: Any, *args: Any) -> Any:
        if self._server is None or self._loop is None:
            raise PlcConnectionError(f"{self.description}: not started")
        return self._loop.run(coro_fn(*args), 2.0, self.description)

    def read_inputs(self) -> dict[str, Value]:
        words = self._call(self._server.async_getValues, self.unit, 3, self.base, INPUT_REGISTERS)
        return decode_block(words, 0, INPUTS)

    def read_outputs(self) -> dict[str, Value]:
        return decode_block(self._image.words, OUTPUT_REGISTER, OUTPUTS)

    def write_outputs(self, values: Mapping[str, Value]) -> None:
        if not values:
            return
        first, words = self._image.update(values)
        self._call(self._server.async_setValues, self.unit, 16, self.base + first, words)

    def close(self) -> None:
        if self._server is not None and self._loop is not None:
            try:
                self._loop.run(self._server.shutdown(), 5.0, self.description)
            except PlcConnectionError as e:
                log.warning("Modbus server shutdown: %s", e)
        if self._loop is not None:
            self._loop.stop()
        self._server, self._loop = None, None


class ModbusClientAdapter:
    """edge-ad writes outputs into and reads inputs from the PLC's own holding registers (PLC = Modbus server)."""

    def __init__(self, host: str, port: int = 502, unit: int = 1, base: int = 0, timeout: float = 1.0) -> None:
        self.host, self.port, self.unit, self.base, self.timeout = host, port, unit, base, timeout
        self.description = f"modbus-client://{host}:{port} (unit {unit}, base {base})"
        self._client: Any = None
        self._image = _OutputImage()

    def connect(self) -> None:
        require("pymodbus", "Modbus TCP")
        from pymodbus.client import ModbusTcpClient

        self.close()
        client = ModbusTcpClient(self.host, port=self.port, timeout=self.timeout, retries=0)
        if not client.connect():
            client.close()
            raise PlcConnectionError(f"{self.description}: connection refused or timed out")
        self._client = client

    def _check(self, rr: Any, what: str) -> Any:
        if rr is None or rr.isError():
            raise PlcConnectionError(f"{self.description}: {what} failed ({rr})")
        return rr

    def _do(self, fn_name: str, *args: Any, **kw: Any) -> Any:
        from pymodbus.exceptions import ModbusException

        if self._client is None:
            raise PlcConnectionError(f"{self.description}: not connected")
        try:
            return self._check(getattr(self._client, fn_name)(*args, device_id=self.unit, **kw), fn_name)
        except (ModbusException, OSError) as e:
            raise PlcConnectionError(f"{self.description}: {fn_name}: {e}") from e

    def read_inputs(self) -> dict[str, Value]:
        rr = self._do("read_holding_registers", self.base, count=INPUT_REGISTERS)
        return decode_block(rr.registers, 0, INPUTS)

    def read_outputs(self) -> dict[str, Value]:
        rr = self._do("read_holding_registers", self.base + OUTPUT_REGISTER, count=OUTPUT_REGISTERS)
        out = decode_block(rr.registers, OUTPUT_REGISTER, OUTPUTS)
        for name, v in out.items():  # adopt the PLC's view so later spans rewrite what is there
            self._image.put(name, v)
        return out

    def write_outputs(self, values: Mapping[str, Value]) -> None:
        if not values:
            return
        first, words = self._image.update(values)
        self._do("write_registers", self.base + first, words)

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
        self._client = None


def adapter_from_url(url: str) -> ModbusServerAdapter | ModbusClientAdapter:
    """`modbus://HOST:PORT` (server) or `modbus-client://HOST:PORT` (client), with ?unit=&base=&timeout=."""
    scheme, host, port, _path, q = parse_url(url)
    try:
        unit = int(q.get("unit", 1))
        base = int(q.get("base", 0))
        timeout = float(q.get("timeout", 1.0))
    except ValueError as e:
        raise PlcError(f"--plc {url!r}: unit and base must be integers, timeout a number ({e})") from e
    if not 0 <= unit <= 247 or not 0 <= base <= 65535 - REGISTER_COUNT or timeout <= 0:
        raise PlcError(f"--plc {url!r}: expected unit 0..247, base 0..{65535 - REGISTER_COUNT}, timeout > 0")
    if scheme == "modbus":
        return ModbusServerAdapter(host, port or 5020, unit=unit, base=base)
    return ModbusClientAdapter(host, port or 502, unit=unit, base=base, timeout=timeout)
