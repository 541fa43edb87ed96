"""Protocol handlers are found through the ``hoopd.protocols`` entry-point
group — the built-ins too — so a third-party package adds a protocol by
declaring an entry point, with no change to hoopd itself."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from importlib.metadata import EntryPoint, entry_points

from hoopd.handler import ProtocolHandler

GROUP = "hoopd.protocols"
log = logging.getLogger("hoopd.registry")


class Registry:
    def __init__(self, handlers: Iterable[type[ProtocolHandler]] = ()) -> None:
        self._handlers: dict[str, type[ProtocolHandler]] = {}
        self.broken: dict[str, str] = {}
        """Entry points that failed to load: name -> error."""
        self.origins: dict[str, str] = {}
        for handler in handlers:
            self.add(handler)

    def add(self, handler: type[ProtocolHandler], origin: str = "") -> None:
        self._handlers[handler.name] = handler
        self.origins[handler.name] = origin or f"{handler.__module__}:{handler.__qualname__}"

    def get(self, name: str) -> type[ProtocolHandler]:
        return self._handlers[name]

    def names(self) -> list[str]:
        return sorted(self._handlers)

    def items(self) -> list[tuple[str, type[ProtocolHandler]]]:
        return sorted(self._handlers.items())

    @classmethod
    def from_entry_points(cls) -> Registry:
        registry = cls()
        for ep in entry_points(group=GROUP):
            registry._load(ep)
        return registry

    def _load(self, ep: EntryPoint) -> None:
        try:
            handler = ep.load()
        except Exception as exc:  # a broken plugin must not take the daemon down
            self.broken[ep.name] = f"{type(exc).__name__}: {exc}"
            log.error("protocol %s (%s) failed to load: %s", ep.name, ep.value, exc)
            return
        if not (isinstance(handler, type) and issubclass(handler, ProtocolHandler)):
            self.broken[ep.name] = f"{ep.value} is not a ProtocolHandler subclass"
            return
        if handler.name != ep.name:
            self.broken[ep.name] = f"entry point name differs from handler name {handler.name!r}"
            return
        self.add(handler, ep.value)
