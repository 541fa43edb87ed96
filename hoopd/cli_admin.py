"""``hoopd token``, ``hoopd approvals`` and ``hoopd grants``.

``token issue`` runs on the gateway host (it signs with the key in
``data_dir``). ``approvals`` and ``grants`` talk to a gateway's admin API, so
a reviewer can run them from anywhere that reaches it:
``--gateway`` (or ``HOOPD_GATEWAY``) and ``--token`` (or ``HOOPD_TOKEN``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from hoopd.config import ConfigError, load_config
from hoopd.registry import Registry

DEFAULT_GATEWAY = "http://127.0.0.1:8009"
T = TypeVar("T")

if TYPE_CHECKING:
    SubParsers = argparse._SubParsersAction[argparse.ArgumentParser]


def register(sub: SubParsers) -> None:
    _register_token(sub)
    _register_approvals(sub)
    _register_grants(sub)


# -- token -------------------------------------------------------------------
def _register_token(sub: SubParsers) -> None:
    p = sub.add_parser("token", help="issue and revoke short gateway tokens")
    tsub = p.add_subparsers(dest="token_command", metavar="ACTION", required=True)
    issue = tsub.add_parser(
        "issue",
        help="print a signed gateway token (< 1000 characters: fits an OpenSSH password)",
    )
    issue.add_argument("-c", "--config", default="hoopd.yaml", help="the gateway's config file")
    issue.add_argument("--sub", required=True, help="subject (user or agent name)")
    issue.add_argument("--groups", default="", help="comma-separated groups")
    issue.add_argument("--ttl", default="1h", help="lifetime, e.g. 15m, 1h (default 1h)")
    issue.add_argument("--email", default="")
    issue.set_defaults(func=cmd_token_issue)
    revoke = tsub.add_parser(
        "revoke",
        help="revoke one gateway token, or every token of a subject issued until now; "
        "every gateway sharing the state store refuses it and ends its live sessions",
    )
    revoke.add_argument("-c", "--config", default="hoopd.yaml", help="the gateway's config file")
    which = revoke.add_mutually_exclusive_group(required=True)
    which.add_argument("--token", help="the token itself (or - to read it from stdin)")
    which.add_argument("--jti", help="the token's id (recorded as identity.credential_id)")
    which.add_argument("--sub", help="every token of this subject issued until now")
    revoke.add_argument("--reason", default="", help="why (stored with the revocation and logged)")
    revoke.add_argument("--by", default=os.environ.get("USER", ""), help="who revokes (default: $USER)")
    revoke.set_defaults(func=cmd_token_revoke)
    listing = tsub.add_parser("revocations", help="list the token revocations still in force")
    listing.add_argument("-c", "--config", default="hoopd.yaml", help="the gateway's config file")
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(func=cmd_token_revocations)


def _load(args: argparse.Namespace) -> Any:
    try:
        return load_config(Path(args.config), Registry.from_entry_points())
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"{args.config}: {problem}", file=sys.stderr)
        return None


def _gateway_tokens(config: Any) -> Any:
    from hoopd.identity.tokens import KEY_FILE_NAME, GatewayTokens, load_or_create_token_key

    key = load_or_create_token_key(config.gateway.data_dir / KEY_FILE_NAME)
    return GatewayTokens(key, config.identity.gateway_tokens, gateway_id=config.gateway.id)


def _with_store(config: Any, op: Callable[[Any], Awaitable[T]]) -> T:
    """Run one operation on the config's state store (opened and closed here)."""
    import asyncio

    from hoopd.approvals.store import open_store

    async def run() -> T:
        store = open_store(config.gateway.state, config.gateway.data_dir)
        try:
            return await op(store)
        finally:
            await store.close()

    return asyncio.run(run())


