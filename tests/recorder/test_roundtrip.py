"""Events written across rotations read back identical; the files verify."""

from __future__ import annotations

import tempfile
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from hoopd.model import Event, Output, Stream
from recorder.codec import event_body, make_payload_packer, output_payload_parts
from recorder.reader import SessionReader, segment_files
from recorder.verify import Status, verify_session, verify_sessions
from recorder.writer import Recorder, RecorderSettings

from .helpers import KEY, events, read_back, record, sample_session


@settings(max_examples=40)
@given(
    evs=st.lists(events, max_size=60),
    rotate_bytes=st.integers(min_value=200, max_value=5000),
    checkpoint_frames=st.integers(min_value=1, max_value=20),
)
def test_any_events_round_trip_across_rotations(
    evs: list[Event], rotate_bytes: int, checkpoint_frames: int
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        sdir = record(
            Path(tmp), "s", evs, rotate_bytes=rotate_bytes, checkpoint_frames=checkpoint_frames
        )
        assert read_back(sdir) == evs
        result = verify_session(sdir, KEY.public_key())
        assert result.status is Status.OK, result.summary()
        assert result.events == len(evs)
        assert result.signed_events == len(evs)


@settings(max_examples=30)
@given(
    evs=st.lists(st.tuples(st.integers(0, 2), events), max_size=80),
    rotate_bytes=st.integers(min_value=300, max_value=4000),
    checkpoint_frames=st.integers(min_value=1, max_value=7),
)
def test_interleaved_sessions_each_read_back_in_order(
    evs: list[tuple[int, Event]], rotate_bytes: int, checkpoint_frames: int
) -> None:
    """The writer hands each run of one session's queued events to its chain
    at once; runs broken up by other sessions must not mix or reorder."""
    with tempfile.TemporaryDirectory() as tmp:
        rec = Recorder(
            RecorderSettings(
                dir=Path(tmp), fsync="never", rotate_bytes=rotate_bytes,
                checkpoint_frames=checkpoint_frames,
            ),
            KEY,
        )
        sessions = [rec.open_session(f"s{i}") for i in range(3)]
        for i, ev in evs:
            sessions[i].write(ev)
        for sess in sessions:
            sess.close()
        rec.start()  # everything is queued before the writer runs: long runs
        rec.close()
        for i in range(3):
            sdir = Path(tmp) / f"s{i}"
            assert read_back(sdir) == [ev for j, ev in evs if j == i]
            assert verify_session(sdir, KEY.public_key()).status is Status.OK


def test_rotation_makes_self_standing_numbered_files(tmp_path: Path) -> None:
    evs = [Output(Stream.STDOUT, bytes([i % 256]) * 300) for i in range(50)]
    sdir = record(tmp_path, "rot", evs, rotate_bytes=2000)
    segs = segment_files(sdir)
    assert len(segs) > 5
    assert [n for n, _ in segs] == list(range(1, len(segs) + 1))
    assert all(p.stat().st_size <= 2000 + 700 for _, p in segs)  # rotated at the size limit
    reader = SessionReader(sdir)
    assert [r.seq for r in reader.events()] == list(range(1, 51))
    assert [h["segment"] for h in reader.headers] == [n for n, _ in segs]


@given(ev=events)
def test_fast_output_encoding_matches_to_record(ev: Event) -> None:
    body = event_body(ev)
    assert body.pop("t") == ev.type_name
    assert body == ev.to_record()


_U64 = st.integers(min_value=0, max_value=2**64 - 1)


@given(
    seq=st.one_of(_U64, st.sampled_from([0, 127, 128, 255, 256, 65535, 65536, 2**32 - 1, 2**32])),
    ts=_U64,
    stream=st.sampled_from(list(Stream)),
    data=st.one_of(st.binary(max_size=300), st.integers(0, 70000).map(lambda n: b"x" * n)),
    command_seq=st.one_of(st.just(0), _U64),
    masked=st.dictionaries(st.text(max_size=8), st.integers(0, 99), max_size=2),
)
def test_hand_built_output_payload_is_the_packers_bytes(
    seq: int, ts: int, stream: Stream, data: bytes, command_seq: int, masked: dict[str, int]
) -> None:
    """The writer's hand-built Output payload must be byte-identical to
    msgpack's: the chain hashes bytes, and readers decode them with msgpack."""
    ev = Output(stream, data, command_seq=command_seq, masked=masked)
    parts = output_payload_parts(seq, ts, ev)
    packed = make_payload_packer().pack([seq, ts, event_body(ev)])
    if masked:
        assert parts is None  # left to the packer
    else:
        assert parts is not None and parts[0] + data + parts[1] == packed


@settings(max_examples=60)
@given(
    first_seq=st.sampled_from([1, 200, 255, 256, 65530, 65536, 2**32 - 3, 2**32]),
    ts=st.one_of(st.just(1_800_000_000_000_000_000), _U64),
    frames=st.lists(
        st.tuples(
            st.sampled_from(list(Stream)),
            st.sampled_from([0, 1, 255, 256, 1024, 32768, 65535, 65536]),
            st.one_of(st.just(0), st.integers(1, 2**64 - 1)),
        ),
        min_size=1,
        max_size=8,
    ),
)
def test_writer_fast_path_writes_the_reference_frames(
    first_seq: int, ts: int, frames: list[tuple[Stream, int, int]]
) -> None:
    """append_events' one-struct-call path for Output frames must write the
    same file bytes as the reference encoding (msgpack payload, chain_hash)
    at every edge of its seq, timestamp and size ranges."""
    from recorder.chain import ChainWriter
    from recorder.format import EVENT, segment_name

    pack = make_payload_packer().pack
    evs = [
        (first_seq + i, ts, Output(stream, bytes([i % 251]) * n, command_seq=cseq))
        for i, (stream, n, cseq) in enumerate(frames)
    ]
    files = []
    with tempfile.TemporaryDirectory() as tmp:
        for fast in (True, False):
            chain = ChainWriter(
                directory=Path(tmp) / str(fast), session_id="s", key=KEY,
                key_fingerprint="k", rotate_bytes=1 << 30, checkpoint_frames=1000,
                fsync="never", dirty=[], on_written=lambda n, b: None,
            )
            chain.open(ts)
            if fast:
                chain.append_events(evs)
            else:
                for seq, t, ev in evs:
                    chain._append(EVENT, pack([seq, t, event_body(ev)]))
            chain.flush()
            files.append((chain.dir / segment_name(1)).read_bytes())
    assert files[0] == files[1]


def test_verifying_with_worker_processes_gives_the_same_result(tmp_path: Path) -> None:
    evs = [Output(Stream.STDOUT, bytes([i % 256]) * 300) for i in range(60)]
    good = record(tmp_path, "good", evs, rotate_bytes=2000)
    bad = record(tmp_path, "bad", evs, rotate_bytes=2000)
    victim = segment_files(bad)[3][1]
    raw = bytearray(victim.read_bytes())
    raw[200] ^= 1
    victim.write_bytes(bytes(raw))
    serial = verify_sessions([good, bad], KEY.public_key(), jobs=1)
    parallel = verify_sessions([good, bad], KEY.public_key(), jobs=3)
    assert [r.status for r in parallel] == [Status.OK, Status.TAMPERED]
    assert [(r.status, r.problem, r.frames, r.events) for r in parallel] == [
        (r.status, r.problem, r.frames, r.events) for r in serial
    ]
    assert parallel[1].problem is not None and parallel[1].problem.file == victim.name


def test_sample_session_round_trips_and_public_key_exported(tmp_path: Path) -> None:
    evs = list(sample_session())
    sdir = record(tmp_path, "sess-1", evs)
    assert read_back(sdir) == evs
    assert (tmp_path / "recording-signing-key.pub").read_bytes().startswith(
        b"-----BEGIN PUBLIC KEY-----"
    )
