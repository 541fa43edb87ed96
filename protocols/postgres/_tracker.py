"""Which backend message answers which frontend message, sans-IO.

Theory of operation
-------------------
The server answers frontend messages strictly in order, so the tracker keeps
a queue of *expectations*, one per forwarded message that gets an answer:

=============  =========================================================
Parse          ParseComplete ``1``
Bind           BindComplete ``2``
Describe S     ParameterDescription ``t`` then RowDescription ``T`` / NoData ``n``
Describe P     RowDescription ``T`` / NoData ``n``
Execute        DataRow* then CommandComplete ``C`` / EmptyQuery ``I`` /
               PortalSuspended ``s`` (COPY responses in between)
Close          CloseComplete ``3``
Sync           ReadyForQuery ``Z``
Query          per statement: [``T`` ``D``*] ``C`` | ``I`` | COPY..., then ``Z``
FunctionCall   FunctionCallResponse ``V``, then ``Z``
(probe)        the gateway's own batch before a COPY TO STDOUT
               (``_copy_probe``): everything up to its ``Z`` is swallowed
=============  =========================================================

An ErrorResponse in the extended protocol makes the server skip everything up
to the next Sync: the tracker fails the command it belongs to and skips the
rest. An ErrorResponse inside a simple Query ends that Query's remaining
statements. Asynchronous messages (``N``, ``A``, ``S``) can arrive anywhere.

The tracker owns nothing but bookkeeping: the relay calls ``sink`` methods to
report results (to record them) and asks ``current()`` for the running
statement (to count rows and mask its DataRows).
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Protocol

from ._messages import Column

PARSE, BIND, DESC_STMT, DESC_PORTAL, EXEC, CLOSE, SYNC, QUERY, FCALL, DENIED, PROBE, DESC_OWN = range(12)
"""DESC_OWN: the gateway's own Describe of a portal, sent right before an
Execute whose result columns it must know to mask them; its answer is not
the client's."""
_ENDS_AT_READY = frozenset({SYNC, QUERY, FCALL, DENIED})
"""Expectations that ReadyForQuery answers."""
_NAMES = [
    "parse", "bind", "describe-S", "describe-P", "execute", "close", "sync", "query", "fcall", "denied",
    "probe", "describe-own",
]  # fmt: skip


@dataclass(slots=True)
class Running:
    """A statement sent to the server and not yet finished."""

    cmd: Any
    """hoopd.model.Command (or anything the sink understands)."""
    started: float = field(default_factory=time.perf_counter)
    rows: int = 0
    bytes: int = 0
    columns: list[Column] | None = None
    formats: tuple[int, ...] | None = None
    plan: Any = None
    done: bool = False
    capped: str = ""
    """Set when a cap was exceeded: the reason shown to the client."""
    portal: Any = None
    """Extended protocol: the Portal it executes (columns learned late)."""
    copy: Any = None
    """COPY TO STDOUT under column rules: (plan, columns, CopyFormat) learned
    by the gateway's probe before the statement was sent; ``()`` when the
    probe found nothing to mask by column; None: not probed."""


@dataclass(slots=True)
class Statement:
    query: str
    columns: list[Column] | None = None
    batch: int = -1
    """``Tracker.batch`` when its Parse was sent."""


@dataclass(slots=True)
class Portal:
    statement: Statement | None
    result_formats: tuple[int, ...] | None
    """From the Bind (None: not known, the RowDescription's formats apply)."""
    columns: list[Column] | None = None
    bind: Any = None
    """The Bind message (parameters) that created it."""
    batch: int = -1
    """``Tracker.batch`` when its Bind was sent."""
    texts: tuple[str | None, ...] = ()
    """The statement texts it may run (None: one the gateway does not know),
    set by the relay when the Bind is sent."""


LOST: Any = object()
"""In a list of versions: earlier ones the tracker no longer holds."""
MAX_VERSIONS = 8


class Versions:
    """What the server may hold under each name (the unnamed statement, the
    portals): a Parse or Bind can fail on the server or be skipped after an
    earlier error, and then the server keeps the older object. A version is
    dropped when its message did not take effect, and the older ones when
    the server acknowledged it (ParseComplete/BindComplete)."""

    def __init__(self) -> None:
        self._by_name: dict[str, list[Any]] = {}

    def add(self, name: str, obj: Any) -> None:
        found = self._by_name.setdefault(name, [])
        found.append(obj)
        if len(found) > MAX_VERSIONS:
            found[: len(found) - MAX_VERSIONS + 1] = [LOST]
        if len(self._by_name) > 10_000:
            # too many names (portals): forget one; its name is unknown then
            del self._by_name[next(iter(self._by_name))]

    def confirm(self, name: str, obj: Any) -> None:
        found = self._by_name.get(name)
        if found is not None:
            for i, v in enumerate(found):
                if v is obj:
                    del found[:i]
                    return

    def drop(self, name: str, obj: Any) -> None:
        found = self._by_name.get(name)
        if found is not None:
            for i, v in enumerate(found):
                if v is obj:
                    del found[i]
                    return

    def get(self, name: str) -> list[Any]:
        """The versions the server may hold (LOST: others unknown); empty
        if the name was never sent."""
        return list(self._by_name.get(name, ()))


