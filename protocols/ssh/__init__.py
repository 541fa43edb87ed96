"""``ssh``: native ssh, scp, sftp, ``-L``, ``-A`` and ``-X`` through the gateway, on asyncssh.

Clients log in to the gateway with a gateway token or API key (as the
password or the keyboard-interactive answer), a public key registered in
``options.authorized_keys``, or a certificate from the gateway's SSH CA
(``hoopd ssh-cert``). The gateway then logs in to the pinned target with its
own key or password: users never hold the target's credential. See
docs/ssh.md.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import asyncssh

from hoopd.handler import Loc, ServerHandler

from .config import AuthorizedKey, SshOptions, SshUpstream
from .keys import host_key, user_ca
from .risk import ShellRisk

if TYPE_CHECKING:
    from hoopd.config import ConnectionConfig

CIPHERS = [
    "aes128-gcm@openssh.com",
    "aes256-gcm@openssh.com",
    "chacha20-poly1305@openssh.com",
    "aes128-ctr",
    "aes192-ctr",
    "aes256-ctr",
]


class SshHandler(ServerHandler):
    name = "ssh"
    description = "SSH gateway: shells, exec, sftp/scp and -L to a pinned target, with command guardrails"
    supports_masking = True
    supports_commands = True
    upstream_model = SshUpstream
    options_model = SshOptions

    @classmethod
    def check_connection(cls, conn: ConnectionConfig) -> list[tuple[Loc, str]]:
        problems = super().check_connection(conn)
        if conn.tls is not None:
            problems.append((("tls",), "ssh has its own encryption; remove tls"))
        if conn.auth == "tls-client-cert":
            problems.append((("auth",), "ssh identifies clients by token, key or certificate"))
        opts: SshOptions = conn.options  # type: ignore[assignment]
        seen: dict[bytes, int] = {}
        for i, entry in enumerate(getattr(opts, "authorized_keys", ())):
            data = entry.public_data
            if data in seen:
                problems.append(
                    (("options", "authorized_keys", i, "key"),
                     f"same key as authorized_keys[{seen[data]}]")
                )
            seen.setdefault(data, i)
        return problems

    @classmethod
    def check_against(
        cls, conn: ConnectionConfig, connections: Sequence[ConnectionConfig]
    ) -> list[tuple[Loc, str]]:
        opts: SshOptions = conn.options  # type: ignore[assignment]
        by_name = {c.name: c for c in connections}
        problems: list[tuple[Loc, str]] = []
        for i, name in enumerate(opts.route_by_login):
            loc: Loc = ("options", "route_by_login", i)
            target = by_name.get(name)
            if name in opts.route_by_login[:i]:
                problems.append((loc, f"{name!r} is listed twice"))
            elif name == conn.name:
                problems.append((loc, "a connection cannot route to itself"))
            elif target is None:
                problems.append((loc, f"no connection named {name!r}"))
            elif target.protocol != cls.name:
                problems.append((loc, f"connection {name!r} is {target.protocol}, not ssh"))
            elif getattr(target.options, "route_by_login", ()):
                problems.append((loc, f"connection {name!r} routes itself; routes are one level deep"))
        return problems

    def __init__(self, connection: ConnectionConfig, gateway: Any) -> None:
        super().__init__(connection, gateway)
        self.upstream_cfg: SshUpstream = connection.upstream
        self.options: SshOptions = connection.options  # type: ignore[assignment]
        self.authorized: dict[bytes, AuthorizedKey] = {
            e.public_data: e for e in self.options.authorized_keys
        }
        self.risk = ShellRisk(connection.risk)
        self.ciphers = list(CIPHERS)
        self.upstream_key: asyncssh.SSHKey | None = None
        self.ca_public = b""
        self._server: asyncssh.SSHAcceptor | None = None
        self._routes: dict[str, SshHandler] = {}

    def _load_keys(self) -> None:
        self.ca_public = bytes(user_ca(self.gateway.config.gateway.data_dir).public_data)
        if self.upstream_cfg.key is not None:
            self.upstream_key = asyncssh.read_private_key(self.upstream_cfg.key)

    def route(self, login: str) -> SshHandler | None:
        """The handler whose settings serve a client logging in as ``login``:
        this one, or the routed connection of that name (options.route_by_login),
        looked up in the current config so a reload takes effect for new
        logins; None if the route's connection is gone or no longer ssh."""
        if login not in self.options.route_by_login:
            return self
        target = next((c for c in self.gateway.config.connections if c.name == login), None)
        if target is None or target.protocol != self.name:
            return None
        routed = self._routes.get(login)
        if routed is None or routed.connection is not target:
            routed = SshHandler(target, self.gateway)
            routed._load_keys()
            self._routes[login] = routed
        return routed

    async def start(self) -> None:
        from .server import GatewayServer

        key = host_key(self.gateway.config.gateway.data_dir)
        self._load_keys()
        conn = self.connection
        self._server = await asyncssh.create_server(
            lambda: GatewayServer(self),
            conn.listen.host,
            conn.listen.port,
            server_host_keys=[key],
            encoding=None,
            line_editor=False,
            # Per-connection settings, decided again once the login name has
            # picked the connection (GatewayServer.begin_auth, pty_requested).
            agent_forwarding=self.options.allow_agent_forwarding,
            # Never asyncssh's own X11 forwarding (a display on the gateway
            # host): GatewayServer answers x11-req and carries it to the
            # target when allow_x11_forwarding is on.
            x11_forwarding=False,
            allow_pty=True,
            encryption_algs=self.ciphers,
            config=None,
            reuse_address=True,
            # GatewayServer ends a stalled login itself (logged, counted);
            # asyncssh's own timer only backs it up
            login_timeout=self.options.login_timeout + 5.0,
        )
