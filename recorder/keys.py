"""Signing keys for recording checkpoints (ed25519, PEM on disk)."""

from __future__ import annotations

import base64
import hashlib
import os
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from recorder.format import PUBLIC_KEY_NAME


def load_or_create_signing_key(path: Path) -> Ed25519PrivateKey:
    """Load the PEM private key at path, creating it (mode 0600) if absent."""
    path = Path(path)
    if path.exists():
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        if not isinstance(key, Ed25519PrivateKey):
            raise ValueError(f"{path}: not an ed25519 private key")
        return key
    path.parent.mkdir(parents=True, exist_ok=True)
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    # O_EXCL: never overwrite a key another process created meanwhile; the
    # mode is set at creation so the key is never world-readable, not even briefly.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, pem)
        os.fsync(fd)
    finally:
        os.close(fd)
    return key


def public_pem(pub: Ed25519PublicKey) -> bytes:
    return pub.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def export_public_key(key: Ed25519PrivateKey, recordings_dir: Path) -> Path:
    """Write <recordings_dir>/recording-signing-key.pub (PEM) and return its path."""
    recordings_dir = Path(recordings_dir)
    recordings_dir.mkdir(parents=True, exist_ok=True)
    path = recordings_dir / PUBLIC_KEY_NAME
    tmp = path.with_suffix(".pub.tmp")
    tmp.write_bytes(public_pem(key.public_key()))
    os.replace(tmp, path)  # atomic: readers never see a half-written key
    return path


def load_public_key(path: Path) -> Ed25519PublicKey:
    key = serialization.load_pem_public_key(Path(path).read_bytes())
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError(f"{path}: not an ed25519 public key")
    return key


def key_fingerprint(pub: Ed25519PublicKey) -> str:
    """OpenSSH-style fingerprint of the raw public key: SHA256:<base64>."""
    raw = pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    digest = hashlib.sha256(raw).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")
