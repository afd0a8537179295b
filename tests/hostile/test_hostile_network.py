"""The PLC surfaces under attack: Modbus clients writing the result registers (every function code, every output
address), other unit ids, malformed frames; an OPC UA server with security on probed anonymously, without
security, with wrong passwords and with garbage bytes. 0 spoofed outputs; the servers keep serving."""

from __future__ import annotations

import contextlib
import socket
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hostile_tally import Tally
from plc_peers import free_port, wait_for

from edge_ad.plc.link import open_adapter
from edge_ad.plc.signals import OUTPUT_REGISTER, REGISTER_COUNT

pytestmark = pytest.mark.slow  # trains/exports models or starts real peers: not in `make test-fast`

def _poke(port: int, data: bytes, wait_s: float) -> None:
    """Send raw bytes to a loopback server and read whatever it answers within wait_s."""
    with socket.create_connection(("127.0.0.1", port), timeout=2.0) as s:
        s.sendall(data)
        s.settimeout(wait_s)
        with contextlib.suppress(TimeoutError, ConnectionError):
            s.recv(256)


def _wire(client: Any, unit: int) -> list[int]:
    rr = client.read_holding_registers(0, count=REGISTER_COUNT, device_id=unit)
    assert not rr.isError(), rr
    return list(rr.registers)


def test_modbus_outputs_cannot_be_spoofed(tally: Tally) -> None:
    pytest.importorskip("pymodbus")
    from pymodbus.client import ModbusTcpClient

    port = free_port()
    server = open_adapter(f"modbus://127.0.0.1:{port}")
    server.connect()
    client = ModbusTcpClient("127.0.0.1", port=port, timeout=1.0, retries=0)
    try:
        wait_for(client.connect, 10.0, "Modbus server")
        server.write_outputs({"OK": False, "NG": True, "AnomalyScore": 0.93, "DefectCode": 1, "ResultSeq": 7})
        before = _wire(client, 1)
        g = np.random.default_rng(7)
        attempts: list[tuple[str, Any]] = []
        for reg in range(OUTPUT_REGISTER, REGISTER_COUNT):
            attempts += [(f"fc6@{reg}", lambda r=reg: client.write_register(r, 1, device_id=1)),
                         (f"fc16@{reg}", lambda r=reg: client.write_registers(r, [0, 0], device_id=1)
                          if r + 2 <= REGISTER_COUNT else client.write_registers(r, [0], device_id=1)),
                         (f"fc5@{reg}", lambda r=reg: client.write_coil(r, True, device_id=1)),
                         (f"fc15@{reg}", lambda r=reg: client.write_coils(r, [True] * 3, device_id=1)),
                         (f"fc22@{reg}", lambda r=reg: client.mask_write_register(address=r, and_mask=0, or_mask=1,
                                                                                  device_id=1)),
                         (f"fc23@{reg}", lambda r=reg: client.readwrite_registers(
                             read_address=0, read_count=2, write_address=r, values=[1], device_id=1))]
        for k in range(40):  # random spans that start in the inputs and reach into the outputs
            start = int(g.integers(0, OUTPUT_REGISTER))
            n = int(g.integers(OUTPUT_REGISTER - start + 1, min(100, REGISTER_COUNT - start) + 1))
            attempts.append((f"span{k}@{start}+{n}", lambda s=start, n=n: client.write_registers(
                s, [int(v) for v in g.integers(0, 65536, n)], device_id=1)))
        for name, fn in attempts:
            rr = fn()
            refused = rr.isError()
            tally.count("modbus-spoof", "clear" if refused else "accepted-bad")
            if not refused:
                tally.accepted_bad.append(f"modbus-spoof/{name}")
        assert _wire(client, 1)[OUTPUT_REGISTER:] == before[OUTPUT_REGISTER:], "an output register changed"
        assert server.rejected_writes == len(attempts)
        for unit in (0, 2, 17, 247, 255):  # only unit 1 answers
            rr = client.read_holding_registers(0, count=4, device_id=unit)
            tally.count("modbus-unit", "clear" if rr.isError() else "accepted-bad")
            if not rr.isError():
                tally.accepted_bad.append(f"modbus-unit/{unit}")
    finally:
        client.close()
    # malformed frames on a raw socket: the server drops them and keeps serving
    frames = [b"", b"\x00", b"\x00\x01\x00\x00\xff\xff\x01\x03", b"\x00\x01\x00\x00\x00\x06\x01\x10\x00\x0e\x00\x7f",
              struct.pack(">HHHBB", 1, 0, 2, 1, 0x10) + bytes(300), bytes(g.integers(0, 256, 600, dtype=np.uint8)),
              b"GET / HTTP/1.1\r\n\r\n"]
    for frame in frames:
        _poke(port, frame, 0.3)
        tally.count("modbus-malformed", "clear")
    client = ModbusTcpClient("127.0.0.1", port=port, timeout=1.0, retries=0)
    try:
        wait_for(client.connect, 5.0, "Modbus server after malformed frames")
        assert _wire(client, 1)[OUTPUT_REGISTER:] == before[OUTPUT_REGISTER:]
        assert server.read_inputs()["Trigger"] is False
    finally:
        client.close()
        server.close()
    tally.check("modbus-spoof", "modbus-unit", "modbus-malformed")


