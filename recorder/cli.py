"""`hoopd replay ...`: offline tools over a recordings directory.

Each leaf sets ``func(args) -> int`` (the exit code). Usage problems exit 2.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from recorder.compat import UnsupportedVersion
from recorder.format import PUBLIC_KEY_NAME
from recorder.keys import key_fingerprint, load_public_key
from recorder.reader import list_session_dirs, segment_files
from recorder.replay import (
    SessionSummary,
    UsageError,
    export_asciicast,
    export_jsonl,
    iso,
    play,
    read_events,
    resolve_session,
    summarize,
    text_matches,
    timeline,
)
from recorder.verify import (
    EXIT_CODES,
    SessionVerification,
    Status,
    verify_session,
    verify_sessions,
    worst,
)

Func = Callable[[argparse.Namespace], int]


def register(subparsers: Any) -> None:
    """Add the `replay` command (and its subcommands) to hoopd's CLI."""
    replay = subparsers.add_parser(
        "replay", help="inspect, play, export and verify session recordings (offline)"
    )
    sub = replay.add_subparsers(dest="replay_command", metavar="SUBCOMMAND", required=True)

    p = _leaf(sub, "list", "list recorded sessions", cmd_list)
    p.add_argument("dir", type=Path, help="recordings directory")
    p.add_argument("--json", action="store_true", help="one JSON object per session")

    p = _leaf(sub, "show", "timeline of commands, decisions, approvals, masking", cmd_show)
    _dir_id(p)
    p.add_argument("--no-output", action="store_true", help="omit unmasked output chunks")

    p = _leaf(sub, "play", "replay terminal output with its original timing", cmd_play)
    _dir_id(p)
    p.add_argument("--speed", type=_positive, default=1.0, help="playback speed factor")
    p.add_argument(
        "--from", dest="start_from", type=float, default=0.0, metavar="SECONDS",
        help="start timed playback here (earlier output is written at once)",
    )
    p.add_argument("--max-idle", type=float, default=2.0, metavar="SECONDS", help="cap idle gaps")

    p = _leaf(sub, "search", "find sessions by user, connection, time or text", cmd_search)
    p.add_argument("dir", type=Path, help="recordings directory")
    p.add_argument("--user", help="identity subject (exact, case-insensitive)")
    p.add_argument("--connection", help="connection name (exact)")
    p.add_argument("--since", type=_iso_time, help="sessions starting at or after (ISO 8601)")
    p.add_argument("--until", type=_iso_time, help="sessions starting before (ISO 8601)")
    p.add_argument("--text", help="substring of a command or of output (case-insensitive)")
    p.add_argument("--json", action="store_true")

    p = _leaf(sub, "export", "export a session as asciicast v2 or JSON lines", cmd_export)
    _dir_id(p)
    p.add_argument("--format", choices=("asciicast", "jsonl"), required=True)
    p.add_argument("-o", "--output", type=Path, help="output file (default: stdout)")

    p = _leaf(sub, "verify", "check hash chains and signatures (exit 0 ok, 1 tampered, "
              "3 torn/incomplete)", cmd_verify)
    p.add_argument("path", type=Path, help="recordings directory, or one session directory")
    p.add_argument("--json", action="store_true")
    p.add_argument(
        "--jobs", type=_positive_int, default=os.cpu_count() or 1, metavar="N",
        help="segment files checked at once, in worker processes (default: CPU count)",
    )


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _leaf(sub: Any, name: str, help_: str, func: Func) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = sub.add_parser(name, help=help_, description=help_)
    p.add_argument(
        "--key", type=Path, metavar="FILE",
        help=f"public key (PEM) to verify with; default: DIR/{PUBLIC_KEY_NAME}",
    )
    p.set_defaults(func=_guarded(func))
    return p


def _dir_id(p: argparse.ArgumentParser) -> None:
    p.add_argument("dir", type=Path, help="recordings directory")
    p.add_argument("id", help="session id or a unique prefix of it")


def _guarded(func: Func) -> Func:
    def run(args: argparse.Namespace) -> int:
        try:
            return func(args)
        except (UsageError, UnsupportedVersion, FileNotFoundError, NotADirectoryError) as exc:
            print(f"hoopd replay: {exc}", file=sys.stderr)
            return 2

    return run


def _positive(value: str) -> float:
    f = float(value)
    if f <= 0:
        raise argparse.ArgumentTypeError("must be > 0")
    return f


def _iso_time(value: str) -> int:
    try:
        dt = datetime.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 time: {value!r}") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return int(dt.timestamp() * 1e9)


# -------------------------------------------------------------------- keys
def _find_key(explicit: Path | None, recordings_dir: Path, warn: bool) -> Ed25519PublicKey | None:
    if explicit is not None:
        try:
            return load_public_key(explicit)
        except (OSError, ValueError) as exc:
            raise UsageError(f"cannot load key {explicit}: {exc}") from None
    path = recordings_dir / PUBLIC_KEY_NAME
    if not path.exists():
        return None
    key = load_public_key(path)
    if warn:
        print(
            f"warning: verifying with {path}, stored next to the recordings: this only proves "
            "the files are consistent with that key, not that hoopd wrote them; pass --key "
            "with a copy of the public key kept elsewhere.\n"
            f"key fingerprint: {key_fingerprint(key)}",
            file=sys.stderr,
        )
    return key


def _recordings_dir_of(session_dir: Path) -> Path:
    return session_dir.parent


def _verification(session_dir: Path, key: Ed25519PublicKey | None) -> str:
    if key is None:
        return "no-key"
    return str(verify_session(session_dir, key).status)


