"""Siemens S7 (python-snap7 3.x, pure Python, no libsnap7): edge-ad reads and writes one data block in the PLC.

DB layout (a standard, non-optimised DB; S7-1200/1500 need "Optimized block access" off for this DB and PUT/GET
allowed; full table in samples/README.md and `edge_ad.plc.signals.layout_markdown()`):

    byte 0    Trigger DBX0.0, ResultAck DBX0.1, FaultReset DBX0.2         (PLC -> vision)
    DBW2      RecipeRequest   UInt                                        (PLC -> vision)
    DBD4      PartId          UDInt                                       (PLC -> vision)
    DBW8      PlcHeartbeat    UInt                                        (PLC -> vision)
    byte 12   Ready .0, Busy .1, TriggerAck .2, ResultValid .3, OK .4, NG .5, Late .6, Fault .7   (vision -> PLC)
    DBW14 FaultCode, DBW16 DefectCode, DBD18 AnomalyScore Real, DBD22 MaxPixelScore Real, DBD26 DefectArea UDInt,
    DBD30 PartIdEcho UDInt, DBD34 ResultSeq UDInt, DBD38 InspectionTime Real (ms), DBW42 ModelId,
    DBW44 Heartbeat, DBW46 VisionState, DBD48 QueueOverflows UDInt, DBW52 QueueDepth,
    DBD54 TriggersIgnored UDInt                                                              (vision -> PLC)

The PLC writes bytes 0..9 only and edge-ad writes bytes 12..57 only, so neither side ever read-modify-writes a
byte the other owns. Values are big-endian as in the PLC.

URL: `s7://HOST[:PORT]/RACK/SLOT/DB`, e.g. `s7://192.168.0.1/0/1/100` (port 102 by default).
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Mapping
from typing import Any

from edge_ad.plc.signals import (
    BY_NAME,
    DB_SIZE,
    INPUT_BYTES,
    INPUTS,
    OUTPUT_BYTE,
    OUTPUTS,
    TYPE_BYTES,
    Signal,
    coerce,
    default_value,
)
from edge_ad.plc.transport import (
    PlcConnectionError,
    PlcError,
    Value,
    parse_url,
    require,
)

log = logging.getLogger(__name__)
_FMT = {"UINT16": ">H", "UINT32": ">I", "REAL": ">f"}


def encode_into(buf: bytearray, offset: int, sig: Signal, value: Any) -> None:
    """Write one signal into `buf`, whose byte 0 is DB byte `offset`."""
    v = coerce(sig, value)
    i = sig.s7_byte - offset
    if sig.type == "BOOL":
        if v:
            buf[i] |= 1 << sig.s7_bit
        else:
            buf[i] &= ~(1 << sig.s7_bit) & 0xFF
    else:
        struct.pack_into(_FMT[sig.type], buf, i, v)


def decode_from(buf: bytes | bytearray, offset: int, sig: Signal) -> Value:
    """Read one signal from `buf`, whose byte 0 is DB byte `offset`."""
    i = sig.s7_byte - offset
    if sig.type == "BOOL":
        return bool(buf[i] >> sig.s7_bit & 1)
    return struct.unpack_from(_FMT[sig.type], buf, i)[0]


class S7Adapter:
    """Client of an S7 PLC (or of `snap7.server.Server` in tests): inputs and outputs live in one DB."""

    def __init__(self, host: str, rack: int = 0, slot: int = 1, db: int = 100, port: int = 102) -> None:
        self.host, self.rack, self.slot, self.db, self.port = host, rack, slot, db, port
        self.description = f"s7://{host}:{port}/{rack}/{slot}/DB{db}"
        self._client: Any = None
        self._image = bytearray(DB_SIZE - OUTPUT_BYTE)
        for s in OUTPUTS:
            encode_into(self._image, OUTPUT_BYTE, s, default_value(s))

    def connect(self) -> None:
        snap7 = require("snap7", "Siemens S7")
        self.close()
        client = snap7.Client()
        try:
            client.connect(self.host, self.rack, self.slot, self.port)
        except (snap7.error.S7Error, OSError) as e:
            raise PlcConnectionError(f"{self.description}: {e}") from e
        self._client = client

    def _io(self, fn_name: str, *args: Any) -> Any:
        import snap7

        if self._client is None:
            raise PlcConnectionError(f"{self.description}: not connected")
        try:
            return getattr(self._client, fn_name)(*args)
        except (snap7.error.S7Error, OSError) as e:
            raise PlcConnectionError(f"{self.description}: {fn_name}: {e}") from e

    def read_inputs(self) -> dict[str, Value]:
        data = self._io("db_read", self.db, 0, INPUT_BYTES)
        return {s.name: decode_from(data, 0, s) for s in INPUTS}

    def read_outputs(self) -> dict[str, Value]:
        data = self._io("db_read", self.db, OUTPUT_BYTE, DB_SIZE - OUTPUT_BYTE)
        self._image[:] = data  # adopt the PLC's view so later spans rewrite what is there
        return {s.name: decode_from(data, OUTPUT_BYTE, s) for s in OUTPUTS}

    def write_outputs(self, values: Mapping[str, Value]) -> None:
        if not values:
            return
        lo, hi = DB_SIZE, 0
        for name, v in values.items():
            sig = BY_NAME[name]
            if sig.direction != "out":
                raise PlcError(f"S7: {name!r} is not a vision -> PLC signal")
            encode_into(self._image, OUTPUT_BYTE, sig, v)
            lo, hi = min(lo, sig.s7_byte), max(hi, sig.s7_byte + TYPE_BYTES[sig.type])
        self._io("db_write", self.db, lo, bytearray(self._image[lo - OUTPUT_BYTE : hi - OUTPUT_BYTE]))

    def close(self) -> None:
        if self._client is not None:
            try:
                self._client.disconnect()
            except Exception as e:
                log.debug("S7 disconnect: %s", e)
        self._client = None


def adapter_from_url(url: str) -> S7Adapter:
    """`s7://HOST[:PORT]/RACK/SLOT/DB`."""
    _scheme, host, port, path, _q = parse_url(url)
    parts = [p for p in path.split("/") if p]
    try:
        rack, slot, db = (int(p.upper().removeprefix("DB")) for p in parts)
    except ValueError as e:
        raise PlcError(f"--plc {url!r}: expected s7://HOST[:PORT]/RACK/SLOT/DB with three integers, "
                       f"e.g. s7://192.168.0.1/0/1/100") from e
    if not (0 <= rack <= 7 and 0 <= slot <= 31 and 1 <= db <= 65535):
        raise PlcError(f"--plc {url!r}: expected rack 0..7, slot 0..31, DB 1..65535, got {rack}/{slot}/{db}")
    return S7Adapter(host, rack=rack, slot=slot, db=db, port=port or 102)
