"""PLC integration: an inspection station (`Inspector`) with the trigger/result handshake over OPC UA, Modbus TCP
and Siemens S7.

    from edge_ad.plc import Inspector
    from edge_ad.sources.factory import open_source      # or any Source
    insp = Inspector("packages/widget", open_source("images/"), "modbus://0.0.0.0:5020", trigger="plc")
    insp.run()                                             # until Ctrl-C / stop event

The signal set and its addresses are in `edge_ad.plc.signals` (and samples/README.md). The protocol libraries
(asyncua, pymodbus, python-snap7) are imported only when a link of that kind is opened:
`pip install "edge-ad[plc]"`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from edge_ad._lazy import lazy_exports

if TYPE_CHECKING:
    from edge_ad.plc.inspector import Inspector, InspectorStats
    from edge_ad.plc.link import (
        PlcAdapter,
        PlcConnectionError,
        PlcError,
        PlcLink,
        open_adapter,
    )
    from edge_ad.plc.signals import (
        SIGNALS,
        FaultCode,
        VisionState,
    )

_EXPORTS = {
    "Inspector": "edge_ad.plc.inspector",
    "InspectorStats": "edge_ad.plc.inspector",
    "PlcAdapter": "edge_ad.plc.link",
    "PlcConnectionError": "edge_ad.plc.link",
    "PlcError": "edge_ad.plc.link",
    "PlcLink": "edge_ad.plc.link",
    "open_adapter": "edge_ad.plc.link",
    "SIGNALS": "edge_ad.plc.signals",
    "FaultCode": "edge_ad.plc.signals",
    "VisionState": "edge_ad.plc.signals",
}

__all__ = ["SIGNALS", "FaultCode", "Inspector", "InspectorStats", "PlcAdapter",
           "PlcConnectionError", "PlcError", "PlcLink", "VisionState", "open_adapter"]


__getattr__ = lazy_exports(__name__, _EXPORTS)
