"""The gateway's own SSH keys, kept in ``data_dir/ssh``: the host key clients
pin (stable across restarts) and the user CA that signs short-lived
certificates (``hoopd ssh-cert``).

A certificate's key id carries the identity as compact JSON
(``{"sub": ..., "groups": [...], "email": ...}``); the CA signature is what
makes it trustworthy, so nothing else is looked up at login.
"""

from __future__ import annotations

import json
import os
import secrets
import time
from pathlib import Path

import asyncssh
from asyncssh.public_key import SSHOpenSSHCertificate

from hoopd.model import AuthMethod, Identity

HOST_KEY_FILE = "ssh/host_key"
CA_KEY_FILE = "ssh/user_ca"


def load_or_create_key(path: Path) -> asyncssh.SSHKey:
    """An ed25519 private key in OpenSSH format, created 0600 on first use.
    Two processes racing to create it end with the same key."""
    try:
        return asyncssh.read_private_key(path)
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = asyncssh.generate_private_key("ssh-ed25519", comment=f"hoopd {path.name}")
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, key.export_private_key())
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(tmp, path)
    except FileExistsError:
        key = asyncssh.read_private_key(path)
    finally:
        tmp.unlink(missing_ok=True)
    pub = path.with_name(path.name + ".pub")
    if not pub.exists():
        pub.write_bytes(key.export_public_key())
    return key


def host_key(data_dir: Path) -> asyncssh.SSHKey:
    return load_or_create_key(Path(data_dir) / HOST_KEY_FILE)


def user_ca(data_dir: Path) -> asyncssh.SSHKey:
    return load_or_create_key(Path(data_dir) / CA_KEY_FILE)


def issue_user_cert(
    ca: asyncssh.SSHKey,
    user_key: asyncssh.SSHKey,
    identity: Identity,
    principals: list[str],
    ttl: float,
) -> SSHOpenSSHCertificate:
    """A user certificate for ``identity`` valid for ``ttl`` seconds (never
    past the identity's own expiry), usable with the given login names."""
    now = time.time()
    until = now + ttl
    if identity.expires_at is not None:
        until = min(until, identity.expires_at)
    if until <= now:
        raise ValueError("the credential has already expired")
    key_id = json.dumps(
        {"sub": identity.subject, "groups": sorted(identity.groups), "email": identity.email},
        separators=(",", ":"),
    )
    return ca.generate_user_certificate(
        user_key,
        key_id,
        serial=secrets.randbits(63),
        principals=principals,
        valid_after=int(now) - 60,
        valid_before=int(until),
        # The certificate only works at this gateway, whose connection options
        # (allow_agent_forwarding, allow_x11_forwarding, off by default)
        # decide; denying them here too would make -A and -X fail for
        # certificate users where the gateway allows them.
        permit_x11_forwarding=True,
        permit_agent_forwarding=True,
        permit_user_rc=False,
        comment=f"hoopd {identity.subject}",
    )


def identity_from_cert(cert: SSHOpenSSHCertificate) -> Identity | None:
    """The identity a gateway-signed certificate carries (None if malformed)."""
    try:
        claims = json.loads(getattr(cert, "_key_id", "") or "")
    except (TypeError, ValueError):
        return None
    if not isinstance(claims, dict):
        return None
    sub, groups, email = claims.get("sub"), claims.get("groups", []), claims.get("email", "")
    if not isinstance(sub, str) or not sub or not isinstance(groups, list):
        return None
    if not all(isinstance(g, str) for g in groups) or not isinstance(email, str):
        return None
    valid_before = getattr(cert, "_valid_before", None)
    return Identity(
        subject=sub,
        groups=frozenset(groups),
        method=AuthMethod.SSH_CERT,
        issuer="hoopd-ssh-ca",
        email=email,
        expires_at=float(valid_before) if isinstance(valid_before, int) else None,
    )
