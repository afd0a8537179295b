"""Package signatures: Ed25519 over the package digest, so a station can refuse any package its owner did not sign.

The digest (`manifest.digest`, see package.py) covers the canonical manifest and, through its `files` table, every
file the package holds; `signature.json` signs that digest and names the public key. With trusted keys configured
(`load_package(..., trusted_keys=...)`, `--trusted-key`, or `$EDGE_AD_TRUSTED_KEYS`) an unsigned package, one signed
by another key, or one whose digest no longer matches its signature (edited, then re-signed by someone else) is
refused. Keys are PEM files: `edge-ad keygen` writes a private key (mode 0600) and its public key.
Needs the `cryptography` package (`pip install 'edge-ad[security]'`) only where keys are used.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from edge_ad.errors import ConfigError, PackageError
from edge_ad.fileio import atomic_write_bytes, atomic_write_json
from edge_ad.optional import require

SIGNATURE_NAME = "signature.json"
SIGNATURE_FORMAT = "edge-ad/signature"
TRUSTED_KEYS_ENV = "EDGE_AD_TRUSTED_KEYS"


def _crypto() -> Any:
    serialization = require("cryptography.hazmat.primitives.serialization", "package signing")
    ed25519 = require("cryptography.hazmat.primitives.asymmetric.ed25519", "package signing")
    return serialization, ed25519


@dataclass(frozen=True)
class PublicKey:
    """A trusted Ed25519 public key: the raw 32 bytes and its id (first 16 hex digits of their sha256)."""

    raw: bytes
    source: str

    @property
    def key_id(self) -> str:
        return hashlib.sha256(self.raw).hexdigest()[:16]


def load_public_key(path: str | Path) -> PublicKey:
    """An Ed25519 public key from a PEM file (as `edge-ad keygen` writes); ConfigError naming the file otherwise."""
    serialization, ed25519 = _crypto()
    p = Path(path)
    try:
        key = serialization.load_pem_public_key(p.read_bytes())
    except OSError as e:
        raise ConfigError(f"{p}: cannot read the public key ({e.strerror})") from None
    except ValueError as e:
        raise ConfigError(f"{p}: not a PEM public key ({e})") from None
    if not isinstance(key, ed25519.Ed25519PublicKey):
        raise ConfigError(f"{p}: expected an Ed25519 public key, got {type(key).__name__}")
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return PublicKey(raw, str(p))


def trusted_keys_from_env() -> list[PublicKey]:
    """Keys listed in $EDGE_AD_TRUSTED_KEYS (PEM files separated by os.pathsep); none when it is unset."""
    value = os.environ.get(TRUSTED_KEYS_ENV, "").strip()
    return [load_public_key(p) for p in value.split(os.pathsep) if p.strip()] if value else []


def resolve_trusted_keys(keys: list[str | Path | PublicKey] | None) -> list[PublicKey]:
    """Explicit keys (paths or PublicKey) plus those of $EDGE_AD_TRUSTED_KEYS."""
    out = [k if isinstance(k, PublicKey) else load_public_key(k) for k in keys or []]
    return out + trusted_keys_from_env()


def keygen(private_path: str | Path, public_path: str | Path | None = None, force: bool = False) -> tuple[Path, Path]:
    """Write a new Ed25519 private key (PEM, PKCS8, mode 0600) and its public key (PEM); returns both paths."""
    serialization, ed25519 = _crypto()
    priv = Path(private_path)
    pub = Path(public_path) if public_path else priv.with_name(priv.stem + ".pub.pem")
    for p in (priv, pub):
        if p.exists() and not force:
            raise ConfigError(f"{p}: already exists; choose another path or pass --force")
    key = ed25519.Ed25519PrivateKey.generate()
    priv_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                 serialization.NoEncryption())
    pub_pem = key.public_key().public_bytes(serialization.Encoding.PEM,
                                            serialization.PublicFormat.SubjectPublicKeyInfo)
    atomic_write_bytes(priv, priv_pem, fsync=True, mode=0o600)
    atomic_write_bytes(pub, pub_pem, fsync=True)
    return priv, pub


def sign_digest(root: Path, digest: str, private_key: str | Path) -> Path:
    """Sign a verified package's digest with the private key; writes and returns root/signature.json (an old
    signature is replaced). `edge_ad.runtime.package.sign_package` verifies the package first."""
    serialization, ed25519 = _crypto()
    kp = Path(private_key)
    try:
        key = serialization.load_pem_private_key(kp.read_bytes(), password=None)
    except OSError as e:
        raise ConfigError(f"{kp}: cannot read the private key ({e.strerror})") from None
    except (ValueError, TypeError) as e:
        raise ConfigError(f"{kp}: not an unencrypted PEM private key ({e})") from None
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise ConfigError(f"{kp}: expected an Ed25519 private key, got {type(key).__name__}")
    raw_pub = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    doc = {"format": SIGNATURE_FORMAT, "version": 1, "algorithm": "ed25519", "digest": digest,
           "public_key": base64.b64encode(raw_pub).decode(), "key_id": PublicKey(raw_pub, str(kp)).key_id,
           "signature": base64.b64encode(key.sign(digest.encode())).decode(),
           "signed": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")}
    out = root / SIGNATURE_NAME
    atomic_write_json(out, doc)
    return out


def verify_signature(root: Path, digest: str, trusted: list[PublicKey]) -> str:
    """Check root/signature.json against the package digest and the trusted keys; returns the signer's key id.

    PackageError (naming the reason) when the package is unsigned, signed for another digest, signed by a key that
    is not trusted, or the signature does not verify."""
    _, ed25519 = _crypto()
    sig_path = root / SIGNATURE_NAME
    ids = ", ".join(f"{k.key_id} ({k.source})" for k in trusted)
    if not sig_path.is_file() or sig_path.is_symlink():
        raise PackageError(f"{root}: unsigned package ({SIGNATURE_NAME} missing) and trusted keys are configured "
                           f"({ids}): sign it with `edge-ad sign {root} --key KEY.pem`")
    try:
        if sig_path.stat().st_size > 64 * 1024:
            raise ValueError("larger than 64 KiB")
        doc = json.loads(sig_path.read_text(encoding="utf-8"))
        sig = base64.b64decode(doc["signature"], validate=True)
        pub_raw = base64.b64decode(doc["public_key"], validate=True)
        signed_digest = str(doc["digest"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise PackageError(f"{sig_path}: unreadable signature ({e})") from None
    if doc.get("format") != SIGNATURE_FORMAT or doc.get("algorithm") != "ed25519":
        raise PackageError(f"{sig_path}: format/algorithm: expected {SIGNATURE_FORMAT}/ed25519, got "
                           f"{doc.get('format')!r}/{doc.get('algorithm')!r}")
    if signed_digest != digest:
        raise PackageError(f"{sig_path}: the signature is for digest {signed_digest[:16]}..., the package's digest is "
                           f"{digest[:16]}...: the package changed after it was signed")
    key = next((k for k in trusted if k.raw == pub_raw), None)
    if key is None:
        raise PackageError(f"{sig_path}: signed by key {hashlib.sha256(pub_raw).hexdigest()[:16]}, which is not one "
                           f"of the trusted keys ({ids})")
    try:
        ed25519.Ed25519PublicKey.from_public_bytes(key.raw).verify(sig, digest.encode())
    except Exception:  # cryptography raises InvalidSignature
        raise PackageError(f"{sig_path}: the signature does not verify with key {key.key_id} (forged or "
                           "corrupted)") from None
    return key.key_id