@dataclass(slots=True)
class Expect:
    kind: int
    name: str = ""
    running: list[Running] = field(default_factory=list)
    index: int = 0
    """QUERY: which statement is running."""
    message: str = ""
    """DENIED: what the client is told instead of the server's error."""
    target: Any = None
    """DESC_STMT/DESC_PORTAL: the Statement/Portal described (looked up
    when the Describe was forwarded, not by name when the answer arrives)."""

    def __repr__(self) -> str:
        return f"Expect({_NAMES[self.kind]}, {self.name!r}, {len(self.running)})"


class Sink(Protocol):
    def complete(self, run: Running, tag: str) -> None: ...
    def failed(self, run: Running, fields: dict[str, str]) -> None: ...
    def skipped(self, run: Running, why: str) -> None: ...


class Tracker:
    def __init__(self, sink: Sink) -> None:
        self.sink = sink
        self.queue: deque[Expect] = deque()
        self.statements: dict[str, Statement] = {}
        self.portals: dict[str, Portal] = {}
        self.discarding = False
        """After an extended-protocol error, until the client's next Sync."""
        self.status = b"I"
        self.copy_in = False
        self.copy_out_binary = False
        self.copy_out = False
        self.outstanding_batch = False
        """The last forwarded bytes ended inside an extended batch (no Sync yet)."""
        self.batch = 0
        """Counts the client's Syncs: a Bind or Execute runs only if every
        earlier message of its batch took effect on the server."""
        self.unnamed = Versions()
        """Versions of the unnamed statement (named ones: ``risk.PreparedStatements``)."""
        self.portal_versions = Versions()

    # -- frontend side (call when a message is forwarded) ---------------------
    def on_parse(self, name: str, query: str) -> Statement:
        st = self.statements[name] = Statement(query, batch=self.batch)
        if not name:
            self.unnamed.add("", st)
        return st

    def on_bind(self, portal: str, statement: str, result_formats: tuple[int, ...]) -> Portal:
        p = Portal(self.statements.get(statement), result_formats, batch=self.batch)
        self.portals[portal] = p
        self.portal_versions.add(portal, p)
        return p

    def on_sync(self) -> None:
        self.batch += 1

    def statement_versions(self, name: str) -> list[Statement]:
        """The unnamed statement(s) a Bind sent now may use: the one parsed
        earlier in its batch, else every version the server may hold."""
        st = self.statements.get(name)
        if st is not None and st.batch == self.batch:
            return [st]
        return self.unnamed.get("")

    def portal_candidates(self, name: str) -> list[Portal]:
        """The portal(s) an Execute sent now may run (LOST: unknown ones)."""
        p = self.portals.get(name)
        if p is not None and p.batch == self.batch:
            return [p]
        return self.portal_versions.get(name)

    def _not_taken(self, e: Expect) -> None:
        """``e``'s message did not take effect on the server."""
        if e.kind == PARSE and e.target is not None and not e.name:
            self.unnamed.drop("", e.target)
        elif e.kind == BIND and e.target is not None:
            self.portal_versions.drop(e.name, e.target)

    def on_close(self, kind: int, name: str) -> None:
        if kind == ord("S"):
            self.statements.pop(name, None)
        else:
            self.portals.pop(name, None)

    def expect(self, kind: int, name: str = "", running: list[Running] | None = None,
               message: str = "", target: Any = None) -> bool:
        """Register an expected answer. False if the server will discard the
        message (after an error, before Sync): its commands are skipped."""
        if self.discarding and kind != SYNC:
            # (the server ignores every message up to Sync: a Query and a
            # FunctionCall too -- expected, their answers would be taken
            # for the next statement's)
            for run in running or ():
                self._skip(run, "not run: an earlier statement in the pipeline failed")
            self._not_taken(Expect(kind, name, [], 0, message, target))
            return False
        if kind == SYNC:
            self.discarding = False
        self.queue.append(Expect(kind, name, running or [], 0, message, target))
        return True

    def expect_probe(self, probe: Any) -> None:
        """The gateway's COPY column probe was sent: its answers (up to its
        ReadyForQuery) are the relay's, not the client's."""
        self.queue.append(Expect(PROBE, "", [], target=probe))

    def probe_head(self) -> Any:
        """The probe whose answers are arriving now, or None."""
        queue = self.queue
        if queue and queue[0].kind == PROBE:
            return queue[0].target
        return None

    def probe_done(self, status: bytes) -> None:
        self.queue.popleft()
        self.status = status

    def expect_query(self, running: list[Running]) -> None:
        """``expect(QUERY, "", running)`` for the relay's hot path."""
        if self.discarding:
            self.expect(QUERY, "", running)
            return
        self.queue.append(Expect(QUERY, "", running))

    # -- backend side -----------------------------------------------------------
    def head(self) -> Expect | None:
        return self.queue[0] if self.queue else None

    def current(self) -> Running | None:
        """The statement whose rows are streaming now."""
        queue = self.queue
        if not queue:
            return None
        h = queue[0]
        kind = h.kind
        if kind == EXEC:
            return h.running[0] if h.running else None
        if kind in (QUERY, FCALL) and h.index < len(h.running):
            return h.running[h.index]
        return None

    def row_description(self, columns: list[Column]) -> Running | None:
        """Attach columns; returns the simple-query statement whose result
        they describe (None for Describe answers)."""
        queue = self.queue
        if not queue:
            return None
        h = queue[0]
        if h.kind == QUERY:
            if h.index < len(h.running):
                run = h.running[h.index]
                run.columns = columns
                run.plan = None
                return run
        elif h.kind in (DESC_STMT, DESC_PORTAL, DESC_OWN):
            if h.target is not None:
                h.target.columns = columns
            self.queue.popleft()
        return None

    def no_data(self) -> None:
        h = self.head()
        if h is not None and h.kind in (DESC_STMT, DESC_PORTAL, DESC_OWN):
            self.queue.popleft()

    def simple_ack(self, kind: int) -> None:
        """ParseComplete / BindComplete / CloseComplete."""
        h = self.head()
        if h is not None and h.kind == kind:
            self.queue.popleft()
            if h.target is not None:
                if kind == PARSE:
                    self.unnamed.confirm("", h.target)
                elif kind == BIND:
                    self.portal_versions.confirm(h.name, h.target)

    def command_complete(self, tag: str) -> None:
        queue = self.queue
        if not queue:
            return
        h = queue[0]
        kind = h.kind
        if kind == EXEC:
            queue.popleft()
            for run in h.running:
                self._finish(run, tag)
        elif kind in (QUERY, FCALL) and h.index < len(h.running):
            # a simple query's statement: the common case, _finish inlined
            run = h.running[h.index]
            if not run.done:
                run.done = True
                self.sink.complete(run, tag)
            h.index += 1
        self.copy_in = self.copy_out = False

    def portal_suspended(self) -> None:
        h = self.head()
        if h is not None and h.kind == EXEC:
            self.queue.popleft()
            for run in h.running:
                self._finish(run, "suspended")

    def function_result(self) -> None:
        h = self.head()
        if h is not None and h.kind == FCALL and h.index < len(h.running):
            self._finish(h.running[h.index], "FUNCTION CALL")
            h.index += 1

    def error(self, fields: dict[str, str]) -> Expect | None:
        """Attribute an ErrorResponse. Returns the expectation it answered
        (callers check for DENIED), or None for a session-level error."""
        self.copy_in = self.copy_out = False
        h = self.head()
        if h is None or h.kind == SYNC:
            return None
        if h.kind in (QUERY, FCALL, DENIED) and (h.kind != DENIED or not h.name):
            # simple protocol: rest of this query is skipped; Z still comes
            runs = h.running[h.index :]
            if runs:
                if h.kind == DENIED:
                    for run in runs:
                        self._skip(run, h.message)
                else:
                    self._fail(runs[0], fields)
                    for run in runs[1:]:
                        self._skip(run, "not run: an earlier statement failed")
            h.index = len(h.running)
            return h
        # extended protocol: skip to the next Sync (the gateway's COPY probe
        # ends with a Sync of its own: the server skips the probe's other
        # messages, answers that Sync -- and runs what follows)
        first: Expect = h
        failed_one = False
        while self.queue and self.queue[0].kind not in (SYNC, PROBE):
            e = self.queue.popleft()
            self._not_taken(e)
            for run in e.running:
                if run.done:
                    continue
                if e.kind == DENIED:
                    self._skip(run, e.message)
                elif not failed_one:
                    self._fail(run, fields)
                    failed_one = True
                else:
                    self._skip(run, "not run: an earlier statement in the pipeline failed")
        if not self.queue:
            self.discarding = True
        return first

    def ready(self, status: bytes) -> None:
        self.status = status
        self.copy_in = self.copy_out = False
        queue = self.queue
        if not queue:
            return
        h = queue[0]
        if h.kind in _ENDS_AT_READY:
            queue.popleft()
            if h.index < len(h.running):
                for run in h.running[h.index :]:
                    if not run.done:
                        self._skip(run, "no result from the server")
        else:
            # Z while something else is expected: the server and the tracker
            # disagree (should not happen). Drop everything up to a Sync.
            while self.queue and self.queue[0].kind not in (SYNC, QUERY, FCALL, DENIED, PROBE):
                e = self.queue.popleft()
                for run in e.running:
                    if not run.done:
                        self._skip(run, "no result from the server")
            if self.queue and self.queue[0].kind != PROBE:
                # (a probe's answers are still to come: it stays)
                self.queue.popleft()

    def _skip(self, run: Running, why: str) -> None:
        if not run.done:
            run.done = True
            self.sink.skipped(run, why)

    def _fail(self, run: Running, fields: dict[str, str]) -> None:
        if not run.done:
            run.done = True
            self.sink.failed(run, fields)

    def _finish(self, run: Running, tag: str) -> None:
        if not run.done:
            run.done = True
            self.sink.complete(run, tag)

    def outstanding(self) -> int:
        return len(self.queue)
