"""``hoopd ssh-cert``: trade a gateway token (or OIDC token, or API key) for
a short-lived OpenSSH user certificate signed by the gateway's SSH CA.

Long OIDC tokens do not fit in an OpenSSH password (it is cut at 1023
characters); a certificate has no such limit and needs no prompt::

    hoopd ssh-cert -c hoopd.yaml --token "$TOKEN" --principal alice \\
        --pubkey ~/.ssh/id_ed25519.pub            # writes id_ed25519-cert.pub
    ssh -p 2222 alice@gateway                      # ssh picks the cert up

The command runs where the gateway's ``data_dir`` is (it reads the CA key
and the token key there); the certificate carries the identity (subject,
groups, email) and never outlives the token.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any

DEFAULT_TTL = "8h"


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "ssh-cert",
        help="issue a short-lived SSH user certificate for a valid token",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
    )
    p.add_argument("-c", "--config", default="hoopd.yaml", help="gateway config (for data_dir and identity)")
    p.add_argument("--data-dir", type=Path, help="use this data_dir instead of the config's")
    p.add_argument("--token", help="gateway token, OIDC token or API key (default: $HOOPD_TOKEN)")
    p.add_argument("--principal", action="append", default=[],
                   help="login name the certificate is valid for (repeatable; default: the token's subject)")
    p.add_argument("--pubkey", required=True, type=Path, help="the user's public key file")
    p.add_argument("--ttl", default=DEFAULT_TTL, help="validity, e.g. 15m, 8h (capped by the token's expiry)")
    p.add_argument("-o", "--out", type=Path,
                   help="where to write the certificate (default: PUBKEY with -cert.pub, '-' for stdout)")
    p.set_defaults(func=cmd_ssh_cert)


def _settings(args: argparse.Namespace) -> tuple[Path, Any, str, float]:
    from hoopd.config import ConfigError, load_config
    from hoopd.identity.config import IdentityConfig
    from hoopd.registry import Registry

    if args.data_dir is not None and not Path(args.config).exists():
        return args.data_dir, IdentityConfig(), "hoopd", 12 * 3600.0
    try:
        config = load_config(Path(args.config), Registry.from_entry_points())
    except ConfigError as exc:
        raise SystemExit(f"hoopd ssh-cert: {exc}") from None
    limits = [float(getattr(c.options, "cert_max_ttl", 12 * 3600.0)) for c in config.connections if c.protocol == "ssh"]
    max_ttl = max(limits) if limits else 12 * 3600.0
    return (args.data_dir or config.gateway.data_dir, config.identity, config.gateway.id, max_ttl)


def cmd_ssh_cert(args: argparse.Namespace) -> int:
    import os

    import asyncssh

    from hoopd.configtypes import parse_duration
    from hoopd.identity.authenticator import Authenticator
    from hoopd.identity.errors import AuthError
    from protocols.ssh.keys import issue_user_cert, user_ca

    token = args.token or os.environ.get("HOOPD_TOKEN", "")
    if not token:
        print("hoopd ssh-cert: give --token or set HOOPD_TOKEN", file=sys.stderr)
        return 2
    data_dir, identity_config, gateway_id, max_ttl = _settings(args)
    try:
        ttl = min(parse_duration(args.ttl), max_ttl)
    except ValueError as exc:
        print(f"hoopd ssh-cert: --ttl: {exc}", file=sys.stderr)
        return 2
    try:
        user_key = asyncssh.read_public_key(args.pubkey)
    except (OSError, asyncssh.KeyImportError) as exc:
        print(f"hoopd ssh-cert: cannot read {args.pubkey}: {exc}", file=sys.stderr)
        return 2
    auth = Authenticator.from_data_dir(identity_config, data_dir, gateway_id=gateway_id)

    async def check() -> Any:
        try:
            return await auth.authenticate(token)
        finally:
            await auth.close()

    try:
        identity = asyncio.run(check())
    except AuthError as exc:
        print(f"hoopd ssh-cert: the token was not accepted: {exc}", file=sys.stderr)
        return 1
    principals = args.principal or [identity.subject]
    try:
        cert = issue_user_cert(user_ca(data_dir), user_key, identity, principals, ttl)
    except ValueError as exc:
        print(f"hoopd ssh-cert: {exc}", file=sys.stderr)
        return 1
    data = cert.export_certificate()
    if args.out is not None and str(args.out) == "-":
        sys.stdout.write(data.decode())
        return 0
    out = args.out or args.pubkey.with_name(args.pubkey.name.removesuffix(".pub") + "-cert.pub")
    out.write_bytes(data)
    print(f"wrote {out}: {identity.subject} as {', '.join(principals)}, valid {int(ttl)}s at most",
          file=sys.stderr)
    return 0
