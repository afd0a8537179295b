"""HMI users and sessions: scrypt password hashes in a YAML file, roles `operator` (read-only) and `engineer` (may
change the station), random server-side session tokens with a CSRF token each, and login back-off per account and
per address against password guessing.

Users file: `{users: {NAME: {role: engineer, password: "scrypt$..."}}}`, written by `edge-ad hmi-user FILE NAME
--role engineer` (mode 0600; the password itself is never stored).
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from edge_ad.errors import ConfigError
from edge_ad.fileio import atomic_write_text, read_yaml_file
from edge_ad.passwords import hash_password, verify_password

log = logging.getLogger(__name__)
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
    if not name or len(name) > 64 or any(not c.isprintable() for c in name):
        raise ConfigError(f"user name {name!r}: expected 1..64 printable characters (any language)")
    if len(password) < 8:
        raise ConfigError("password: expected at least 8 characters")
    p = Path(path)
    users = load_users(p) if p.is_file() else {}
    users[name] = {"role": role, "password": hash_password(password)}
    atomic_write_text(p, yaml.safe_dump({"users": users}, sort_keys=True), mode=0o600)


@dataclass
class Session:
    """One login: who, the role it was granted, its CSRF token, and when it was made and last used."""

    user: str
    role: str
    csrf: str
    created: float
    last_seen: float


class Sessions:
    """Server-side sessions behind random tokens (`secrets`; a restart logs everybody out), revoked on logout, on an
    idle time-out, after a shift, and as soon as the user is removed from the users file or changes role (the file
    is re-read when it changes). Password guessing is slowed per account and per address: after a failure the
    account and the address wait 1, 2, 4 ... up to 300 s (account) / 30 s (address) before a try counts."""

    IDLE_S = 30 * 60
    MAX_SESSIONS = 256

    def __init__(self, users: dict[str, dict[str, str]], users_file: str | Path | None = None) -> None:
        self.users = users
        self._file = Path(users_file) if users_file else None
        self._mtime = self._file.stat().st_mtime_ns if self._file is not None and self._file.is_file() else None
        self._checked = 0.0
        self._sessions: dict[str, Session] = {}
        self._fail_addr: dict[str, tuple[int, float]] = {}
        self._fail_user: dict[str, tuple[int, float]] = {}
        self._lock = threading.Lock()

    @classmethod
    def from_file(cls, path: str | Path) -> Sessions:
        return cls(load_users(path), path)

    def _reload(self) -> None:
        """Re-read the users file when it changed (at most once a second); sessions of removed users or changed
        roles end. A file that became unreadable keeps the last good users (and is logged)."""
        now = time.monotonic()
        if self._file is None or now - self._checked < 1.0:
            return
        self._checked = now
        try:
            mtime = self._file.stat().st_mtime_ns
            if mtime == self._mtime:
                return
            users = load_users(self._file)
        except (OSError, ConfigError) as e:
            log.error("HMI users file %s: %s (keeping the users read before)", self._file, e)
            return
        with self._lock:
            self._mtime, self.users = mtime, users
            for token, sess in list(self._sessions.items()):
                u = users.get(sess.user)
                if u is None or u["role"] != sess.role:
                    del self._sessions[token]

    @staticmethod
    def _waiting(table: dict[str, tuple[int, float]], key: str, now: float) -> float:
        _, until = table.get(key, (0, 0.0))
        return max(0.0, until - now)

    def login(self, name: str, password: str, client: str) -> tuple[str | None, str]:
        """(token, "") on success, else (None, why). Runs the password hash (slow on purpose): call it off the
        event loop."""
        self._reload()
        now = time.monotonic()
        with self._lock:
            wait = max(self._waiting(self._fail_addr, client, now), self._waiting(self._fail_user, name, now))
            if wait > 0:
                return None, f"too many failed logins: try again in {wait:.0f} s"
        user = self.users.get(name)
        ok = verify_password(password, user["password"]) if user else verify_password(password, _DUMMY)
        now = time.monotonic()
        with self._lock:
            if not ok or user is None:
                for table, key, cap in ((self._fail_addr, client, 30.0), (self._fail_user, name, 300.0)):
                    fails = table.get(key, (0, 0.0))[0] + 1
                    table[key] = (fails, now + min(cap, 2.0 ** (fails - 1)))
                if len(self._fail_user) > 10_000:  # names are attacker-chosen: keep the table bounded
                    self._fail_user.pop(next(iter(self._fail_user)))
                if len(self._fail_addr) > 10_000:
                    self._fail_addr.pop(next(iter(self._fail_addr)))
                return None, "unknown user or wrong password"
            self._fail_addr.pop(client, None)
            self._fail_user.pop(name, None)
            token = secrets.token_urlsafe(32)
            self._sessions[token] = Session(name, user["role"], secrets.token_urlsafe(24), now, now)
            while len(self._sessions) > self.MAX_SESSIONS:
                self._sessions.pop(next(iter(self._sessions)))
        return token, ""

    def check(self, token: str | None) -> dict[str, Any] | None:
        """{"user", "role", "csrf"} of a live session whose user still exists with that role; else None."""
        if not token:
            return None
        self._reload()
        now = time.monotonic()
        with self._lock:
            sess = self._sessions.get(token)
            if sess is None:
                return None
            user = self.users.get(sess.user)
            if (user is None or user["role"] != sess.role or now - sess.last_seen > self.IDLE_S
                    or now - sess.created > SESSION_S):
                del self._sessions[token]
                return None
            sess.last_seen = now
            return {"user": sess.user, "role": sess.role, "csrf": sess.csrf}

    def logout(self, token: str | None) -> None:
        if token:
            with self._lock:
                self._sessions.pop(token, None)


_DUMMY = hash_password(secrets.token_hex(8))  # equal work for unknown users: no timing oracle on user names