def cmd_token_revoke(args: argparse.Namespace) -> int:
    from hoopd.identity.errors import AuthError
    from hoopd.identity.tokens import TokenRevocation

    config = _load(args)
    if config is None:
        return 2
    tokens = _gateway_tokens(config)
    now = time.time()
    margin = tokens.config.leeway_seconds + 60  # tokens are accepted until exp + leeway
    if args.token is not None:
        token = sys.stdin.readline().strip() if args.token == "-" else args.token
        try:
            claims = tokens.claims(token)
        except AuthError as exc:
            if exc.reason in ("revoked", "expired"):
                print(f"already {exc.reason}: nothing to do")
                return 0
            print(f"hoopd token revoke: not a valid token of this gateway: {exc}", file=sys.stderr)
            return 2
        revocation = TokenRevocation("token", claims["jti"], now, float(claims["exp"]) + margin,
                                     revoked_by=args.by, reason=args.reason)
    elif args.jti is not None:
        # Its expiry is unknown: keep the row as long as any token issued
        # until now can live.
        revocation = TokenRevocation("token", args.jti, now, now + tokens.max_ttl_seconds + margin,
                                     revoked_by=args.by, reason=args.reason)
    else:
        revocation = TokenRevocation("subject", args.sub, now, now + tokens.max_ttl_seconds + margin,
                                     issued_up_to=now, revoked_by=args.by, reason=args.reason)

    try:
        _with_store(config, lambda store: store.revoke_token(revocation))
    except Exception as exc:
        print(f"hoopd token revoke: the state store is unavailable: {exc}", file=sys.stderr)
        return 1
    what = f"every token of {revocation.value!r} issued until now" if revocation.kind == "subject" \
        else f"token {revocation.value}"
    print(f"revoked {what}; gateways apply it within seconds")
    return 0


def cmd_token_revocations(args: argparse.Namespace) -> int:
    config = _load(args)
    if config is None:
        return 2

    try:
        found = _with_store(config, lambda store: store.token_revocations(time.time()))
    except Exception as exc:
        print(f"hoopd token revocations: the state store is unavailable: {exc}", file=sys.stderr)
        return 1
    rows = [
        {"kind": r.kind, "value": r.value, "revoked_at": r.revoked_at, "by": r.revoked_by,
         "reason": r.reason, "keep_until": r.keep_until}
        for r in found
    ]
    if args.json:
        print(json.dumps(rows))
    else:
        _print_table(rows, ("kind", "value", "revoked_at", "by", "reason"))
    return 0


def cmd_token_issue(args: argparse.Namespace) -> int:
    config = _load(args)
    if config is None:
        return 2
    tokens = _gateway_tokens(config)
    groups = [g.strip() for g in args.groups.split(",") if g.strip()]
    try:
        print(tokens.issue(args.sub, groups, args.ttl, email=args.email))
    except ValueError as exc:
        print(f"hoopd token issue: {exc}", file=sys.stderr)
        return 2
    return 0


# -- admin API clients -------------------------------------------------------
def _api_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--gateway",
        default=os.environ.get("HOOPD_GATEWAY", DEFAULT_GATEWAY),
        help="admin API base URL (env HOOPD_GATEWAY; default %(default)s)",
    )
    p.add_argument(
        "--token",
        default=os.environ.get("HOOPD_TOKEN"),
        help="your gateway token, API key or OIDC token (env HOOPD_TOKEN)",
    )
    p.add_argument("--cacert", help="CA bundle for an https admin API")
    p.add_argument("--json", action="store_true", help="print JSON")


def _client(args: argparse.Namespace) -> Any:
    import ssl

    from hoopd.approvals.client import ApprovalsClient

    if not args.token:
        raise SystemExit("hoopd: a token is needed: --token or HOOPD_TOKEN")
    ctx = ssl.create_default_context(cafile=args.cacert) if args.cacert else None
    return ApprovalsClient(args.gateway, args.token, ssl_context=ctx)


