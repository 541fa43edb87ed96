"""Tampering is reported as such (naming file and frame); truncation is not."""

from __future__ import annotations

import shutil
from pathlib import Path

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hoopd.model import Command, CommandKind, Output, Stream
from recorder.format import EVENT, chain_hash, encode_frame
from recorder.reader import SessionReader, segment_files
from recorder.verify import Status, verify_session

from .helpers import KEY, OTHER_KEY, record, sample_session

PUB = KEY.public_key()


def _events() -> list:
    evs = list(sample_session())
    evs[1:1] = [Output(Stream.STDOUT, f"line {i}\n".encode() * (i % 7 + 1)) for i in range(40)]
    evs.append(Command(3, CommandKind.SQL, "x" * 300))  # a frame with a bin16 payload
    return evs


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    sdir = record(tmp_path_factory.mktemp("rec"), "sess-1", _events(), rotate_bytes=900,
                  checkpoint_frames=5)
    assert len(segment_files(sdir)) >= 4
    assert verify_session(sdir, PUB).status is Status.OK
    return sdir


@pytest.fixture
def copy(pristine: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(pristine, tmp_path / pristine.name))


def _frame_starts(path: Path) -> list[int]:
    data = path.read_bytes()
    unpacker = msgpack.Unpacker()
    unpacker.feed(data)
    starts = [0]
    for _ in unpacker:
        starts.append(unpacker.tell())
    return starts[:-1]


def _frame_of(starts: list[int], offset: int) -> int:
    return max(i for i, s in enumerate(starts) if s <= offset)


@pytest.fixture
def small(tmp_path: Path) -> Path:
    """Few frames and checkpoints so that every byte can be flipped quickly."""
    evs = list(sample_session())[:6]
    return record(tmp_path, "sess-s", evs, rotate_bytes=400, checkpoint_frames=3)


def test_every_single_byte_flip_is_tampering_at_that_frame(small: Path) -> None:
    copy = small
    assert len(segment_files(copy)) >= 3
    checked = 0
    for _, path in segment_files(copy):
        original = path.read_bytes()
        starts = _frame_starts(path)
        for offset in range(len(original)):
            for mask in (0x01 << (offset % 8), 0xFF):
                damaged = bytearray(original)
                damaged[offset] ^= mask
                path.write_bytes(damaged)
                result = verify_session(copy, PUB)
                assert result.status is Status.TAMPERED, (path.name, offset, mask, result.summary())
                assert result.problem is not None
                assert result.problem.file == path.name, (offset, mask, str(result.problem))
                assert result.problem.frame == _frame_of(starts, offset), (offset, mask, str(result.problem))
                checked += 1
        path.write_bytes(original)
    assert checked > 2000
    assert verify_session(copy, PUB).status is Status.OK


@settings(max_examples=200)
@given(data=st.data())
def test_arbitrary_byte_changes_are_tampering(pristine: Path, tmp_path_factory: pytest.TempPathFactory, data: st.DataObject) -> None:
    sdir = Path(shutil.copytree(pristine, tmp_path_factory.mktemp("h") / pristine.name))
    segs = segment_files(sdir)
    _, path = segs[data.draw(st.integers(0, len(segs) - 1))]
    raw = bytearray(path.read_bytes())
    offset = data.draw(st.integers(0, len(raw) - 1))
    raw[offset] ^= data.draw(st.integers(1, 255))
    path.write_bytes(raw)
    result = verify_session(sdir, PUB)
    assert result.status is Status.TAMPERED
    assert result.problem is not None and result.problem.file == path.name


@pytest.mark.parametrize("victim", [0, 1, -1])
def test_dropping_a_file_is_tampering(copy: Path, victim: int) -> None:
    segs = segment_files(copy)
    _, path = segs[victim]
    path.unlink()
    result = verify_session(copy, PUB)
    assert result.status is Status.TAMPERED
    assert result.problem is not None and result.problem.file == path.name
    assert "missing" in result.problem.message


def test_dropping_a_file_and_renumbering_is_tampering(copy: Path) -> None:
    segs = segment_files(copy)
    segs[1][1].unlink()
    for n, path in segs[2:]:
        path.rename(copy / f"{n - 1:06d}.hrec")
    result = verify_session(copy, PUB)
    assert result.status is Status.TAMPERED
    assert result.problem is not None and result.problem.file == "000002.hrec"
    assert result.problem.frame == 0


