"""Events written across rotations read back identical; the files verify."""

from __future__ import annotations

import tempfile
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from hoopd.model import Event, Output, Stream
from recorder.codec import event_body
from recorder.reader import SessionReader, segment_files
from recorder.verify import Status, verify_session

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


def test_sample_session_round_trips_and_public_key_exported(tmp_path: Path) -> None:
    evs = list(sample_session())
    sdir = record(tmp_path, "sess-1", evs)
    assert read_back(sdir) == evs
    assert (tmp_path / "recording-signing-key.pub").read_bytes().startswith(
        b"-----BEGIN PUBLIC KEY-----"
    )
