"""Modbus TCP (pymodbus): edge-ad as the server the PLC polls, or as a client writing into the PLC's registers.

Register map (holding registers, function codes 3 / 16, offsets from `base`; full table in samples/README.md and
`edge_ad.plc.signals.layout_markdown()`):

- HR base+0 .. base+6: PLC -> vision (Trigger, ResultAck, FaultReset, RecipeRequest, PartId, PlcHeartbeat).
- HR base+10 .. base+39: vision -> PLC (Ready ... TriggersIgnored), read-only for clients.
- BOOL = one register holding 0 or 1; UINT16 = one register; UINT32 and REAL (IEEE 754) = two registers,
  high word first (big-endian, "ABCD"), as most PLCs expect.

URLs: `modbus://HOST:PORT` serves on HOST:PORT (default port 5020, unprivileged; `modbus://:5020` binds 127.0.0.1,
the machine network needs its address or 0.0.0.0 spelled out); `modbus-client://HOST:PORT` connects to the PLC
(default port 502). Clients may write the PLC -> vision registers only: a write to any other register is
refused with exception 02, and only the configured unit id answers. Query options: `unit=N` (device id, default
1), `base=N` (register offset, default 0), `timeout=S` (client, default 1.0).
"""

from __future__ import annotations

import contextvars
import logging
import struct
from collections.abc import Mapping, Sequence
from typing import Any

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
from edge_ad.plc.transport import (
    LoopThread,
    PlcConnectionError,
    PlcError,
    Value,
    parse_url,
    require,
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


_WRITE_CODES = frozenset({5, 6, 15, 16, 22, 23})  # write coil(s), register(s), mask write, read/write
_internal_write: contextvars.ContextVar[bool] = contextvars.ContextVar("edge_ad_modbus_internal", default=False)


async def _no_such_unit(*_args: Any) -> Any:
    """pymodbus device action for unit ids the server does not own: exception 0B on every request."""
    from pymodbus.constants import ExcCodes

    return ExcCodes.GATEWAY_NO_RESPONSE


class ModbusServerAdapter:
    """edge-ad serves the register map; the PLC (Modbus client) polls outputs and writes inputs.

    Only the PLC -> vision registers (base+0 .. base+INPUT_REGISTERS-1) accept client writes; a write that touches
    any other register (the results, status, the gap between the blocks) is answered with exception 02 (illegal
    data address) and counted in `rejected_writes`, so no client on the network can forge OK/NG. Only `unit`
    answers; other unit ids get exception 0B (gateway target failed to respond). Default bind 127.0.0.1: serving
    the machine network needs an explicit host (`modbus://0.0.0.0:5020` or the interface's address).
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 5020, unit: int = 1, base: int = 0) -> None:
        self.host, self.port, self.unit, self.base = host or "127.0.0.1", port, unit, base
        self.description = f"modbus://{self.host}:{port} (server, unit {unit}, base {base})"
        self._loop: LoopThread | None = None
        self._server: Any = None
        self._image = _OutputImage()
        self.rejected_writes = 0

    def _writable(self, address: int, count: int) -> bool:
        """True if [address, address + count) lies inside the PLC -> vision block."""
        return self.base <= address and address + count <= self.base + INPUT_REGISTERS

    async def _guard(self, func_code: int, _start: int, address: int, count: int, _registers: list[int],
                     values: Any) -> Any:
        """pymodbus device action: refuse client writes outside the input block (internal writes pass)."""
        from pymodbus.constants import ExcCodes

        if values is None or func_code not in _WRITE_CODES or _internal_write.get():
            return None
        if func_code in (5, 15) or not self._writable(address, count):  # coils would set register bits
            self.rejected_writes += 1
            if self.rejected_writes <= 10 or self.rejected_writes % 1000 == 0:
                log.warning("Modbus: client write refused (function %d, address %d, count %d; %d refused so far): "
                            "only registers %d..%d accept writes", func_code, address, count, self.rejected_writes,
                            self.base, self.base + INPUT_REGISTERS - 1)
            return ExcCodes.ILLEGAL_ADDRESS
        return None

    def connect(self) -> None:
        if self._server is not None:
            return
        require("pymodbus", "Modbus TCP")
        from pymodbus.server import ModbusTcpServer
        from pymodbus.simulator import DataType, SimData, SimDevice

        self._loop = LoopThread("edge-ad-modbus-server")

        async def _start() -> Any:
            regs = (
                [0] * self.base + [0] * INPUT_REGISTERS + [0] * (OUTPUT_REGISTER - INPUT_REGISTERS) + self._image.words
            )
            device = SimDevice(id=self.unit, simdata=[SimData(address=0, values=regs, datatype=DataType.REGISTERS)],
                               action=self._guard)
            others = SimDevice(id=0, simdata=[SimData(address=0, values=[0] * len(regs), datatype=DataType.REGISTERS)],
                               action=_no_such_unit)  # id 0 = every other unit id: refused, never served
            server = ModbusTcpServer([device, others], address=(self.host, self.port))
            await server.serve_forever(background=True)
            return server

        try:
            self._server = self._loop.run(_start(), 10.0, self.description)
        except OSError as e:
            self.close()
            raise PlcConnectionError(f"{self.description}: cannot listen ({e})") from e
        log.info("Modbus TCP server listening on %s:%d (unit %d)", self.host, self.port, self.unit)

    def _call(self, coro_fn: Any, *args: Any) -> Any:
        if self._server is None or self._loop is None:
            raise PlcConnectionError(f"{self.description}: not started")

        async def _internal() -> Any:
            _internal_write.set(True)  # this task's context only: client requests run in their own tasks
            return await coro_fn(*args)

        return self._loop.run(_internal(), 2.0, self.description)

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
    scheme, host, port, _path, q = parse_url(url, empty_host=url.lower().startswith("modbus:"))
    try:
        unit = int(q.get("unit", 1))
        base = int(q.get("base", 0))
        timeout = float(q.get("timeout", 1.0))
    except ValueError as e:
        raise PlcError(f"--plc {url!r}: unit and base must be integers, timeout a number ({e})") from e
    lo, hi = (1, 247) if scheme == "modbus" else (0, 255)  # a server is one unit; gateways also use 0 / 255
    if not lo <= unit <= hi or not 0 <= base <= 65535 - REGISTER_COUNT or not timeout > 0:
        raise PlcError(f"--plc {url!r}: expected unit {lo}..{hi}, base 0..{65535 - REGISTER_COUNT}, timeout > 0, "
                       f"got unit {unit}, base {base}, timeout {timeout:g}")
    if scheme == "modbus":
        return ModbusServerAdapter(host, port or 5020, unit=unit, base=base)
    return ModbusClientAdapter(host, port or 502, unit=unit, base=base, timeout=timeout)
