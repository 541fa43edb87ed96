"""The protocol handler interface.

A handler owns one listener for one configured connection. It decodes its
protocol into the common command model and talks to the gateway only through
the ``Gateway`` and ``Session`` objects it is given: identity, policy,
approvals, masking, recording and metrics all live behind them, so a handler
cannot skip recording a decision or forget to count a byte.

Handlers are registered through the ``hoopd.protocols`` entry-point group.
The smallest complete example is ``protocols.tcp``.
"""

from __future__ import annotations

import abc
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from pydantic import BaseModel, ConfigDict

from hoopd.configtypes import HostPort

if TYPE_CHECKING:
    from collections.abc import Sequence

    from hoopd.config import ConnectionConfig
    from hoopd.gateway import Gateway

Loc = tuple[str | int, ...]


def listening_address(server: Any) -> HostPort | None:
    """Where a server (asyncio's, asyncssh's, aiohttp's) actually listens:
    its first socket's address, with port 0 resolved."""
    sockets = getattr(server, "sockets", None) if server is not None else None
    if not sockets:
        return None
    host, port = sockets[0].getsockname()[:2]
    return HostPort(host, port)


class NoOptions(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ProtocolHandler(abc.ABC):
    name: ClassVar[str]
    description: ClassVar[str] = ""
    supports_masking: ClassVar[bool] = False
    """Can this protocol mask what flows back? If not, a connection that asks
    for masking is rejected at config time (fail closed)."""
    supports_commands: ClassVar[bool] = False
    """Does this protocol see individual commands that risk rules can judge?"""
    upstream_model: ClassVar[type[BaseModel]]
    options_model: ClassVar[type[BaseModel]] = NoOptions

    @classmethod
    def check_connection(cls, conn: ConnectionConfig) -> list[tuple[Loc, str]]:
        """Protocol-specific checks after the upstream and options models have
        validated. Return (key path relative to the connection, message)."""
        problems: list[tuple[Loc, str]] = []
        if conn.masking_requested and not cls.supports_masking:
            problems.append(
                (
                    ("masking",),
                    f"protocol {cls.name} cannot inspect its traffic, so it cannot mask; "
                    "remove masking from this connection",
                )
            )
        if conn.commands_requested and not cls.supports_commands:
            problems.append(
                (
                    ("risk",),
                    f"protocol {cls.name} does not see commands, so command rules "
                    "cannot be enforced; remove risk from this connection",
                )
            )
        return problems

    @classmethod
    def check_against(
        cls, conn: ConnectionConfig, connections: Sequence[ConnectionConfig]
    ) -> list[tuple[Loc, str]]:
        """Checks that need the config's other connections (one connection
        naming another). Called for each connection that passed its own
        checks, with every connection of the config."""
        return []

    def __init__(self, connection: ConnectionConfig, gateway: Gateway) -> None:
        self.connection = connection
        self.gateway = gateway

    @abc.abstractmethod
    async def start(self) -> None:
        """Bind the listener and start accepting. Raise OSError if it cannot."""

    @abc.abstractmethod
    async def stop(self) -> None:
        """Stop accepting new clients. Live sessions keep running; the gateway
        ends them itself when it shuts down."""

    @property
    @abc.abstractmethod
    def bound_address(self) -> HostPort | None:
        """Where the listener actually listens (port 0 resolved)."""


class _Closable(Protocol):
    def close(self) -> None: ...


class ServerHandler(ProtocolHandler):
    """A handler whose listener is one server object (asyncio's, asyncssh's)
    that ``start`` keeps in ``self._server``: :meth:`stop` closes it and
    :attr:`bound_address` reads its first socket."""

    _server: _Closable | None = None

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None

    @property
    def bound_address(self) -> HostPort | None:
        return listening_address(self._server)
