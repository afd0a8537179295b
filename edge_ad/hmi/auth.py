"""HMI users and sessions: scrypt password hashes in a YAML file, roles `operator` (read-only) and `engineer` (may
change the station), HMAC-signed session cookies, and a per-address login back-off against password guessing.

Users file: `{users: {NAME: {role: engineer, password: "scrypt$..."}}}`, written by `edge-ad hmi-user FILE NAME
--role engineer` (mode 0600; the password itself is never stored).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from pathlib import Path
from typing import Any

import yaml

from edge_ad.errors import ConfigError
from edge_ad.fileio import atomic_write_text, read_yaml_file
from edge_ad.passwords import hash_password, verify_password

ROLES = ("operator", "engineer")
SESSION_S = 8 * 3600  # one shift


def load_users(path: str | Path) -> dict[str, dict[str, str]]:
    """NAME -> {"role", "password"} from the users file; ConfigError naming the entry that is wrong."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{p}: HMI users file not found (create it with `edge-ad hmi-user {p} NAME`)")
    doc = read_yaml_file(p, "HMI users file") or {}
    users = doc.get("users") if isinstance(doc, dict) else None
    if not isinstance(users, dict):
        raise ConfigError(f"{p}: expected a mapping 'users: {{NAME: {{role, password}}}}'")
    out = {}
    for name, entry in users.items():
        if not isinstance(entry, dict) or entry.get("role") not in ROLES or not str(entry.get("password", "")
                                                                                   ).startswith("scrypt$"):
            raise ConfigError(f"{p}: users.{name}: expected {{role: operator|engineer, password: 'scrypt$...'}}")
        out[str(name)] = {"role": str(entry["role"]), "password": str(entry["password"])}
    return out


def set_user(path: str | Path, name: str, password: str, role: str) -> None:
    """Add or replace a user (atomic, mode 0600)."""
    if role not in ROLES:
        raise ConfigError(f"role: expected one of {list(ROLES)}, got {role!r}")
    if not name or any(c in name for c in ":\n\r"):
        raise ConfigError(f"user name {name!r}: expected a non-empty name without ':' or line breaks")
    if len(password) < 8:
        raise ConfigError("password: expected at least 8 characters")
    p = Path(path)
    users = load_users(p) if p.is_file() else {}
    users[name] = {"role": role, "password": hash_password(password)}
    atomic_write_text(p, yaml.safe_dump({"users": users}, sort_keys=True), mode=0o600)


class Sessions:
    """Signed session tokens `name:role:expiry:mac` (a per-process secret: a restart logs everybody out) and
    login back-off: after a failure an address waits 1, 2, 4 ... up to 30 s before the next try counts."""

    def __init__(self, users: dict[str, dict[str, str]]) -> None:
        self.users = users
        self._secret = secrets.token_bytes(32)
        self._fail: dict[str, tuple[int, float]] = {}
        self._lock = threading.Lock()

    def _mac(self, payload: str) -> str:
        return hmac.new(self._secret, payload.encode(), hashlib.sha256).hexdigest()

    def login(self, name: str, password: str, client: str) -> tuple[str | None, str]:
        """(token, "") on success, else (None, why)."""
        now = time.monotonic()
        with self._lock:
            fails, until = self._fail.get(client, (0, 0.0))
            if now < until:
                return None, f"too many failed logins: try again in {until - now:.0f} s"
        user = self.users.get(name)
        ok = verify_password(password, user["password"]) if user else verify_password(password, _DUMMY)
        with self._lock:
            if not ok or user is None:
                fails += 1
                self._fail[client] = (fails, now + min(30.0, 2.0 ** (fails - 1)))
                return None, "unknown user or wrong password"
            self._fail.pop(client, None)
        expiry = int(time.time()) + SESSION_S
        payload = f"{name}:{user['role']}:{expiry}"
        return f"{payload}:{self._mac(payload)}", ""

    def check(self, token: str | None) -> dict[str, Any] | None:
        """{"user", "role"} of a valid, unexpired token whose user still exists with that role; else None."""
        if not token or token.count(":") != 3:
            return None
        name, role, expiry, mac = token.split(":")
        if not hmac.compare_digest(mac, self._mac(f"{name}:{role}:{expiry}")):
            return None
        if not expiry.isdigit() or int(expiry) < time.time():
            return None
        user = self.users.get(name)
        return {"user": name, "role": role} if user and user["role"] == role else None


_DUMMY = hash_password(secrets.token_hex(8))  # equal work for unknown users: no timing oracle on user names
