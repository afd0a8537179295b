"""OPC UA (asyncua): edge-ad as a server with an OPC 40100-flavoured object model, or as a client that writes
into the PLC's own OPC UA server.

Server node tree (namespace `urn:edge-ad:vision`, every variable has the string node id `EdgeAD.<Signal>`, e.g.
`ns=2;s=EdgeAD.Trigger`; folders borrow the OPC 40100 Machine Vision names):

    Objects/EdgeAD
      Control/            Trigger, ResultAck, FaultReset, PartId, PlcHeartbeat      (writable by the PLC)
      RecipeManagement/   RecipeRequest (writable), ModelId
      ResultManagement/   ResultValid, ResultSeq, PartIdEcho, OK, NG, Late, DefectCode, AnomalyScore,
                          MaxPixelScore, DefectArea, InspectionTime
      Status/             Ready, Busy, TriggerAck, Fault, FaultCode, Heartbeat, QueueOverflows, QueueDepth,
                          TriggersIgnored
      VisionStateMachine/ VisionState (UInt16), CurrentState (String, e.g. "Operational.Ready")

Types: BOOL = Boolean, UINT16 = UInt16, UINT32 = UInt32, REAL = Float.

URLs: `opcua://HOST:PORT` serves on opc.tcp://HOST:PORT/ (default port 4840; `opcua://:4840` binds 127.0.0.1).
Without options the server has security policy None: keep it on the machine network, or turn security on with
`?security=sign|encrypt&users=FILE` (Basic256Sha256, certificates created on first use, user names with
passwords, anonymous access off; see `edge_ad.plc.opcua_security` for every option).
`opcua-client://HOST:PORT[/PATH]?nodes=TEMPLATE` connects to the PLC's server and addresses each signal
with TEMPLATE, where `{name}` is the signal name; the default `ns=2;s=EdgeAD.{name}` matches the server above,
for a Siemens DB use e.g. `nodes=ns=3;s="VisionDB"."{name}"` (URL-encoded). In client mode the PLC's variable types
are read once per connection and used for every write, so a DInt PartIdEcho on the PLC works too.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Mapping
from typing import Any, cast

from edge_ad.errors import ConfigError
from edge_ad.plc.opcua_security import (
    CLIENT_URI,
    SERVER_URI,
    PasswordUsers,
    Security,
    certificate_allow_list,
    ensure_certificate,
    load_users,
    parse_security,
)
from edge_ad.plc.signals import (
    BY_NAME,
    INPUTS,
    OUTPUTS,
    SIGNALS,
    STATE_NAMES,
    VisionState,
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
NAMESPACE = "urn:edge-ad:vision"
ROOT = "EdgeAD"
DEFAULT_TEMPLATE = "ns=2;s=EdgeAD.{name}"
_VARIANT = {"BOOL": "Boolean", "UINT16": "UInt16", "UINT32": "UInt32", "REAL": "Float"}
_GROUP_ORDER = ("Control", "RecipeManagement", "ResultManagement", "Status", "VisionStateMachine")


def _transport_errors() -> tuple[type[BaseException], ...]:
    from asyncua import ua

    return (OSError, ConnectionError, asyncio.TimeoutError, ua.UaError)


def _nid(ident: str, idx: int) -> Any:
    """String node id in namespace `idx` (asyncua's stubs want its NewType wrappers for plain str/int)."""
    from asyncua import ua

    return ua.NodeId(ident, idx)  # type: ignore[arg-type]


def _state_name(value: Value) -> str:
    try:
        return STATE_NAMES[VisionState(int(value))]
    except ValueError:
        return f"Unknown({int(value)})"


class OpcUaServerAdapter:
    """edge-ad serves the node tree; the PLC (or SCADA) reads results and writes Control/RecipeRequest."""

    def __init__(self, host: str = "127.0.0.1", port: int = 4840, security: Security | None = None) -> None:
        self.host, self.port = host or "127.0.0.1", port
        self.security = security or Security()
        self.endpoint = f"opc.tcp://{self.host}:{port}/"
        self.description = f"opcua://{self.host}:{port} (server, {self.security.describe()})"
        self._loop: LoopThread | None = None
        self._server: Any = None
        self._nodes: dict[str, Any] = {}
        self._state_node: Any = None
        self._values: dict[str, Value] = {s.name: default_value(s) for s in SIGNALS}

    def connect(self) -> None:
        if self._server is not None:
            return
        require("asyncua", "OPC UA")
        self._loop = LoopThread("edge-ad-opcua-server")
        try:
            self._server = self._loop.run(self._start(), 30.0, self.description)
        except ConfigError:
            self.close()
            raise
        except (PlcConnectionError, OSError) as e:
            self.close()
            raise PlcConnectionError(f"{self.description}: cannot start ({e})") from e
        log.info("OPC UA server on %s", self.endpoint)

    async def _start(self) -> Any:
        from asyncua import Server, ua

        sec = self.security
        users = PasswordUsers(load_users(sec.users_file)) if sec.enabled and sec.users_file else None
        server = Server(user_manager=cast(Any, users))  # asyncua duck-types it: get_user(iserver, ...)
        await server.init()
        server.set_endpoint(self.endpoint)
        server.set_server_name("edge-ad vision system")
        if sec.enabled:
            await server.set_application_uri(SERVER_URI)
            cert, key = ensure_certificate(sec.cert_dir, "server", SERVER_URI)
            await server.load_certificate(str(cert))
            await server.load_private_key(str(key))
            server.set_security_policy([getattr(ua.SecurityPolicyType, f"Basic256Sha256_{m}") for m in sec.modes])
            server.set_identity_tokens([ua.UserNameIdentityToken])  # anonymous (and unchecked X509) tokens refused
            if sec.trust_dir is not None:
                server.set_certificate_validator(certificate_allow_list(sec.trust_dir))
        else:
            server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
        idx = await server.register_namespace(NAMESPACE)
        root = await server.nodes.objects.add_object(_nid(ROOT, idx), ua.QualifiedName(ROOT, idx))
        folders = {}
        for g in _GROUP_ORDER:
            folders[g] = await root.add_object(_nid(f"{ROOT}.{g}", idx), ua.QualifiedName(g, idx))
        for s in SIGNALS:
            vt = getattr(ua.VariantType, _VARIANT[s.type])
            node = await folders[s.group].add_variable(_nid(f"{ROOT}.{s.name}", idx),
                                                       ua.QualifiedName(s.name, idx),
                                                       ua.Variant(self._values[s.name], vt))
            if s.direction == "in":
                await node.set_writable()
            self._nodes[s.name] = node
        self._state_node = await folders["VisionStateMachine"].add_variable(
            _nid(f"{ROOT}.CurrentState", idx), ua.QualifiedName("CurrentState", idx),
            ua.Variant(_state_name(self._values["VisionState"]), ua.VariantType.String))
        await server.start()
        return server

    def _call(self, coro: Any) -> Any:
        if self._server is None or self._loop is None:
            coro.close()
            raise PlcConnectionError(f"{self.description}: not started")
        return self._loop.run(coro, 2.0, self.description)

    def read_inputs(self) -> dict[str, Value]:
        async def _read() -> dict[str, Value]:
            return {s.name: coerce(s, await self._nodes[s.name].read_value()) for s in INPUTS}

        return self._call(_read())

    def read_outputs(self) -> dict[str, Value]:
        return {s.name: self._values[s.name] for s in OUTPUTS}

    def write_outputs(self, values: Mapping[str, Value]) -> None:
        from asyncua import ua

        async def _write() -> None:
            for name, v in values.items():
                sig = BY_NAME[name]
                if sig.direction != "out":
                    raise PlcError(f"OPC UA: {name!r} is not a vision -> PLC signal")
                cv = coerce(sig, v)
                self._values[name] = cv
                vt = getattr(ua.VariantType, _VARIANT[sig.type])
                await self._server.write_attribute_value(self._nodes[name].nodeid, ua.DataValue(ua.Variant(cv, vt)))
                if name == "VisionState":
                    await self._server.write_attribute_value(
                        self._state_node.nodeid, ua.DataValue(ua.Variant(_state_name(cv), ua.VariantType.String)))

        if values:
            self._call(_write())

    def close(self) -> None:
        if self._server is not None and self._loop is not None:
            try:
                self._loop.run(self._server.stop(), 10.0, self.description)
            except (PlcConnectionError, OSError) as e:
                log.warning("OPC UA server stop: %s", e)
        if self._loop is not None:
            self._loop.stop()
        self._server, self._loop, self._nodes = None, None, {}


class OpcUaClientAdapter:
    """edge-ad as an OPC UA client of the PLC's server; one Read for inputs, one Write per output call."""

    def __init__(self, endpoint: str, template: str = DEFAULT_TEMPLATE, timeout: float = 2.0,
                 security: Security | None = None) -> None:
        if "{name}" not in template:
            raise PlcError(f"OPC UA client: node template {template!r} must contain {{name}}")
        self.endpoint, self.template, self.timeout = endpoint, template, timeout
        self.security = security or Security()
        if self.security.enabled and not os.environ.get(self.security.password_env):
            raise PlcError(f"OPC UA client: user {self.security.user!r} needs its password in "
                           f"${self.security.password_env}")
        self.description = f"opcua-client {endpoint} ({template}, {self.security.describe()})"
        self._loop: LoopThread | None = None
        self._client: Any = None
        self._nodes: dict[str, Any] = {}
        self._types: dict[str, Any] = {}

    def connect(self) -> None:
        require("asyncua", "OPC UA")
        self.close()
        self._loop = LoopThread("edge-ad-opcua-client")
        try:
            self._client = self._loop.run(self._connect(), self.timeout * 3, self.description)
        except PlcConnectionError:
            self.close()
            raise

    async def _connect(self) -> Any:
        from asyncua import Client, ua

        client = Client(self.endpoint, timeout=self.timeout)
        try:
            await self._secure(client)
            await client.connect()
        except _transport_errors() as e:
            await _quiet_disconnect(client)
            raise PlcConnectionError(f"{self.description}: {e or type(e).__name__}") from e
        try:
            nodes = {s.name: client.get_node(self.template.format(name=s.name)) for s in SIGNALS}
            types = {}
            for s in OUTPUTS:
                types[s.name] = await nodes[s.name].read_data_type_as_variant_type()
        except ua.UaStatusCodeError as e:
            await _quiet_disconnect(client)
            raise PlcConnectionError(f"{self.description}: a signal node is missing or unreadable ({e}); check "
                                     f"the nodes= template") from e
        except _transport_errors() as e:
            await _quiet_disconnect(client)
            raise PlcConnectionError(f"{self.description}: {e or type(e).__name__}") from e
        self._nodes, self._types = nodes, types
        return client

    async def _secure(self, client: Any) -> None:
        """Basic256Sha256 with this client's certificate and the user's password (before connect)."""
        from asyncua import ua
        from asyncua.crypto.security_policies import SecurityPolicyBasic256Sha256

        sec = self.security
        if not sec.enabled:
            return
        client.application_uri = CLIENT_URI
        cert, key = ensure_certificate(sec.cert_dir, "client", CLIENT_URI)
        if sec.server_cert is None:
            log.warning("%s: no server_cert= pinned: trusting the certificate the server presents", self.description)
        mode = getattr(ua.MessageSecurityMode, sec.modes[-1])  # SignAndEncrypt when both are allowed
        await client.set_security(SecurityPolicyBasic256Sha256, str(cert), str(key),
                                  server_certificate=str(sec.server_cert) if sec.server_cert else None, mode=mode)
        client.set_user(sec.user or "")
        client.set_password(os.environ.get(sec.password_env, ""))

    def _call(self, coro: Any, what: str) -> Any:
        if self._client is None or self._loop is None:
            coro.close()
            raise PlcConnectionError(f"{self.description}: not connected")

        async def _guarded() -> Any:
            try:
                return await coro
            except _transport_errors() as e:
                raise PlcConnectionError(f"{self.description}: {what}: {e or type(e).__name__}") from e

        return self._loop.run(_guarded(), self.timeout, self.description)

    def _read(self, signals: tuple[Any, ...]) -> dict[str, Value]:
        values = self._call(self._client.read_values([self._nodes[s.name] for s in signals]), "read")
        return {s.name: coerce(s, v) for s, v in zip(signals, values)}

    def read_inputs(self) -> dict[str, Value]:
        return self._read(INPUTS)

    def read_outputs(self) -> dict[str, Value]:
        return self._read(OUTPUTS)

    def write_outputs(self, values: Mapping[str, Value]) -> None:
        from asyncua import ua

        if not values:
            return
        nodes, dvs = [], []
        for name, v in values.items():
            sig = BY_NAME[name]
            if sig.direction != "out":
                raise PlcError(f"OPC UA: {name!r} is not a vision -> PLC signal")
            vt = self._types[name]
            cv = coerce(sig, v)
            native = float(cv) if vt in (ua.VariantType.Float, ua.VariantType.Double) else (
                bool(cv) if vt == ua.VariantType.Boolean else int(cv))
            nodes.append(self._nodes[name])
            dvs.append(ua.DataValue(ua.Variant(native, vt)))
        self._call(self._client.write_values(nodes, dvs), "write")

    def close(self) -> None:
        if self._client is not None and self._loop is not None:
            try:
                self._loop.run(_quiet_disconnect(self._client), self.timeout, self.description)
            except PlcConnectionError as e:
                log.debug("OPC UA disconnect: %s", e)
        if self._loop is not None:
            self._loop.stop()
        self._client, self._loop = None, None


async def _quiet_disconnect(client: Any) -> None:
    """Disconnect a client whose connection may already be dead."""
    try:
        await client.disconnect()
    except Exception as e:
        log.debug("OPC UA disconnect: %s", e)


def adapter_from_url(url: str) -> OpcUaServerAdapter | OpcUaClientAdapter:
    """`opcua://HOST:PORT` (server) or `opcua-client://HOST:PORT[/PATH][?nodes=TEMPLATE&timeout=S]` (client)."""
    scheme, host, port, path, q = parse_url(url, empty_host=url.lower().startswith("opcua:"))
    if scheme == "opcua":
        return OpcUaServerAdapter(host, port or 4840, security=parse_security(q, url, "server"))
    try:
        timeout = float(q.get("timeout", 2.0))
    except ValueError as e:
        raise PlcError(f"--plc {url!r}: timeout must be a number") from e
    if timeout <= 0:
        raise PlcError(f"--plc {url!r}: timeout must be > 0")
    endpoint = f"opc.tcp://{host}:{port or 4840}{path or '/'}"
    return OpcUaClientAdapter(endpoint, q.get("nodes", DEFAULT_TEMPLATE), timeout=timeout,
                              security=parse_security(q, url, "client"))
