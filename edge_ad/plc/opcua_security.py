"""OPC UA security for edge-ad's server and client: Basic256Sha256 Sign / SignAndEncrypt, application
certificates (created on first use), user names with scrypt-hashed passwords, and an optional client allow-list.

URL options (both `opcua://` and `opcua-client://`):

- `security=sign`, `security=encrypt` or `security=sign,encrypt` (default `none`). The server then offers only
  those Basic256Sha256 endpoints, accepts only UserName tokens (anonymous access is off) and checks them against
  `users=FILE`; the password crosses the wire encrypted with the server certificate.
- `certs=DIR`: where this side's certificate (`<role>_cert.der`) and private key (`<role>_key.pem`, mode 0600)
  live; created, self-signed for ten years, when absent. Default `$EDGE_AD_HOME/opcua` or `~/.config/edge-ad/opcua`.
- server `users=FILE`: YAML `{users: {NAME: "scrypt$..."}}`, written by `edge-ad plc-user FILE NAME`.
- server `trust=DIR` (optional): only clients whose certificate (DER or PEM) is in DIR may open a secure channel.
- client `user=NAME`: the password comes from `$EDGE_AD_OPCUA_PASSWORD` (or the variable `password_env=` names),
  never from the URL; `server_cert=FILE` pins the server certificate (otherwise it is taken from the server's
  endpoint list on connect, i.e. trusted on first use, and a warning says so).
"""

from __future__ import annotations

import logging
import os
import re
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from edge_ad.errors import ConfigError
from edge_ad.fileio import atomic_write_bytes, atomic_write_text
from edge_ad.passwords import hash_password, verify_password
from edge_ad.plc.transport import PlcError

log = logging.getLogger(__name__)
MODES: dict[str, str] = {"sign": "Sign", "encrypt": "SignAndEncrypt"}
PASSWORD_ENV = "EDGE_AD_OPCUA_PASSWORD"
SERVER_URI = "urn:edge-ad:vision:server"
CLIENT_URI = "urn:edge-ad:vision:client"
CERT_DAYS = 3650
_USER_NAME = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")
_MAX_USERS_BYTES = 1 << 20


def default_cert_dir() -> Path:
    """`$EDGE_AD_HOME/opcua`, else `~/.config/edge-ad/opcua` (not a cache: pinned peers rely on these files)."""
    home = os.environ.get("EDGE_AD_HOME")
    return (Path(home).expanduser() if home else Path.home() / ".config" / "edge-ad") / "opcua"


@dataclass(frozen=True)
class Security:
    """The security options of one OPC UA URL; `modes` empty = no security."""

    modes: tuple[str, ...] = ()
    cert_dir: Path = field(default_factory=default_cert_dir)
    users_file: Path | None = None
    trust_dir: Path | None = None
    user: str | None = None
    password_env: str = PASSWORD_ENV
    server_cert: Path | None = None

    @property
    def enabled(self) -> bool:
        return bool(self.modes)

    def describe(self) -> str:
        return "Basic256Sha256 " + "+".join(self.modes) if self.modes else "no security"


def parse_security(q: Mapping[str, str], url: str, role: str) -> Security:
    """Security options from a URL query (`role` "server" or "client"); PlcError names a bad or missing option."""
    allowed = {"server": {"security", "certs", "users", "trust"},
               "client": {"security", "certs", "user", "password_env", "server_cert"}}[role]
    raw = q.get("security", "none").strip().lower()
    names = [m.strip() for m in raw.split(",") if m.strip()]
    if names in ([], ["none"]):
        stray = sorted(k for k in allowed - {"security"} if k in q)
        if stray:
            raise PlcError(f"--plc {url!r}: {', '.join(stray)} given without security=sign or security=encrypt")
        return Security()
    bad = [m for m in names if m not in MODES]
    if bad:
        raise PlcError(f"--plc {url!r}: security: expected none, sign, encrypt or sign,encrypt, got {raw!r}")
    modes = tuple(dict.fromkeys(MODES[m] for m in names))
    cert_dir = Path(q["certs"]).expanduser() if q.get("certs") else default_cert_dir()
    if role == "server":
        if not q.get("users"):
            raise PlcError(f"--plc {url!r}: security={raw} needs users=FILE (anonymous access is off when "
                           "security is on); create it with: edge-ad plc-user FILE NAME")
        return Security(modes, cert_dir, users_file=Path(q["users"]).expanduser(),
                        trust_dir=Path(q["trust"]).expanduser() if q.get("trust") else None)
    user = q.get("user") or None
    if user is None:
        raise PlcError(f"--plc {url!r}: security={raw} needs user=NAME (the password comes from "
                       f"${q.get('password_env', PASSWORD_ENV)})")
    return Security(modes, cert_dir, user=user, password_env=q.get("password_env", PASSWORD_ENV),
                    server_cert=Path(q["server_cert"]).expanduser() if q.get("server_cert") else None)


