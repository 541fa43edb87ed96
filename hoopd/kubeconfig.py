"""``hoopd kubeconfig CONNECTION``: print a kubeconfig for a kubernetes connection.

The kubeconfig points kubectl at the gateway's listener, trusts the gateway's
CA (``data_dir/tls/ca.pem``, or the configured certificate), and carries the
user's gateway credential as a bearer token:

* ``--token TOKEN`` or ``$HOOPD_TOKEN`` (a gateway token, API key or OIDC token), or
* ``--issue SUBJECT [--groups a,b] [--ttl 8h]``: mint a gateway token now with
  the key in ``data_dir`` (only on the gateway host).

kubectl never holds the cluster credential: the gateway injects its own.
"""

from __future__ import annotations

import argparse
import base64
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

if TYPE_CHECKING:
    SubParsers = argparse._SubParsersAction[argparse.ArgumentParser]


def register(sub: SubParsers) -> None:
    p = sub.add_parser(
        "kubeconfig",
        help="print a kubeconfig that points kubectl at a kubernetes connection",
    )
    p.add_argument("connection", metavar="CONNECTION", help="name of a kubernetes connection")
    p.add_argument("-c", "--config", default="hoopd.yaml", help="the gateway's config file")
    p.add_argument(
        "--token",
        default=os.environ.get("HOOPD_TOKEN"),
        help="your gateway token, API key or OIDC token (env HOOPD_TOKEN)",
    )
    p.add_argument("--issue", metavar="SUBJECT", help="issue a gateway token for SUBJECT (gateway host only)")
    p.add_argument("--groups", default="", help="with --issue: comma-separated groups")
    p.add_argument("--ttl", default="8h", help="with --issue: token lifetime (default 8h)")
    p.add_argument("--server", help="server URL clients use (default: from the listen address)")
    p.add_argument("--namespace", default="", help="default namespace of the context")
    p.set_defaults(func=cmd_kubeconfig)


def build_kubeconfig(
    name: str, server: str, ca_pem: bytes | None, token: str, namespace: str = ""
) -> dict[str, Any]:
    cluster: dict[str, Any] = {"server": server}
    if ca_pem:
        cluster["certificate-authority-data"] = base64.b64encode(ca_pem).decode()
    context: dict[str, Any] = {"cluster": name, "user": f"{name}-user"}
    if namespace:
        context["namespace"] = namespace
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": name, "cluster": cluster}],
        "users": [{"name": f"{name}-user", "user": {"token": token}}],
        "contexts": [{"name": name, "context": context}],
        "current-context": name,
        "preferences": {},
    }


def cmd_kubeconfig(args: argparse.Namespace) -> int:
    from hoopd.config import ConfigError, load_config
    from hoopd.registry import Registry

    try:
        config = load_config(Path(args.config), Registry.from_entry_points())
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"{args.config}: {problem}", file=sys.stderr)
        return 2
    try:
        conn = config.connection(args.connection)
    except KeyError:
        names = ", ".join(c.name for c in config.connections if c.protocol == "kubernetes")
        print(f"hoopd kubeconfig: no connection {args.connection!r} (kubernetes connections: {names or 'none'})", file=sys.stderr)
        return 2
    if conn.protocol != "kubernetes":
        print(f"hoopd kubeconfig: connection {conn.name} is {conn.protocol}, not kubernetes", file=sys.stderr)
        return 2
    token = args.token
    if args.issue:
        from hoopd.identity.tokens import KEY_FILE_NAME, GatewayTokens, load_or_create_token_key

        key = load_or_create_token_key(config.gateway.data_dir / KEY_FILE_NAME)
        identity_cfg = getattr(config.identity, "gateway_tokens", None)
        tokens = GatewayTokens(key, identity_cfg, gateway_id=config.gateway.id)
        groups = [g.strip() for g in args.groups.split(",") if g.strip()]
        try:
            token = tokens.issue(args.issue, groups, args.ttl)
        except ValueError as exc:
            print(f"hoopd kubeconfig: {exc}", file=sys.stderr)
            return 2
    if not token:
        print("hoopd kubeconfig: a credential is needed: --token, HOOPD_TOKEN or --issue SUBJECT", file=sys.stderr)
        return 2
    host = conn.listen.host
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    server = args.server or (f"https://[{host}]:{conn.listen.port}" if ":" in host else f"https://{host}:{conn.listen.port}")
    tls = config.gateway.tls
    ca_path = config.gateway.data_dir / "tls" / "ca.pem" if tls.cert is None else tls.cert
    try:
        ca_pem: bytes | None = ca_path.read_bytes()
    except OSError:
        ca_pem = None
        print(
            f"hoopd kubeconfig: warning: {ca_path} not found (start the gateway once to create its CA)",
            file=sys.stderr,
        )
    doc = build_kubeconfig(conn.name, server, ca_pem, token, args.namespace)
    sys.stdout.write(yaml.safe_dump(doc, sort_keys=False))
    return 0
