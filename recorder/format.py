"""Byte-level constants and helpers of the recording format (version 1).

Everything that determines bytes on disk lives here so that the writer, the
reader and the verifier cannot drift apart. The normative description is
docs/recording-format.md; keep the two in sync.
"""

from __future__ import annotations

import hashlib
import re
import struct
from typing import Final

FORMAT_NAME: Final = "hoopd-recording"
FORMAT_VERSION: Final = 1
SEGMENT_SUFFIX: Final = ".hrec"
SEGMENT_RE: Final = re.compile(r"^(\d{6})\.hrec$")
PUBLIC_KEY_NAME: Final = "recording-signing-key.pub"
# Session ids become directory names: keep them to a safe, portable alphabet.
SESSION_ID_RE: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,199}$")

# Frame types. The value is also the single "type byte" fed to the hash.
HEADER: Final = 1
EVENT: Final = 2
CHECKPOINT: Final = 3
FRAME_TYPES: Final = (HEADER, EVENT, CHECKPOINT)
TYPE_BYTES: Final[dict[int, bytes]] = {t: bytes([t]) for t in FRAME_TYPES}

# Checkpoint kinds.
CK_PERIODIC: Final = "periodic"
CK_ROTATE: Final = "rotate"
CK_CLOSE: Final = "close"
CHECKPOINT_KINDS: Final = (CK_PERIODIC, CK_ROTATE, CK_CLOSE)

HASH_NAME: Final = "sha256"  # chosen over BLAKE2b: SHA-NI makes it ~2x faster here
HASH_LEN: Final = 32
# msgpack bin8 header of a 32-byte hash: every frame ends with these 34 bytes.
HASH_BIN_HEADER: Final = b"\xc4\x20"
FIXARRAY3: Final = 0x93

_GENESIS_DOMAIN: Final = b"hoopd-recording/v1 genesis\x00"
_CHECKPOINT_DOMAIN: Final = b"hoopd-recording/v1 checkpoint\x00"

# A base object that is copied for every frame: copying an initialised
# OpenSSL context is cheaper than constructing a new one.
_BASE_HASH: Final = hashlib.sha256()
new_hash = _BASE_HASH.copy


def genesis_hash(session_id: str) -> bytes:
    """The chain value "before" the first frame of a session."""
    return hashlib.sha256(_GENESIS_DOMAIN + session_id.encode()).digest()


def chain_hash(prev: bytes, frame_type: int, payload: bytes) -> bytes:
    """hash = SHA-256(prev_hash || type byte || payload)."""
    h = new_hash()
    h.update(prev)
    h.update(TYPE_BYTES[frame_type])
    h.update(payload)
    return h.digest()


def bin_header(n: int) -> bytes:
    """Canonical (smallest) msgpack bin header for a payload of n bytes."""
    if n < 0x100:
        return b"\xc4" + bytes((n,))
    if n < 0x10000:
        return b"\xc5" + n.to_bytes(2, "big")
    if n < 0x100000000:
        return b"\xc6" + n.to_bytes(4, "big")
    raise ValueError("frame payload too large")


def frame_head(frame_type: int, n: int) -> bytes:
    """Bytes that precede a payload of n bytes: fixarray(3), type, bin header."""
    return bytes((FIXARRAY3, frame_type)) + bin_header(n)


def encode_frame(frame_type: int, payload: bytes, digest: bytes) -> bytes:
    return frame_head(frame_type, len(payload)) + payload + HASH_BIN_HEADER + digest


_SIG_FIXED = struct.Struct(">IQ")


def checkpoint_sig_input(
    session_id: str, segment: int, seq: int, kind: str, prev_hash: bytes
) -> bytes:
    """What a checkpoint's ed25519 signature covers.

    prev_hash is the hash of the frame just before the checkpoint, so the
    signature commits to the whole chain up to that point; the other fields
    pin the checkpoint to its session, file and position.
    """
    sid = session_id.encode()
    return b"".join(
        (
            _CHECKPOINT_DOMAIN,
            len(sid).to_bytes(2, "big"),
            sid,
            _SIG_FIXED.pack(segment, seq),
            kind.encode(),
            b"\x00",
            prev_hash,
        )
    )


def segment_name(segment: int) -> str:
    return f"{segment:06d}{SEGMENT_SUFFIX}"


def valid_session_id(session_id: str) -> bool:
    return bool(SESSION_ID_RE.match(session_id)) and session_id not in (".", "..")
