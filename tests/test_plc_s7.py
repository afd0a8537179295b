"""Siemens S7 specifics (the handshake and PLC-restart tests of every protocol are in test_plc_protocols, against
the server python-snap7 ships): URL parsing."""

from __future__ import annotations

import pytest

from edge_ad.plc.link import PlcError, open_adapter
from edge_ad.plc.s7 import S7Adapter

pytest.importorskip("snap7")


def test_url_parsing() -> None:
    a = open_adapter("s7://127.0.0.1:1102/0/2/DB7")
    assert isinstance(a, S7Adapter) and (a.rack, a.slot, a.db, a.port) == (0, 2, 7, 1102)
    with pytest.raises(PlcError, match="rack"):
        open_adapter("s7://127.0.0.1/9/1/100")
