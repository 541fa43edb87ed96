"""The C accelerator (recorder._chainfast) writes the same bytes as the
Python loop of ChainWriter.append_events, which is the reference."""

from __future__ import annotations

import enum
import math
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import MappingProxyType, ModuleType
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import recorder.chain as chain_mod
from hoopd.model import (
    ApprovalEvent,
    Command,
    CommandKind,
    CommandResult,
    Decision,
    ErrorEvent,
    Output,
    Resize,
    SessionEnd,
    Stream,
    Verdict,
)
from recorder.chain import ChainWriter, UnencodableEvent
from recorder.codec import EVENT_LAYOUTS, LAYOUT_SAMPLES
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


class Color(enum.StrEnum):
    RED = "red"


class Level(enum.IntEnum):
    HIGH = 3


class Tag(str):
    """A str subclass: the packer packs its characters."""


# Values the general encoder meets in attrs, reasons and plain fields: every
# msgpack size class, and values it must hand back to the Python loop
# (which packs them or raises): int and float subclasses, ints beyond 64
# bits, lone surrogates, bytearrays, mapping proxies, deep nesting.
INT_EDGES = [
    -(2**63) - 1, -(2**63), -(2**31) - 1, -(2**31), -32769, -32768, -129, -128, -33, -32, -1,
    0, 127, 128, 255, 256, 65535, 65536, 2**32 - 1, 2**32, 2**63 - 1, 2**63, U64, 2**64,
]
FLOATS = [0.0, -0.0, 1.5, -1e300, math.inf, -math.inf, math.nan, 5e-324]
ints = st.one_of(st.sampled_from(INT_EDGES), st.integers(-(2**70), 2**70))
texts = st.one_of(
    st.text(max_size=40),  # includes lone surrogates: the packer raises on them
    st.text(st.characters(codec="utf-8"), min_size=28, max_size=300),  # fixstr/str8/str16
    st.sampled_from(["", "é", "日本語", "\U0001f600" * 9, "x" * 31, "x" * 32, "x" * 255,
                     "x" * 256, "x" * 65536]),
)
scalars = st.one_of(
    st.none(), st.booleans(), ints, st.sampled_from(FLOATS), st.floats(), texts,
    st.binary(max_size=300), st.sampled_from([Color.RED, Level.HIGH, Tag("t"), bytearray(b"ba"),
                                              1.5j, object(), (1, 2), [3]]),
)


def _deep(depth: int) -> Any:
    value: Any = {"leaf": 1}
    for k in range(depth):
        value = {"d": value} if k % 2 else [value]
    return value


values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.lists(inner, max_size=4).map(tuple),
        st.dictionaries(st.one_of(texts, ints, st.none()), inner, max_size=4),
        st.sampled_from([16, 17, 30, 31, 32, 33, 40]).map(lambda n: list(range(n))),
        st.sampled_from([15, 16, 17]).map(lambda n: {str(k): k for k in range(n)}),
    ),
    max_leaves=12,
) | st.sampled_from([_deep(30), _deep(33), _deep(600), list(range(70000))])
attr_dicts = st.one_of(
    st.dictionaries(texts, values, max_size=5),
    st.dictionaries(texts, values, max_size=3).map(MappingProxyType),  # dict(x) of a proxy
    st.dictionaries(st.text(max_size=3), st.text(max_size=3), max_size=40),  # map16
)
str_tuples = st.one_of(st.lists(texts, max_size=3).map(tuple), st.lists(values, max_size=3),
                       st.just("ab"), st.none())
counts: st.SearchStrategy[Any] = st.one_of(
    st.just({}), st.dictionaries(texts, ints, max_size=3),
    st.dictionaries(texts, ints, max_size=2).map(MappingProxyType), st.just({1: None}),
)
general = st.one_of(
    st.builds(Command, seq=ints, kind=st.one_of(st.sampled_from(CommandKind), st.just("sql")),
              text=texts, attrs=attr_dicts),
    st.builds(Decision, command_seq=ints,
              verdict=st.one_of(st.sampled_from(Verdict), st.sampled_from([Color.RED, "allow"])),
              risk=st.one_of(ints, st.sampled_from(FLOATS)), reasons=str_tuples,
              rule_ids=str_tuples, approval_id=texts, approver=st.one_of(texts, st.none()),
              break_glass=st.one_of(st.booleans(), ints)),
    st.builds(CommandResult, command_seq=ints, status=texts,
              duration_ms=st.one_of(st.floats(), st.sampled_from(FLOATS), ints),
              rows=st.one_of(st.none(), ints), error=texts),
    st.builds(Output, stream=st.one_of(st.sampled_from(list(Stream)), st.just("stdout")),
              data=st.one_of(st.sampled_from(LEN_EDGES).map(lambda n: b"d" * n),
                             st.binary(max_size=600), st.just(bytearray(b"ba")), st.just("str")),
              command_seq=st.one_of(ints, st.booleans(), st.just(Level.HIGH)), masked=counts),
    st.builds(SessionEnd, reason=texts, error=texts, bytes_in=ints, bytes_out=ints),
    st.builds(ApprovalEvent, approval_id=texts, command_seq=ints, state=texts,
              command_hash=texts, reviewer=texts, comment=texts),
    st.builds(Resize, cols=ints, rows=values),
    st.builds(ErrorEvent, message=texts, code=st.one_of(texts, values)),
)

items = st.tuples(
    st.one_of(st.sampled_from(SEQ_EDGES), u64, st.integers(256, 70000)),
    st.one_of(st.sampled_from(TS_EDGES), u64, st.just(TS)),
    st.one_of(outputs, outputs, outputs, events, general, general),
).map(lambda t: t if t[0] % 7 else list(t))  # a list, not a tuple: left to Python
# An item the encoder rejects (seq >= 2**64): raises UnencodableEvent after the
# frames before it in the run.
BAD = (2**64, TS, Command(seq=1, kind=CommandKind.SQL, text="x"))


