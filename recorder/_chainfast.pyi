# Stub of the optional C accelerator (recorder/_chainfast.c).
from hoopd.model import Stream

OPENSSL_VERSION: str

def append_outputs(
    items: list[tuple[int, int, object]],
    i: int,
    prev: bytes,
    nframes: int,
    size: int,
    last_seq: int,
    ckpt_due: int,
    flush_due: int,
    buf: list[bytes],
    output_type: type,
    starts: dict[Stream, bytes],
    starts_cseq: dict[Stream, bytes],
    layouts: dict[type, tuple[tuple[bytes, str | None, int, object], ...]] = ...,
    /,
) -> tuple[int, bytes, int, int, int, int]: ...
