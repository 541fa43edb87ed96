"""The ``hoopd`` command line."""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys
from collections.abc import Sequence
from pathlib import Path

from hoopd import __version__
from hoopd.config import ConfigError, load_config
from hoopd.registry import Registry

DEFAULT_CONFIG = "hoopd.yaml"


def cmd_serve(args: argparse.Namespace) -> int:
    from hoopd.server import serve

    return serve(Path(args.config), Registry.from_entry_points())


def cmd_check(args: argparse.Namespace) -> int:
    registry = Registry.from_entry_points()
    status = 0
    for name in args.config:
        try:
            config = load_config(Path(name), registry)
        except ConfigError as exc:
            status = 1
            for problem in exc.problems:
                print(f"{name}: {problem}")
            continue
        print(f"{name}: ok ({len(config.connections)} connection(s))")
    return status


def cmd_protocols(args: argparse.Namespace) -> int:
    registry = Registry.from_entry_points()
    for name, handler in registry.items():
        features = [f for f, on in (("masking", handler.supports_masking), ("commands", handler.supports_commands)) if on]
        print(f"{name:<12} {handler.description}")
        print(f"{'':<12} from {registry.origins[name]}; features: {', '.join(features) or 'none'}")
    for name, error in sorted(registry.broken.items()):
        print(f"{name:<12} BROKEN: {error}")
    return 1 if registry.broken else 0


def cmd_version(args: argparse.Namespace) -> int:
    print(f"hoopd {__version__}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hoopd",
        description="Access gateway: native clients to production systems, with policy, "
        "approvals, masking and tamper-evident recordings.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("serve", help="run the gateway")
    p.add_argument("-c", "--config", default=DEFAULT_CONFIG, help="config file (YAML)")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("check", help="validate config files; print every problem with its key path")
    p.add_argument("-c", "--config", action="append", required=True, help="config file (repeatable)")
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("protocols", help="list the protocol handlers installed")
    p.set_defaults(func=cmd_protocols)

    p = sub.add_parser("version", help="print the version")
    p.set_defaults(func=cmd_version)

    from recorder.cli import register as register_replay

    register_replay(sub)
    _register_optional(sub)
    return parser


SUBCOMMAND_MODULES = ("hoopd.cli_admin", "hoopd.ssh_cert", "hoopd.kubeconfig", "hoopd.demo")
"""Modules that contribute subcommands through ``register(subparsers)``."""


def _register_optional(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    for name in SUBCOMMAND_MODULES:
        # Only skip modules that are absent; a module that exists but fails to
        # import is a bug and must surface.
        if importlib.util.find_spec(name) is None:
            continue
        importlib.import_module(name).register(sub)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
