"""A complete inspection station as an OPC UA server, with a simulated PLC (an asyncua client) doing the handshake.

    python samples/plc_opcua.py PACKAGE IMAGES_DIR [--port 4840]

edge-ad serves the node tree of samples/README.md on opc.tcp://127.0.0.1:PORT/. For every image the "PLC" writes
Control/PartId, sets Control/Trigger, waits for ResultManagement/ResultValid to toggle, reads the result,
acknowledges it (ResultAck := ResultValid) and clears Trigger. Needs `pip install "edge-ad[plc]"`.
"""

from __future__ import annotations

import argparse
import asyncio

from asyncua import Client, ua

from edge_ad.plc import Inspector
from edge_ad.sources import open_source

RESULT = ("ResultValid", "OK", "AnomalyScore", "DefectArea", "InspectionTime", "Late", "PartIdEcho", "ResultSeq")


async def plc(port: int, n_parts: int) -> None:
    """The PLC side: one trigger/result/ack cycle per part, polling every 5 ms like a PLC scan."""
    for _ in range(200):  # the server starts with the inspector's first control step
        client = Client(f"opc.tcp://127.0.0.1:{port}/", timeout=2)
        try:
            await client.connect()
            break
        except (OSError, TimeoutError):
            await asyncio.sleep(0.05)
    else:
        raise TimeoutError("no OPC UA server")
    try:
        node = {n: client.get_node(f"ns=2;s=EdgeAD.{n}") for n in RESULT + ("Ready", "Trigger", "PartId", "ResultAck")}

        async def write(name: str, value: object, vt: ua.VariantType) -> None:
            await node[name].write_value(ua.DataValue(ua.Variant(value, vt)))

        async def wait(cond) -> list:
            for _ in range(1000):
                values = await client.read_values([node[n] for n in RESULT + ("Ready",)])
                if cond(dict(zip(RESULT + ("Ready",), values))):
                    return values
                await asyncio.sleep(0.005)
            raise TimeoutError("the vision system did not answer in time")

        await wait(lambda s: s["Ready"])
        for part in range(1, n_parts + 1):
            before = await node["ResultValid"].read_value()
            await write("PartId", part, ua.VariantType.UInt32)
            await write("Trigger", True, ua.VariantType.Boolean)
            s = dict(zip(RESULT, await wait(lambda s, before=before: s["ResultValid"] != before)))
            print(f"part {s['PartIdEcho']}: {'OK' if s['OK'] else 'NG'} score={s['AnomalyScore']:.3f} "
                  f"area={s['DefectArea']}px time={s['InspectionTime']:.1f}ms late={s['Late']} seq={s['ResultSeq']}")
            await write("ResultAck", s["ResultValid"], ua.VariantType.Boolean)
            await write("Trigger", False, ua.VariantType.Boolean)
            await wait(lambda s: s["Ready"])
    finally:
        await client.disconnect()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("package")
    ap.add_argument("images")
    ap.add_argument("--port", type=int, default=4840)
    args = ap.parse_args()
    source = open_source(args.images)
    with Inspector(args.package, source, f"opcua://127.0.0.1:{args.port}", trigger="plc", budget_ms=500.0):
        asyncio.run(plc(args.port, len(source.files)))


if __name__ == "__main__":
    main()