def load_users(path: Path) -> dict[str, str]:
    """{name: password hash} from a users file; ConfigError naming the file and the bad entry."""
    try:
        if path.stat().st_size > _MAX_USERS_BYTES:
            raise ConfigError(f"{path}: users file larger than {_MAX_USERS_BYTES} bytes")
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise ConfigError(f"{path}: cannot read the OPC UA users file ({e.strerror})") from None
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: not valid YAML ({e})") from None
    users = doc.get("users") if isinstance(doc, dict) else None
    if not isinstance(users, dict) or not users:
        raise ConfigError(f"{path}: expected a mapping 'users: {{NAME: HASH}}' with at least one user")
    for name, h in users.items():
        if not isinstance(name, str) or not _USER_NAME.match(name):
            raise ConfigError(f"{path}: users: bad user name {name!r} (letters, digits, _ . @ -, 1-64)")
        if not isinstance(h, str) or not h.startswith("scrypt$") or h.count("$") != 5:
            raise ConfigError(f"{path}: users.{name}: expected a scrypt hash written by `edge-ad plc-user`, "
                              "not a plain password")
    return dict(users)


def set_user(path: Path, name: str, password: str) -> None:
    """Add or replace one user in a users file (created if absent; atomic write, mode 0600)."""
    if not _USER_NAME.match(name):
        raise ConfigError(f"user name {name!r}: expected letters, digits, _ . @ - (1-64 characters)")
    users = load_users(path) if path.exists() else {}
    users[name] = hash_password(password)
    atomic_write_text(path, yaml.safe_dump({"users": users}, sort_keys=True), mode=0o600)


class PasswordUsers:
    """asyncua user manager: a UserName token whose password matches the users file, nothing else."""

    def __init__(self, users: Mapping[str, str]) -> None:
        self._users = dict(users)

    def get_user(self, iserver: Any, username: str | None = None, password: str | None = None,
                 certificate: Any = None) -> Any:
        from asyncua.crypto.permission_rules import User, UserRole

        stored = self._users.get(username or "")
        if stored is None or password is None or not verify_password(password, stored):
            log.warning("OPC UA: login refused for user %r", username)
            return None
        return User(role=UserRole.User, name=username)


# ---- certificates --------------------------------------------------------------------------------------------
def ensure_certificate(cert_dir: Path, role: str, app_uri: str) -> tuple[Path, Path]:
    """(certificate DER, private key PEM) of this application, created self-signed if absent or unusable."""
    from asyncua.crypto import cert_gen, uacrypto
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding
    from cryptography.x509.oid import ExtendedKeyUsageOID

    cert_path, key_path = cert_dir / f"{role}_cert.der", cert_dir / f"{role}_key.pem"
    host = socket.gethostname()
    if cert_path.is_file() and key_path.is_file():
        try:
            cert = x509.load_der_x509_certificate(cert_path.read_bytes())
            if not uacrypto.check_certificate(cert, app_uri, host):
                return cert_path, key_path
            log.warning("%s: certificate expired or does not name %s / %s: creating a new one", cert_path, app_uri,
                        host)
        except (OSError, ValueError) as e:
            log.warning("%s: unreadable certificate (%s): creating a new one", cert_path, e)
    use = [ExtendedKeyUsageOID.SERVER_AUTH if role == "server" else ExtendedKeyUsageOID.CLIENT_AUTH]
    key = cert_gen.generate_private_key()
    cert = cert_gen.generate_self_signed_app_certificate(
        key, f"edge-ad {role} {host}", {"organizationName": "edge-ad"},
        [x509.UniformResourceIdentifier(app_uri), x509.DNSName(host)], extended=use, days=CERT_DAYS)
    cert_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(key_path, cert_gen.dump_private_key_as_pem(key), mode=0o600)
    atomic_write_bytes(cert_path, cert.public_bytes(Encoding.DER))
    log.info("OPC UA %s certificate created: %s (valid until %s)", role, cert_path, cert.not_valid_after_utc.date())
    return cert_path, key_path


def _fingerprints(trust_dir: Path) -> set[bytes]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes

    out: set[bytes] = set()
    if not trust_dir.is_dir():
        raise PlcError(f"trust={trust_dir}: not a directory of client certificates")
    for p in sorted(trust_dir.iterdir()):
        if not p.is_file():
            continue
        data = p.read_bytes()
        try:
            cert = (
                x509.load_pem_x509_certificate(data) if b"-----BEGIN" in data else x509.load_der_x509_certificate(data)
            )
        except ValueError:
            log.warning("trust=%s: %s is not a certificate; ignored", trust_dir, p.name)
            continue
        out.add(cert.fingerprint(hashes.SHA256()))
    return out


def certificate_allow_list(trust_dir: Path) -> Any:
    """asyncua certificate validator that accepts exactly the client certificates found in `trust_dir`."""
    from asyncua import ua
    from asyncua.common.utils import ServiceError
    from cryptography.hazmat.primitives import hashes

    allowed = _fingerprints(trust_dir)
    log.info("OPC UA: %d trusted client certificate(s) in %s", len(allowed), trust_dir)

    async def validate(cert: Any, _app: Any) -> None:
        if cert.fingerprint(hashes.SHA256()) not in allowed:
            log.warning("OPC UA: client certificate %s refused (not in %s)", cert.subject.rfc4514_string(), trust_dir)
            raise ServiceError(ua.StatusCodes.BadCertificateUntrusted)

    return validate