@pytest.mark.parametrize("pair", [(0, 1), (1, 2), (1, -1)])
def test_swapping_files_is_tampering(copy: Path, pair: tuple[int, int]) -> None:
    segs = segment_files(copy)
    a, b = segs[pair[0]][1], segs[pair[1]][1]
    tmp = a.with_suffix(".tmp")
    a.rename(tmp)
    b.rename(a)
    tmp.rename(b)
    result = verify_session(copy, PUB)
    assert result.status is Status.TAMPERED
    assert result.problem is not None and result.problem.file == min(a.name, b.name)
    assert result.problem.frame == 0


def test_file_from_another_session_is_tampering(copy: Path, tmp_path: Path) -> None:
    other = record(tmp_path / "o", "sess-2", _events(), rotate_bytes=900, checkpoint_frames=5)
    shutil.copy(other / "000002.hrec", copy / "000002.hrec")
    result = verify_session(copy, PUB)
    assert result.status is Status.TAMPERED
    assert result.problem is not None and result.problem.file == "000002.hrec"
    assert "sess-2" in result.problem.message


def test_rewriting_and_rehashing_the_chain_breaks_the_signatures(copy: Path) -> None:
    """An attacker without the key can recompute hashes, not signatures."""
    path = segment_files(copy)[0][1]
    unpacker = msgpack.Unpacker(raw=False)
    unpacker.feed(path.read_bytes())
    frames = list(unpacker)
    header = msgpack.unpackb(frames[0][1])
    prev = header[2]["prev_hash"]
    out = []
    for i, (t, payload, _h) in enumerate(frames):
        if i == 2 and t == EVENT:
            seq, ts, body = msgpack.unpackb(payload)
            body["text" if "text" in body else "data"] = b"forged" if "data" in body else "forged"
            payload = msgpack.packb([seq, ts, body])
        digest = chain_hash(prev, t, payload)
        out.append(encode_frame(t, payload, digest))
        prev = digest
    path.write_bytes(b"".join(out))
    result = verify_session(copy, PUB)
    assert result.status is Status.TAMPERED
    assert result.problem is not None and "signature" in result.problem.message


def test_wrong_key_is_reported(copy: Path) -> None:
    result = verify_session(copy, OTHER_KEY.public_key())
    assert result.status is Status.TAMPERED
    assert result.problem is not None and "signed by" in result.problem.message


def test_truncating_the_last_file_anywhere_is_torn_or_incomplete(copy: Path) -> None:
    path = segment_files(copy)[-1][1]
    original = path.read_bytes()
    starts = set(_frame_starts(path))
    full = [r.event for r in SessionReader(copy).events()]
    for cut in range(len(original)):
        path.write_bytes(original[:cut])
        result = verify_session(copy, PUB)
        expected = Status.INCOMPLETE if cut in starts else Status.TORN_TAIL
        assert result.status is expected, (cut, result.summary())
        reader = SessionReader(copy)
        got = [r.event for r in reader.events()]
        assert got == full[: len(got)]  # a prefix: every complete frame still reads
        assert len(got) >= result.events - 1
    path.write_bytes(original)
    assert verify_session(copy, PUB).status is Status.OK


def test_appending_garbage_after_close_is_tampering(copy: Path) -> None:
    path = segment_files(copy)[-1][1]
    with open(path, "ab") as f:
        f.write(b"\x93\x02")  # looks like the start of a frame
    result = verify_session(copy, PUB)
    assert result.status is Status.TAMPERED


@pytest.mark.parametrize("header_bytes", ["none", "partial", "whole"])
def test_crash_mid_rotation_is_incomplete_not_tampering(copy: Path, header_bytes: str) -> None:
    """Killed while rotating: segment N lacks its rotate checkpoint (the last
    frame) and N+1 was just created — empty, with part of its header, or
    with its whole header. Nothing was removed by anyone: not tampering."""
    files = [p for _, p in segment_files(copy)]
    old, new = files[1], files[2]
    for later in files[3:]:
        later.unlink()
    old_starts = _frame_starts(old)
    old.write_bytes(old.read_bytes()[: old_starts[-1]])  # drop the rotate checkpoint
    header_len = _frame_starts(new)[1]
    keep = {"none": 0, "partial": header_len // 2, "whole": header_len}[header_bytes]
    new.write_bytes(new.read_bytes()[:keep])
    result = verify_session(copy, PUB)
    assert result.status in (Status.INCOMPLETE, Status.TORN_TAIL), result.summary()