@contextmanager
def path(fast: bool, flush_bytes: int) -> Iterator[None]:
    assert _chainfast is not None
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(chain_mod, "_append_outputs", _chainfast.append_outputs if fast else None)
        # (also when HOOPD_PURE_PYTHON=1 left the module without them)
        mp.setattr(chain_mod, "_LAYOUTS", EVENT_LAYOUTS if fast else {})
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
        only_bad = all(e[1] is BAD[2] for e in c_log if e[0] == "unencodable")
        if verifiable and only_bad:  # another unencodable item leaves a gap in the seqs
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


def _append_with_layouts(item: Any) -> tuple[int, int, list[bytes]]:
    assert _chainfast is not None
    buf: list[bytes] = []
    i, _, nframes, _, _, _ = _chainfast.append_outputs(
        [item], 0, b"\0" * 32, 0, 0, 0, 10, 10**9, buf, Output,
        chain_mod._STARTS, chain_mod._STARTS_CSEQ, EVENT_LAYOUTS,
    )
    return i, nframes, buf


def test_every_layout_passes_the_import_check() -> None:
    """EVENT_LAYOUTS agree with event_body() on every sample (else the
    recorder drops them: their events would silently go back to Python)."""
    assert _chainfast is not None
    assert chain_mod._checked_layouts(_chainfast.append_outputs) == EVENT_LAYOUTS
    if chain_mod.accelerated():
        assert chain_mod._LAYOUTS == EVENT_LAYOUTS
    assert {type(e) for e in LAYOUT_SAMPLES} == set(EVENT_LAYOUTS)


def test_a_layout_that_disagrees_with_to_record_is_dropped() -> None:
    assert _chainfast is not None
    wrong = {**EVENT_LAYOUTS, Resize: tuple(reversed(EVENT_LAYOUTS[Resize]))}
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(chain_mod, "EVENT_LAYOUTS", wrong)
        checked = chain_mod._checked_layouts(_chainfast.append_outputs)
    assert Resize not in checked and Command in checked


HTTP_REQUEST = [  # what protocols/http records per proxied request
    Command(5, CommandKind.HTTP, "GET /api/items?id=7",
            {"method": "GET", "path": "/api/items", "query": "id=7",
             "body": {"content_type": "application/json", "length": 12, "chunked": True}}),
    Output(Stream.STDIN, b"GET /api/items?id=7 HTTP/1.1\r\nhost: x\r\n\r\n", 5),
    Decision(5, Verdict.ALLOW, 10, ("read",), ("r1",)),
    Output(Stream.STDOUT, b"HTTP/1.1 200 OK\r\n\r\n" + b"{}" * 400, 5, {"email": 2}),
    Output(Stream.STDOUT, b"HTTP/1.1 200 OK\r\n\r\n{}", 5, {}),
    CommandResult(5, "200", 0.734, None, ""),
]
PG_STATEMENT = [  # ... and protocols/postgres per statement
    Command(9, CommandKind.SQL, "SELECT abalance FROM pgbench_accounts WHERE aid = 1",
            {"protocol": "simple"}),
    Decision(9, Verdict.ALLOW),
    Output(Stream.ROWS, b"T\0\0\0!" * 20),
    CommandResult(9, "SELECT 1", 0.2, 1),
]


@pytest.mark.parametrize("seq", [1, 300, 70000])
@pytest.mark.parametrize("event", [*HTTP_REQUEST, *PG_STATEMENT], ids=repr)
def test_the_frequent_events_are_encoded_in_c(seq: int, event: Any) -> None:
    i, nframes, buf = _append_with_layouts((seq, TS, event))
    assert (i, nframes) == (1, 1)
    assert b"".join(buf) == _python_frame(seq, event)


def _python_frame(seq: int, event: Any) -> bytes:
    buf: list[bytes] = []
    with path(False, 1 << 20):
        cw = ChainWriter(
            directory=Path("/nonexistent"), session_id="s", key=KEY, key_fingerprint="k",
            rotate_bytes=1 << 30, checkpoint_frames=1000, fsync="never", dirty=[],
            on_written=lambda n, b: None,
        )
        cw.prev = b"\0" * 32
        cw.append_events([(seq, TS, event)])
        buf = cw.buf
    return b"".join(buf)


@pytest.mark.parametrize(
    "event",
    [
        Command(1, CommandKind.SQL, "x", MappingProxyType({"a": 1})),
        Command(1, CommandKind.SQL, "\ud800"),
        Command(1, CommandKind.SQL, "x", {"n": 2**64}),
        Command(1, CommandKind.SQL, "x", {"n": Level.HIGH}),
        Command(1, CommandKind.SQL, "x", {"deep": _deep(40)}),
        Decision(1, "allow"),  # type: ignore[arg-type]
        Decision(1, Verdict.ALLOW, reasons=None),  # type: ignore[arg-type]
        Output(Stream.STDOUT, bytearray(b"x")),  # type: ignore[arg-type]
        Output(Stream.STDOUT, b"x", True),
        Output(Stream.STDOUT, b"x", 1, MappingProxyType({"r": 1})),
        CommandResult(1, "ok", rows=1.5j),  # type: ignore[arg-type]
    ],
    ids=repr,
)
def test_unusual_values_are_handed_back_to_python(event: Any) -> None:
    i, nframes, buf = _append_with_layouts((300, TS, event))
    assert (i, nframes, buf) == (0, 0, [])