def _run(args: argparse.Namespace, action: Any) -> int:
    from hoopd.approvals.client import ApiError

    try:
        result = action(_client(args))
    except ApiError as exc:
        print(f"hoopd: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(result, indent=2, sort_keys=True))
    elif isinstance(result, list):
        _print_table(result, args.columns)
    else:
        _print_record(result)
    return 0


def _fmt(value: Any) -> str:
    if isinstance(value, float) and value > 1e9:
        return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(value))
    if isinstance(value, list | tuple):
        return ", ".join(str(v) for v in value)
    return "" if value is None else str(value)


def _print_table(rows: list[dict[str, Any]], columns: tuple[str, ...]) -> None:
    if not rows:
        print("(none)")
        return
    cells = [[_fmt(r.get(c)).replace("\n", " ")[:60] for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    print("  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True)))
    for row in cells:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)))


def _print_record(record: dict[str, Any]) -> None:
    width = max(len(k) for k in record) if record else 0
    for key, value in record.items():
        print(f"{key.ljust(width)}  {_fmt(value)}")


APPROVAL_COLUMNS = ("id", "state", "requester", "connection", "command_text", "created_at")
GRANT_COLUMNS = ("id", "state", "requester", "subject", "group", "connection", "minutes")


def _register_approvals(sub: SubParsers) -> None:
    p = sub.add_parser("approvals", help="review commands held for approval (admin API)")
    asub = p.add_subparsers(dest="approvals_command", metavar="ACTION", required=True)

    ls = asub.add_parser("list", help="list approvals you may see")
    _api_args(ls)
    ls.add_argument("--state", choices=["pending", "approved", "denied", "expired", "used"])
    ls.add_argument("--connection")
    ls.set_defaults(
        func=lambda a: _run(a, lambda c: c.list(a.state, a.connection)), columns=APPROVAL_COLUMNS
    )

    show = asub.add_parser("show", help="show one approval")
    _api_args(show)
    show.add_argument("id")
    show.set_defaults(func=lambda a: _run(a, lambda c: c.show(a.id)), columns=APPROVAL_COLUMNS)

    for verb in ("approve", "deny"):
        vp = asub.add_parser(verb, help=f"{verb} a held command (reviewers only; not your own)")
        _api_args(vp)
        vp.add_argument("id")
        vp.add_argument("--comment", default="")
        vp.set_defaults(
            func=lambda a, verb=verb: _run(a, lambda c: getattr(c, verb)(a.id, a.comment)),
            columns=APPROVAL_COLUMNS,
        )


def _register_grants(sub: SubParsers) -> None:
    p = sub.add_parser("grants", help="just-in-time access to a connection (admin API)")
    gsub = p.add_subparsers(dest="grants_command", metavar="ACTION", required=True)

    req = gsub.add_parser("request", help="ask for access to a connection for N minutes")
    _api_args(req)
    req.add_argument("connection")
    req.add_argument("--minutes", type=int, required=True)
    who = req.add_mutually_exclusive_group()
    who.add_argument("--subject", help="for this person (default: yourself)")
    who.add_argument("--group", help="for everyone in this group")
    req.add_argument("--reason", default="")
    req.set_defaults(
        func=lambda a: _run(
            a,
            lambda c: c.grants.request(
                a.connection, a.minutes, subject=a.subject, group=a.group, reason=a.reason
            ),
        ),
        columns=GRANT_COLUMNS,
    )

    ls = gsub.add_parser("list", help="list grants")
    _api_args(ls)
    ls.add_argument("--state")
    ls.add_argument("--connection")
    ls.set_defaults(
        func=lambda a: _run(a, lambda c: c.grants.list(a.state, a.connection)),
        columns=GRANT_COLUMNS,
    )

    for verb in ("approve", "deny", "revoke"):
        vp = gsub.add_parser(verb, help=f"{verb} a grant")
        _api_args(vp)
        vp.add_argument("id")
        vp.add_argument("--comment", default="")
        vp.set_defaults(
            func=lambda a, verb=verb: _run(a, lambda c: getattr(c.grants, verb)(a.id, a.comment)),
            columns=GRANT_COLUMNS,
        )
