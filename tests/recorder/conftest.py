"""Fixtures for recorder tests: the `hoopd replay` parser and a run() helper."""

from __future__ import annotations

import argparse
from collections.abc import Callable

import pytest

from recorder.cli import register


@pytest.fixture
def replay_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hoopd")
    register(parser.add_subparsers())
    return parser


@pytest.fixture
def run_cli(
    replay_parser: argparse.ArgumentParser, capsysbinary: pytest.CaptureFixture[bytes]
) -> Callable[..., tuple[int, str, str]]:
    """run_cli("list", DIR) -> (exit code, stdout, stderr)."""

    def run(*argv: object) -> tuple[int, str, str]:
        args = replay_parser.parse_args(["replay", *map(str, argv)])
        code = args.func(args)
        out, err = capsysbinary.readouterr()
        return code, out.decode("utf-8", "replace"), err.decode("utf-8", "replace")

    return run
