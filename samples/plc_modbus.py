"""A complete inspection station over Modbus TCP, with a simulated PLC doing the handshake.

    python samples/plc_modbus.py PACKAGE IMAGES_DIR [--port 5020]

edge-ad serves the register map (samples/README.md) on 127.0.0.1:PORT; the "PLC" below is a pymodbus client that,
for every image, writes PartId, raises Trigger, waits for ResultValid to toggle, reads the result, acknowledges it
(ResultAck := ResultValid) and drops Trigger - what a PLC program does every cycle. Needs `pip install "edge-ad[plc]"`.
"""

from __future__ import annotations

import argparse
import struct
import time

from pymodbus.client import ModbusTcpClient

from edge_ad.plc import Inspector
from edge_ad.plc.signals import BY_NAME, REGISTER_COUNT
from edge_ad.sources import open_source


def read_all(client: ModbusTcpClient) -> dict[str, float | int]:
    """All signals by name, decoded from one block read (UINT32/REAL: two registers, high word first)."""
    regs = client.read_holding_registers(0, count=REGISTER_COUNT, device_id=1).registers
    out: dict[str, float | int] = {}
    for name, sig in BY_NAME.items():
        r = regs[sig.register : sig.register + 2]
        if sig.type in ("BOOL", "UINT16"):
            out[name] = r[0]
        else:
            raw = struct.pack(">HH", *r)
            out[name] = struct.unpack(">f" if sig.type == "REAL" else ">I", raw)[0]
    return out


def wait(client: ModbusTcpClient, cond, timeout: float = 5.0) -> dict[str, float | int]:
    """Poll like a PLC scan until cond(signals) holds."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        sig = read_all(client)
        if cond(sig):
            return sig
        time.sleep(0.005)
    raise TimeoutError("the vision system did not answer in time")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("package")
    ap.add_argument("images")
    ap.add_argument("--port", type=int, default=5020)
    args = ap.parse_args()
    source = open_source(args.images)
    n_images = len(source.files)
    with Inspector(args.package, source, f"modbus://127.0.0.1:{args.port}", trigger="plc", budget_ms=500.0):
        plc = ModbusTcpClient("127.0.0.1", port=args.port)
        for _ in range(100):  # the server starts with the inspector's first control step
            if plc.connect():
                break
            time.sleep(0.05)
        wait(plc, lambda s: s["Ready"])
        for part in range(1, n_images + 1):
            plc.write_registers(BY_NAME["PartId"].register, [part >> 16, part & 0xFFFF], device_id=1)
            before = read_all(plc)["ResultValid"]
            plc.write_register(BY_NAME["Trigger"].register, 1, device_id=1)
            s = wait(plc, lambda s, before=before: s["ResultValid"] != before)
            print(f"part {s['PartIdEcho']}: {'OK' if s['OK'] else 'NG'} score={s['AnomalyScore']:.3f} "
                  f"area={s['DefectArea']}px time={s['InspectionTime']:.1f}ms late={s['Late']} seq={s['ResultSeq']}")
            plc.write_register(BY_NAME["ResultAck"].register, s["ResultValid"], device_id=1)
            plc.write_register(BY_NAME["Trigger"].register, 0, device_id=1)
            wait(plc, lambda s: s["Ready"] and not s["TriggerAck"])
        plc.close()


if __name__ == "__main__":
    main()
