"""Password hashes for every login of the station (OPC UA users, HMI users): scrypt with a random salt, checked in
constant time. Nothing else is ever stored."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

from edge_ad.errors import ConfigError

_SCRYPT = {"n": 2**14, "r": 8, "p": 1}


def hash_password(password: str) -> str:
    """`scrypt$n$r$p$salt$hash` (base64) of a password; never store the password itself."""
    if not password:
        raise ConfigError("password: must not be empty")
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode("utf-8"), salt=salt, dklen=32, **_SCRYPT)
    b64 = base64.b64encode
    return f"scrypt${_SCRYPT['n']}${_SCRYPT['r']}${_SCRYPT['p']}${b64(salt).decode()}${b64(digest).decode()}"


def verify_password(password: str, stored: str) -> bool:
    """True if `password` matches a `hash_password` string (constant-time compare; False for a malformed one)."""
    try:
        kind, n, r, p, salt, digest = stored.split("$")
        if kind != "scrypt" or not (2 <= int(n) <= 2**20 and 1 <= int(r) <= 32 and 1 <= int(p) <= 16):
            return False
        want = base64.b64decode(digest, validate=True)
        got = hashlib.scrypt(password.encode("utf-8"), salt=base64.b64decode(salt, validate=True), dklen=len(want),
                             n=int(n), r=int(r), p=int(p))
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got, want)
