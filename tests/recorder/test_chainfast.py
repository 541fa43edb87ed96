"""The C accelerator (recorder._chainfast) writes the same bytes as the
Python loop of ChainWriter.append_events, which is the reference."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import recorder.chain as chain_mod
from hoopd.model import Command, CommandKind, Output, Stream
from recorder.chain import ChainWriter, UnencodableEvent
from recorder.reader import segment_files
from recorder.verify import Status, verify_session

from .helpers import KEY, events

_chainfast: ModuleType | None
try:
    import recorder._chainfast as _chainfast
except ImportError:
    _chainfast = None

pytestmark = pytest.mark.skipif(
    _chainfast is None,
    reason="recorder._chainfast is not built (install with a C compiler and OpenSSL's "
    "headers, e.g. apt-get install gcc libssl-dev, then pip install -e .)",
)

ROOT = Path(__file__).resolve().parents[2]
TS = 1_800_000_000_000_000_000
U64 = 2**64 - 1
SEQ_EDGES = [0, 1, 255, 256, 257, 65535, 65536, 2**32 - 1, 2**32, U64]
TS_EDGES = [0, 255, 2**32 - 1, 2**32, TS, U64]
LEN_EDGES = [0, 1, 255, 256, 1024, 65535, 65536]
CSEQ_EDGES = [0, 1, 127, 128, 255, 256, 65535, 65536, 2**32 - 1, 2**32, U64]

u64 = st.integers(0, U64)
outputs = st.builds(
    Output,
    stream=st.sampled_from(list(Stream)),
    data=st.one_of(
        st.sampled_from(LEN_EDGES).map(lambda n: bytes([n % 251]) * n),
        st.binary(min_size=256, max_size=2000),
        st.binary(max_size=300),
        st.binary(min_size=256, max_size=300).map(bytearray),  # not bytes: the packer's
    ),
    command_seq=st.one_of(st.sampled_from(CSEQ_EDGES), u64, st.just(True)),
    masked=st.one_of(
        st.just({}), st.dictionaries(st.text(max_size=5), st.integers(0, 9), max_size=2)
    ),
)
items = st.tuples(
    st.one_of(st.sampled_from(SEQ_EDGES), u64, st.integers(256, 70000)),
    st.one_of(st.sampled_from(TS_EDGES), u64, st.just(TS)),
    st.one_of(outputs, outputs, outputs, events),
).map(lambda t: t if t[0] % 7 else list(t))  # a list, not a tuple: left to Python
# An item the encoder rejects (seq >= 2**64): raises UnencodableEvent after the
# frames before it in the run.
BAD = (2**64, TS, Command(seq=1, kind=CommandKind.SQL, text="x"))


@contextmanager
def path(fast: bool, flush_bytes: int) -> Iterator[None]:
    assert _chainfast is not None
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(chain_mod, "_append_outputs", _chainfast.append_outputs if fast else None)
        mp.setattr(chain_mod, "_FLUSH_BYTES", flush_bytes)
        mp.setattr(chain_mod.time, "time_ns", lambda: TS)  # checkpoint/rotate timestamps
        yield


def write(
    directory: Path,
    runs: Sequence[tuple[Sequence[Any], bool]],
    *,
    fast: bool,
    rotate_bytes: int,
    checkpoint_frames: int,
    flush_bytes: int,
) -> tuple[dict[str, bytes], list[Any]]:
    """Append each run (flushing after it if asked) and close; return the
    segment files' bytes and a log of the chain's state after every step."""
    log: list[Any] = []
    dirty: list[ChainWriter] = []
    with path(fast, flush_bytes):
        cw = ChainWriter(
            directory=directory, session_id="s", key=KEY, key_fingerprint="k",
            rotate_bytes=rotate_bytes, checkpoint_frames=checkpoint_frames, fsync="never",
            dirty=dirty, on_written=lambda n, b: log.append(("written", n, b)),
        )
        cw.open(TS)
        for run, flush in runs:
            try:
                cw.append_events(iter(run) if len(run) % 3 == 2 else run)
            except UnencodableEvent as exc:
                log.append(("unencodable", exc.event))
            log.append((
                cw.prev, cw.nframes, cw.size, cw.last_seq, cw.segment, cw.ckpt_frame,
                cw.flushed_size, b"".join(cw.buf), dirty == [cw] if cw.buf else dirty == [],
            ))
            if flush:
                cw.flush()
        cw.close()
    files = {p.name: p.read_bytes() for _, p in segment_files(cw.dir)}
    return files, log


def renumbered(runs: list[tuple[list[Any], bool]]) -> list[tuple[list[Any], bool]]:
    """The runs after 255 small frames, with the seqs 1, 2, 3... the verifier
    expects (a checkpoint covers seq n after n events). BAD and what follows
    it in its run are not appended, so not counted."""
    warmup = [(0, TS, Output(Stream.STDIN, b"k")) for _ in range(255)]
    seq = 0
    out = []
    for run, flush in [(warmup, False), *runs]:
        new_run = []
        for k, item in enumerate(run):
            if BAD in run[: k + 1]:
                new_run.append(item)
                continue
            seq += 1
            new_run.append(type(item)((seq, *item[1:])))
        out.append((new_run, flush))
    return out


@settings(max_examples=80)
@given(
    runs=st.lists(
        st.tuples(
            st.lists(items, max_size=25).flatmap(
                lambda run: st.sampled_from([run, [*run, BAD], [*run, BAD, *run]])
            ),
            st.booleans(),
        ),
        max_size=6,
    ),
    rotate_bytes=st.one_of(st.integers(300, 20000), st.just(1 << 30)),
    checkpoint_frames=st.one_of(st.integers(1, 12), st.just(1000)),
    flush_bytes=st.one_of(st.integers(1, 8000), st.just(1 << 20)),
    verifiable=st.booleans(),
)
def test_c_and_python_paths_write_identical_files(
    runs: list[tuple[list[Any], bool]], rotate_bytes: int, checkpoint_frames: int,
    flush_bytes: int, verifiable: bool,
) -> None:
    """Runs of mixed events (Outputs at every edge of the accelerator's
    ranges, other events, items left to the packer, an unencodable item),
    with checkpoints, flushes and rotations falling mid-run: the same file
    bytes and the same chain state after every run, on both paths. With seqs
    numbered as the writer thread numbers them, the C-written files verify."""
    if verifiable:
        runs = renumbered(runs)
    kw = {"rotate_bytes": rotate_bytes, "checkpoint_frames": checkpoint_frames,
          "flush_bytes": flush_bytes}
    with tempfile.TemporaryDirectory() as tmp:
        c_files, c_log = write(Path(tmp) / "c", runs, fast=True, **kw)
        py_files, py_log = write(Path(tmp) / "py", runs, fast=False, **kw)
        assert c_log == py_log
        assert c_files == py_files
        if verifiable:
            result = verify_session(Path(tmp) / "c" / "s", KEY.public_key())
            assert result.status is Status.OK, result.summary()


def test_long_run_of_usual_frames_is_identical_and_verifies(tmp_path: Path) -> None:
    """Thousands of 1 KiB frames: periodic checkpoints, flushes and several
    rotations in the middle of runs, as in the benchmark."""
    ev = Output(Stream.STDOUT, os.urandom(1024), command_seq=7)
    runs = [
        ([(seq, TS + seq, ev) for seq in range(start, start + 997)], start % 2 == 0)
        for start in range(1, 5983, 997)
    ]
    kw = {"rotate_bytes": 1_500_000, "checkpoint_frames": 100, "flush_bytes": 300_000}
    c_files, c_log = write(tmp_path / "c", runs, fast=True, **kw)
    py_files, py_log = write(tmp_path / "py", runs, fast=False, **kw)
    assert len(c_files) >= 4
    assert c_log == py_log and c_files == py_files
    result = verify_session(tmp_path / "c" / "s", KEY.public_key())
    assert result.status is Status.OK and result.events == 5982, result.summary()


def test_the_accelerator_is_used_unless_pure_python_is_asked_for() -> None:
    code = "import recorder.chain as c; print(c.accelerated())"
    env = {k: v for k, v in os.environ.items() if k != "HOOPD_PURE_PYTHON"}

    def run(**extra: str) -> str:
        return subprocess.run(
            [sys.executable, "-c", code], cwd=ROOT, env={**env, **extra},
            capture_output=True, text=True, check=True,
        ).stdout.strip()

    assert run() == "True"
    assert run(HOOPD_PURE_PYTHON="1") == "False"
    assert run(HOOPD_PURE_PYTHON="0") == "True"


def test_bad_arguments_raise_and_leave_the_buffer_alone() -> None:
    assert _chainfast is not None
    fn = _chainfast.append_outputs
    starts, starts_cseq = chain_mod._STARTS, chain_mod._STARTS_CSEQ
    ev = Output(Stream.STDOUT, b"x" * 300)
    good: list[Any] = [[(300, TS, ev)], 0, b"\0" * 32, 0, 0, 0, 10, 10**9, [], Output,
                       starts, starts_cseq]
    i, prev, nframes, size, last_seq, j = fn(*good)
    assert (i, nframes, last_seq, j) == (1, 1, 300, 1) and len(prev) == 32 and size > 300
    assert len(good[8]) == 3 and b"".join(good[8])[5:].startswith(b"\x93\xcd\x01\x2c")
    for index, value, exc in [
        (0, (1, 2), TypeError),  # items not a list
        (2, b"short", TypeError),  # prev not 32 bytes
        (2, "x" * 32, TypeError),
        (1, -1, ValueError),
        (1, "0", TypeError),
        (3, -5, ValueError),
        (4, 2**70 * -1, ValueError),
        (8, (), TypeError),  # buf not a list
        (9, "Output", TypeError),
        (10, None, TypeError),
    ]:
        args = [*good]
        args[8] = buf = [b"keep"]
        args[index] = value
        with pytest.raises(exc):
            fn(*args)
        assert buf == [b"keep"]
    with pytest.raises(TypeError):
        fn(*good[:11])
    # a due point beyond 2**63 is "never", not an error
    args = [*good]
    args[6] = args[7] = 2**80
    assert fn(*args)[0] == 1


@pytest.mark.parametrize(
    ("item", "handled"),
    [
        ((256, 2**32, Output(Stream.ROWS, b"x" * 256)), True),
        ((2**32 - 1, U64, Output(Stream.ROWS, b"x" * 65535, command_seq=U64)), True),
        ((255, 2**32, Output(Stream.ROWS, b"x" * 256)), False),
        ((2**32, 2**32, Output(Stream.ROWS, b"x" * 256)), False),
        ((256, 2**32 - 1, Output(Stream.ROWS, b"x" * 256)), False),
        ((256, 2**32, Output(Stream.ROWS, b"x" * 255)), False),
        ((256, 2**32, Output(Stream.ROWS, b"x" * 65536)), False),
        ((256, 2**32, Output(Stream.ROWS, b"x" * 256, masked={"r": 1})), False),
        ((256, 2**32, Output(Stream.ROWS, b"x" * 256, command_seq=-1)), False),
        ((256, 2**32, Output(Stream.ROWS, b"x" * 256, command_seq=True)), False),
        ((True, 2**32, Output(Stream.ROWS, b"x" * 256)), False),
        ((256.0, 2**32, Output(Stream.ROWS, b"x" * 256)), False),
        ((256, 2**32, Command(seq=1, kind=CommandKind.SQL, text="x")), False),
        ([256, 2**32, Output(Stream.ROWS, b"x" * 256)], False),
        ((256, 2**32, Output(Stream.ROWS, b"x" * 256), 0), False),
    ],
)
def test_the_accelerator_hands_back_what_the_fast_branch_does_not_take(
    item: Any, handled: bool
) -> None:
    assert _chainfast is not None
    buf: list[bytes] = []
    i, _, nframes, _, last_seq, j = _chainfast.append_outputs(
        [item], 0, b"\0" * 32, 0, 0, 0, 10, 10**9, buf, Output,
        chain_mod._STARTS, chain_mod._STARTS_CSEQ,
    )
    assert (i, nframes, len(buf)) == ((1, 1, 3) if handled else (0, 0, 0))
    assert last_seq == (item[0] if handled else 0)
    assert j == 1


def test_stops_where_a_checkpoint_or_flush_is_due() -> None:
    assert _chainfast is not None
    run = [(300 + k, TS, Output(Stream.STDOUT, b"y" * 500)) for k in range(10)]
    args: list[Any] = [run, 0, b"\0" * 32, 5, 0, 0, 8, 10**9, [], Output,
                       chain_mod._STARTS, chain_mod._STARTS_CSEQ]
    r = _chainfast.append_outputs(*args)
    assert (r[0], r[2], r[5]) == (3, 8, 3)  # nframes 5 -> 8, due: no stretch
    args[6], args[7] = 10**9, 1200  # ~540 B frames: due after the third
    assert _chainfast.append_outputs(*args)[0::5] == (3, 3)
    args[1] = 9
    assert _chainfast.append_outputs(*args)[0::5] == (10, 10)


def test_hands_back_a_stretch_of_items_up_to_the_next_one_it_takes() -> None:
    assert _chainfast is not None
    fast = Output(Stream.STDOUT, b"y" * 500)
    slow = Output(Stream.STDOUT, b"y" * 5)
    run = [(300, TS, fast), (301, TS, slow), (302, TS, slow), (303, TS, fast), (304, TS, slow)]
    args: list[Any] = [run, 0, b"\0" * 32, 0, 0, 0, 10**9, 10**9, [], Output,
                       chain_mod._STARTS, chain_mod._STARTS_CSEQ]
    assert _chainfast.append_outputs(*args)[0::5] == (1, 3)
    args[1] = 3
    assert _chainfast.append_outputs(*args)[0::5] == (4, 5)