def _load(args: argparse.Namespace, warn: bool = False) -> tuple[Path, SessionSummary, Any, str]:
    session_dir = resolve_session(args.dir, args.id)
    key = _find_key(args.key, args.dir, warn)
    events, problems = read_events(session_dir)
    summary = summarize(session_dir, events)
    summary.verification = _verification(session_dir, key)
    summary.problems = problems
    return session_dir, summary, events, key_fingerprint(key) if key else ""


# ---------------------------------------------------------------- commands
def _summaries(args: argparse.Namespace) -> list[tuple[SessionSummary, list[Any]]]:
    if not args.dir.is_dir():
        raise UsageError(f"{args.dir}: not a directory")
    key = _find_key(args.key, args.dir, warn=False)
    out = []
    for session_dir in list_session_dirs(args.dir):
        events, problems = read_events(session_dir)
        s = summarize(session_dir, events)
        s.verification = _verification(session_dir, key)
        s.problems = problems
        out.append((s, events))
    return out


_COLUMNS = ("SESSION", "USER", "CONNECTION", "PROTO", "START", "DURATION", "CMDS", "DECS",
            "BYTES", "VERIFIED")


def _row(s: SessionSummary) -> tuple[str, ...]:
    return (s.session_id, s.user, s.connection, s.protocol, iso(s.start_ns), f"{s.duration:.1f}s",
            str(s.commands), str(s.decisions), str(s.bytes), s.verification)


def _table(rows: list[tuple[str, ...]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
                     for r in rows)


def cmd_list(args: argparse.Namespace) -> int:
    summaries = [s for s, _ in _summaries(args)]
    if args.json:
        for s in summaries:
            print(json.dumps(s.to_json()))
    elif summaries:
        print(_table([_COLUMNS, *(_row(s) for s in summaries)]))
    else:
        print(f"no recordings in {args.dir}")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    _, s, events, fp = _load(args)
    print(f"session     {s.session_id}")
    print(f"user        {s.user}   from {s.client_addr}")
    print(f"connection  {s.connection} [{s.protocol}]   gateway {s.gateway or '-'}")
    print(f"start       {iso(s.start_ns)}   duration {s.duration:.1f}s")
    print(f"summary     {s.commands} commands, {s.decisions} decisions, {s.approvals} approval "
          f"events, {s.masked} values masked, {s.bytes} bytes of output")
    print(f"verified    {s.verification}" + (f" (key {fp})" if fp else ""))
    for problem in s.problems:
        print(f"problem     {problem}")
    print()
    for line in timeline(events, include_output=not args.no_output):
        print(line)
    return 0


def cmd_play(args: argparse.Namespace) -> int:
    session_dir = resolve_session(args.dir, args.id)
    events, _ = read_events(session_dir)
    play(events, sys.stdout.buffer, speed=args.speed, start_from=args.start_from,
         max_idle=args.max_idle)
    return 0


def cmd_search(args: argparse.Namespace) -> int:
    found = []
    for s, events in _summaries(args):
        if args.user and s.user.lower() != args.user.lower():
            continue
        if args.connection and s.connection != args.connection:
            continue
        if args.since is not None and s.start_ns < args.since:
            continue
        if args.until is not None and s.start_ns >= args.until:
            continue
        hits = text_matches(events, args.text) if args.text else []
        if args.text and not hits:
            continue
        found.append((s, hits))
    if args.json:
        for s, hits in found:
            print(json.dumps({**s.to_json(), "matches": hits}))
        return 0
    if not found:
        print("no matching sessions")
        return 0
    print(_table([_COLUMNS, *(_row(s) for s, _ in found)]))
    for s, hits in found:
        for hit in hits[:20]:
            print(f"  {s.session_id}: {hit}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    _, summary, events, fp = _load(args)
    writer = export_asciicast if args.format == "asciicast" else export_jsonl
    if args.output is None:
        writer(events, summary, fp, sys.stdout)
    else:
        with open(args.output, "w", encoding="utf-8") as out:
            writer(events, summary, fp, out)
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    path: Path = args.path
    if not path.is_dir():
        raise UsageError(f"{path}: not a directory")
    single = bool(segment_files(path))
    recordings_dir = _recordings_dir_of(path) if single else path
    key = _find_key(args.key, recordings_dir, warn=True)
    if key is None:
        raise UsageError(
            f"no public key: pass --key FILE (no {PUBLIC_KEY_NAME} in {recordings_dir})"
        )
    sessions = [path] if single else list_session_dirs(path)
    if not sessions:
        raise UsageError(f"{path}: no recordings found")
    results = verify_sessions(sessions, key, jobs=args.jobs)
    for r in results:
        _print_verification(r, args.json)
    return EXIT_CODES[worst([r.status for r in results])]


def _print_verification(r: SessionVerification, as_json: bool) -> None:
    if as_json:
        print(json.dumps({
            "session_id": r.session_id, "status": str(r.status),
            "problem": str(r.problem) if r.problem else None,
            "torn": str(r.torn) if r.torn else None, "files": r.files, "frames": r.frames,
            "events": r.events, "checkpoints": r.checkpoints,
            "signed_events": r.signed_events, "notes": r.notes,
        }))
        return
    print(f"{r.session_id}: {r.summary()}")
    print(f"  {r.files} file(s), {r.frames} frames, {r.events} events, {r.checkpoints} "
          f"signed checkpoints, {r.signed_events} events covered by signatures")
    for note in r.notes:
        print(f"  note: {note}")
    if r.status is Status.TAMPERED and r.problem is not None:
        print(f"  first bad: {r.path / r.problem.file}, frame {r.problem.frame}")