def test_secured_opcua_refuses_strangers(tmp_path: Path, tally: Tally) -> None:
    pytest.importorskip("asyncua")
    from asyncua import Client, ua
    from asyncua.crypto.security_policies import SecurityPolicyBasic256Sha256

    from edge_ad.plc.link import LoopThread
    from edge_ad.plc.opcua_security import CLIENT_URI, ensure_certificate, set_user

    users = tmp_path / "users.yaml"
    set_user(users, "line", "right-password")
    port = free_port()
    server = open_adapter(f"opcua://127.0.0.1:{port}?security=encrypt&users={users}&certs={tmp_path / 'srv'}")
    server.connect()
    server.write_outputs({"OK": False, "NG": True})
    pinned = tmp_path / "srv" / "server_cert.der"
    cert, key = ensure_certificate(tmp_path / "cli", "client", CLIENT_URI)
    loop = LoopThread("hostile-opcua")

    def connect(user: str | None, password: str | None, secure: bool = True, mode: str = "SignAndEncrypt") -> None:
        async def go() -> None:
            c = Client(f"opc.tcp://127.0.0.1:{port}/", timeout=2)
            if secure:
                c.application_uri = CLIENT_URI
                await c.set_security(SecurityPolicyBasic256Sha256, str(cert), str(key), server_certificate=str(pinned),
                                     mode=getattr(ua.MessageSecurityMode, mode))
            if user is not None:
                c.set_user(user)
                c.set_password(password or "")
            await c.connect()
            await c.disconnect()

        loop.run(go(), 10.0, "connect")

    def refused(fn: Any) -> bool:
        try:
            fn()
        except Exception:
            return True
        return False

    try:
        probes = {"anonymous, encrypted": lambda: connect(None, None),
                  "anonymous, no security": lambda: connect(None, None, secure=False),
                  "user, no security (password would cross in plaintext)": lambda: connect("line", "right-password",
                                                                                          secure=False),
                  "sign only (not offered)": lambda: connect("line", "right-password", mode="Sign")}
        for i in range(10):
            probes[f"wrong password {i}"] = lambda i=i: connect("line", f"guess-{i}")
        probes["unknown user"] = lambda: connect("admin", "admin")
        for name, fn in probes.items():
            ok = refused(fn)
            tally.count("opcua-auth", "clear" if ok else "accepted-bad")
            if not ok:
                tally.accepted_bad.append(f"opcua-auth/{name}")
        for _ in range(3):  # garbage on the port
            _poke(port, b"HEL\x00" + bytes(200) + b"\xff" * 64, 0.5)
            tally.count("opcua-malformed", "clear")
        assert not refused(lambda: connect("line", "right-password")), "the real user must still get in"
        out = server.read_outputs()
        assert (out["OK"], out["NG"]) == (False, True)
    finally:
        loop.stop()
        server.close()
    tally.check("opcua-auth", "opcua-malformed")
