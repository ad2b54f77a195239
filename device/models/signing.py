"""Ed25519 keys and detached signatures for model bundles."""

from __future__ import annotations

import base64
import functools
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

PRIVATE_KEY_NAME = "advisor.key"
PUBLIC_KEY_NAME = "advisor.pub"


class KeyFileError(Exception):
    """A key file is missing, unreadable or not an Ed25519 key."""


@dataclass(frozen=True, slots=True)
class PublicKey:
    """A trusted verification key with its short id (first 16 hex digits of its sha256)."""

    key: Ed25519PublicKey
    key_id: str

    def verify(self, signature: bytes, message: bytes) -> bool:
        try:
            self.key.verify(signature, message)
        except InvalidSignature:
            return False
        return True


def key_id(public: Ed25519PublicKey) -> str:
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def generate(out_dir: Path) -> tuple[Path, Path]:
    """Write a new key pair as ``advisor.key`` (mode 600) and ``advisor.pub``; never overwrite."""
    out_dir.mkdir(parents=True, exist_ok=True)
    private_path, public_path = out_dir / PRIVATE_KEY_NAME, out_dir / PUBLIC_KEY_NAME
    for path in (private_path, public_path):
        if path.exists():
            raise KeyFileError(f"{path} already exists; refusing to overwrite a key")
    private = Ed25519PrivateKey.generate()
    pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(pem)
    public_path.write_bytes(
        private.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    return private_path, public_path


def _load(path: Path, which: str, parse, expected: type):
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise KeyFileError(f"{path}: cannot read {which} key ({exc.strerror})") from exc
    try:
        key = parse(data)
    except (ValueError, TypeError) as exc:
        raise KeyFileError(f"{path}: not a PEM {which} key") from exc
    if not isinstance(key, expected):
        raise KeyFileError(f"{path}: not an Ed25519 {which} key")
    return key


def load_private(path: Path) -> Ed25519PrivateKey:
    """An Ed25519 private key from a PEM file."""
    parse = functools.partial(serialization.load_pem_private_key, password=None)
    return _load(path, "private", parse, Ed25519PrivateKey)


def load_public(path: Path) -> PublicKey:
    """A trusted Ed25519 public key from a PEM file."""
    key = _load(path, "public", serialization.load_pem_public_key, Ed25519PublicKey)
    return PublicKey(key, key_id(key))


def sign(private: Ed25519PrivateKey, message: bytes) -> dict:
    """A detached signature record: algorithm, key id and base64 signature."""
    return {
        "algorithm": "ed25519",
        "key_id": key_id(private.public_key()),
        "signature": base64.b64encode(private.sign(message)).decode("ascii"),
    }


def decode_signature(record: dict) -> tuple[str, bytes]:
    """Key id and raw signature of a signature record; ValueError if malformed."""
    if not isinstance(record, dict) or record.get("algorithm") != "ed25519":
        raise ValueError("signature is not an ed25519 signature record")
    kid, sig = record.get("key_id"), record.get("signature")
    if not isinstance(kid, str) or not isinstance(sig, str):
        raise ValueError("signature record lacks key_id or signature")
    try:
        raw = base64.b64decode(sig, validate=True)
    except ValueError as exc:
        raise ValueError("signature is not valid base64") from exc
    return kid, raw
