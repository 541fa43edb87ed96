"""`hoopd replay` subcommands on a copy of real recordings."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from hoopd.model import Command, CommandKind, Identity, Output, SessionStart, Stream
from recorder.reader import segment_files

from .helpers import OTHER_KEY, record, sample_session

Run = Callable[..., tuple[int, str, str]]


@pytest.fixture
def recs(tmp_path: Path) -> Path:
    d = tmp_path / "recordings"
    record(d, "sess-1", sample_session(), rotate_bytes=300)
    bob = [
        SessionStart("sess-2", "k8s-prod", "kubernetes", Identity("bob"), "10.0.0.9:1"),
        Command(1, CommandKind.K8S, "GET /api/v1/pods"),
        Output(Stream.STDOUT, "héllo wörld\n".encode()),
    ]
    record(d, "other-9", bob)
    return d


def test_list_table_and_json(run_cli: Run, recs: Path) -> None:
    code, out, _ = run_cli("list", recs)
    assert code == 0
    assert "sess-1" in out and "alice" in out and "prod-db" in out and "ok" in out
    code, out, _ = run_cli("list", recs, "--json")
    rows = {r["session_id"]: r for r in map(json.loads, out.splitlines())}
    assert rows["sess-1"]["commands"] == 2 and rows["sess-1"]["decisions"] == 2
    assert rows["sess-1"]["user"] == "alice" and rows["sess-1"]["verification"] == "ok"
    assert rows["other-9"]["protocol"] == "kubernetes"


def test_show_timeline_by_prefix(run_cli: Run, recs: Path) -> None:
    code, out, _ = run_cli("show", recs, "sess")
    assert code == 0
    assert "command #2 [sql] DROP TABLE users" in out
    assert "decision #2 REVIEW risk=90" in out
    assert "approval ap-1 for #2: approved by bob" in out
    assert "masked: email=1" in out
    assert out.index("DROP TABLE") < out.index("approved by bob")


def test_unknown_or_ambiguous_id_is_usage_error(run_cli: Run, recs: Path) -> None:
    record(recs, "sess-3", sample_session())
    code, _, err = run_cli("show", recs, "sess")
    assert code == 2 and "ambiguous" in err
    code, _, err = run_cli("show", recs, "nope")
    assert code == 2 and "no session" in err


def test_play_writes_terminal_output_in_order(run_cli: Run, recs: Path) -> None:
    code, out, _ = run_cli("play", recs, "sess-1", "--speed", "1000")
    assert code == 0
    assert out == "id | email\n1 | ****\nERROR: permission denied\n"


def test_play_timing_caps_idle_and_scales(recs: Path) -> None:
    import io

    from recorder.reader import RecordedEvent
    from recorder.replay import play

    evs = [
        RecordedEvent(i + 1, ts, Output(Stream.STDOUT, b"x"))
        for i, ts in enumerate([0, 1_000_000_000, 11_000_000_000, 12_000_000_000])
    ]
    sleeps: list[float] = []
    play(evs, io.BytesIO(), speed=2.0, max_idle=2.0, sleep=sleeps.append)
    assert sleeps == [0.5, 1.0, 0.5]
    sleeps.clear()
    play(evs, io.BytesIO(), speed=1.0, start_from=11.5, sleep=sleeps.append)
    assert sleeps == [0.5]  # everything before 11.5s is fast-forwarded


def test_search_filters(run_cli: Run, recs: Path) -> None:
    code, out, _ = run_cli("search", recs, "--text", "drop table")
    assert code == 0 and "sess-1" in out and "other-9" not in out
    assert "command #2: DROP TABLE users" in out
    _, out, _ = run_cli("search", recs, "--text", "WÖRLD")
    assert "other-9" in out and "sess-1" not in out.split("\n", 1)[1]
    _, out, _ = run_cli("search", recs, "--user", "BOB", "--json")
    assert [json.loads(x)["session_id"] for x in out.splitlines()] == ["other-9"]
    _, out, _ = run_cli("search", recs, "--connection", "prod-db", "--json")
    assert [json.loads(x)["session_id"] for x in out.splitlines()] == ["sess-1"]
    _, out, _ = run_cli("search", recs, "--since", "2999-01-01T00:00:00")
    assert "no matching sessions" in out
    _, out, _ = run_cli("search", recs, "--until", "2999-01-01", "--since", "2000-01-01", "--json")
    assert len(out.splitlines()) == 2


def test_export_asciicast_with_provenance(run_cli: Run, recs: Path, tmp_path: Path) -> None:
    dest = tmp_path / "out.cast"
    code, _, _ = run_cli("export", recs, "sess-1", "--format", "asciicast", "-o", dest)
    assert code == 0
    header, *lines = [json.loads(x) for x in dest.read_text().splitlines()]
    assert header["version"] == 2 and (header["width"], header["height"]) == (100, 30)
    prov = header["hoopd"]
    assert prov["session_id"] == "sess-1" and prov["user"] == "alice"
    assert prov["connection"] == "prod-db" and prov["verification"] == "ok"
    assert prov["key_fingerprint"].startswith("SHA256:")
    assert lines[0][1:] == ["r", "100x30"]
    assert [x[2] for x in lines if x[1] == "o"] == ["id | email\n1 | ****\n", "ERROR: permission denied\n"]
    assert [x[0] for x in lines] == sorted(x[0] for x in lines)


def test_export_jsonl_is_lossless(run_cli: Run, recs: Path) -> None:
    import base64

    code, out, _ = run_cli("export", recs, "sess-1", "--format", "jsonl")
    assert code == 0
    header, *lines = [json.loads(x) for x in out.splitlines()]
    assert header["type"] == "header" and header["verification"] == "ok"
    assert len(lines) == len(sample_session())
    out_line = next(x for x in lines if x["type"] == "output")
    assert base64.b64decode(out_line["data"]["base64"]) == b"id | email\n1 | ****\n"


def test_verify_exit_codes(run_cli: Run, recs: Path, tmp_path: Path) -> None:
    code, out, err = run_cli("verify", recs)
    assert code == 0, out
    assert "only proves" in err and "SHA256:" in err
    code, _, _ = run_cli("verify", recs / "sess-1")
    assert code == 0

    tampered = Path(shutil.copytree(recs, tmp_path / "t"))
    f = segment_files(tampered / "sess-1")[1][1]
    raw = bytearray(f.read_bytes())
    raw[len(raw) // 2] ^= 0x40
    f.write_bytes(raw)
    code, out, _ = run_cli("verify", tampered)
    assert code == 1
    assert f"first bad: {f}" in out and "TAMPERED" in out

    torn = Path(shutil.copytree(recs, tmp_path / "torn"))
    last = segment_files(torn / "sess-1")[-1][1]
    last.write_bytes(last.read_bytes()[:-5])
    code, out, _ = run_cli("verify", torn / "sess-1")
    assert code == 3 and "TORN TAIL" in out

    key = tmp_path / "other.pub"
    from recorder.keys import public_pem

    key.write_bytes(public_pem(OTHER_KEY.public_key()))
    code, out, err = run_cli("verify", recs, "--key", key)
    assert code == 1 and "only proves" not in err

    code, _, err = run_cli("verify", tmp_path / "missing")
    assert code == 2
    (recs / "recording-signing-key.pub").unlink()
    code, _, err = run_cli("verify", recs)
    assert code == 2 and "--key" in err
