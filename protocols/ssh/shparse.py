"""A small, forgiving shell tokenizer (sans-IO, no evaluation).

It splits a command line into pipelines of simple commands the way a POSIX
shell would, closely enough for risk scoring: quotes are removed, ``;``,
``&``, ``&&``, ``||``, ``|`` and newlines separate commands, redirections are
kept apart from arguments, and the text of command and process
substitutions (``$(...)``, backticks, ``<(...)``) is returned so the caller
can look inside it. It never raises: a line it cannot finish (an open quote,
a trailing ``|`` or backslash) is reported as ``incomplete``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

MAX_INPUT = 64 * 1024
"""Longer text is cut (and reported as incomplete)."""

_OPERATORS = ("&&", "||", "|&", ";;", ";", "&", "|", "\n")
_REDIRECTS = ("&>>", "&>", ">>", ">|", ">&", "<<<", "<<-", "<<", "<&", "<>", ">", "<")


@dataclass
class Word:
    text: str
    substitutions: list[str] = field(default_factory=list)
    """Inner text of $(...), `...`, <(...) and >(...) found in the word."""
    quoted: bool = False


@dataclass
class SimpleCommand:
    words: list[Word] = field(default_factory=list)
    redirects: list[tuple[str, Word]] = field(default_factory=list)

    @property
    def argv(self) -> list[str]:
        return [w.text for w in self.words]


@dataclass
class Parsed:
    pipelines: list[list[SimpleCommand]] = field(default_factory=list)
    incomplete: bool = False
    """An open quote, substitution, trailing operator or backslash: the shell
    would ask for another line."""

    def commands(self) -> list[SimpleCommand]:
        return [c for p in self.pipelines for c in p]


class _Scanner:
    def __init__(self, text: str) -> None:
        self.s = text
        self.i = 0
        self.incomplete = False

    def peek(self, n: int = 1) -> str:
        return self.s[self.i : self.i + n]

    def at_end(self) -> bool:
        return self.i >= len(self.s)

    def skip_balanced(self, open_ch: str, close_ch: str) -> str:
        """From just after an opening bracket, return the inner text up to the
        matching close (quotes respected) and move past it."""
        s = self.s
        depth = 1
        start = self.i
        while self.i < len(s):
            c = s[self.i]
            if c == "\\":
                self.i += 2
                continue
            if c == "'":
                end = s.find("'", self.i + 1)
                if end < 0:
                    self.i = len(s)
                    break
                self.i = end + 1
                continue
            if c == '"':
                self.i += 1
                self._skip_double()
                continue
            if c == "`":
                end = s.find("`", self.i + 1)
                if end < 0:
                    self.i = len(s)
                    break
                self.i = end + 1
                continue
            if c == open_ch:
                depth += 1
            elif c == close_ch:
                depth -= 1
                if depth == 0:
                    inner = s[start : self.i]
                    self.i += 1
                    return inner
            self.i += 1
        self.incomplete = True
        return s[start:]

    def _skip_double(self) -> None:
        s = self.s
        while self.i < len(s):
            c = s[self.i]
            if c == "\\":
                self.i += 2
                continue
            if c == '"':
                self.i += 1
                return
            if c == "$" and self.peek(2) == "$(":
                self.i += 2
                self.skip_balanced("(", ")")
                continue
            self.i += 1
        self.incomplete = True


def parse(text: str) -> Parsed:
    """Split ``text`` into pipelines. Never raises."""
    out = Parsed()
    if len(text) > MAX_INPUT:
        text = text[:MAX_INPUT]
        out.incomplete = True
    sc = _Scanner(text)
    pipeline: list[SimpleCommand] = []
    cmd = SimpleCommand()
    pending_redirect: str | None = None
    last_op = ""

    def end_command() -> None:
        nonlocal cmd
        if cmd.words or cmd.redirects:
            pipeline.append(cmd)
        cmd = SimpleCommand()

    def end_pipeline() -> None:
        nonlocal pipeline
        end_command()
        if pipeline:
            out.pipelines.append(pipeline)
        pipeline = []

    s = sc.s
    while not sc.at_end():
        c = s[sc.i]
        if c in " \t\r":
            sc.i += 1
            continue
        if c == "\\" and sc.peek(2) == "\\\n":
            sc.i += 2
            continue
        if c == "#":
            nl = s.find("\n", sc.i)
            sc.i = len(s) if nl < 0 else nl
            continue
        op = next((o for o in _OPERATORS if s.startswith(o, sc.i)), None)
        if op is not None:
            sc.i += len(op)
            last_op = op
            if op in ("|", "|&"):
                end_command()
            else:
                end_pipeline()
            continue
        if c in "()":
            # subshell / grouping: a command boundary
            sc.i += 1
            end_pipeline()
            last_op = c
            continue
        if c in "{}" and sc.peek(2) in ("{ ", "{\t", "{\n", "}", "} ", "};"):
            sc.i += 1
            end_pipeline()
            continue
        red = _redirect_at(s, sc.i)
        if red is not None:
            start, op_text = red
            sc.i = start + len(op_text)
            pending_redirect = op_text
            last_op = ""
            continue
        word = _read_word(sc)
        last_op = ""
        if pending_redirect is not None:
            cmd.redirects.append((pending_redirect, word))
            pending_redirect = None
        else:
            cmd.words.append(word)
    end_pipeline()
    if sc.incomplete or pending_redirect is not None or last_op in ("|", "|&", "&&", "||", "("):
        out.incomplete = True
    if s.endswith("\\") and not s.endswith("\\\\"):
        out.incomplete = True
    return out


def _redirect_at(s: str, i: int) -> tuple[int, str] | None:
    j = i
    while j < len(s) and s[j].isdigit() and j - i < 3:
        j += 1
    if j > i and (j >= len(s) or s[j] not in "<>"):
        return None
    for op in _REDIRECTS:
        if s.startswith(op, j):
            if op in ("<", ">") and s.startswith("(", j + 1):
                return None  # process substitution
            return i, s[i : j + len(op)]
    return None


def _read_word(sc: _Scanner) -> Word:
    s = sc.s
    parts: list[str] = []
    subs: list[str] = []
    quoted = False
    while not sc.at_end():
        c = s[sc.i]
        if c in " \t\r\n;&|()":
            break
        if c in "<>":
            if sc.peek(2) in ("<(", ">("):
                sc.i += 2
                subs.append(sc.skip_balanced("(", ")"))
                continue
            break
        if c == "\\":
            if sc.i + 1 < len(s):
                if s[sc.i + 1] != "\n":
                    parts.append(s[sc.i + 1])
                sc.i += 2
            else:
                sc.i += 1
                sc.incomplete = True
            continue
        if c == "'":
            quoted = True
            end = s.find("'", sc.i + 1)
            if end < 0:
                parts.append(s[sc.i + 1 :])
                sc.i = len(s)
                sc.incomplete = True
                break
            parts.append(s[sc.i + 1 : end])
            sc.i = end + 1
            continue
        if c == '"':
            quoted = True
            sc.i += 1
            parts.append(_read_double(sc, subs))
            continue
        if c == "`":
            end = s.find("`", sc.i + 1)
            if end < 0:
                subs.append(s[sc.i + 1 :])
                sc.i = len(s)
                sc.incomplete = True
                break
            subs.append(s[sc.i + 1 : end])
            parts.append("$(...)")
            sc.i = end + 1
            continue
        if c == "$" and sc.peek(2) == "$(":
            sc.i += 2
            subs.append(sc.skip_balanced("(", ")"))
            parts.append("$(...)")
            continue
        if c == "$" and sc.peek(2) == "${":
            sc.i += 2
            parts.append("${" + sc.skip_balanced("{", "}") + "}")
            continue
        parts.append(c)
        sc.i += 1
    return Word("".join(parts), subs, quoted)


def _read_double(sc: _Scanner, subs: list[str]) -> str:
    s = sc.s
    parts: list[str] = []
    while sc.i < len(s):
        c = s[sc.i]
        if c == "\\" and sc.i + 1 < len(s):
            nxt = s[sc.i + 1]
            if nxt in '"\\$`':
                parts.append(nxt)
            elif nxt != "\n":
                parts.append(c + nxt)
            sc.i += 2
            continue
        if c == '"':
            sc.i += 1
            return "".join(parts)
        if c == "$" and sc.peek(2) == "$(":
            sc.i += 2
            subs.append(sc.skip_balanced("(", ")"))
            parts.append("$(...)")
            continue
        if c == "`":
            end = s.find("`", sc.i + 1)
            if end < 0:
                sc.i = len(s)
                break
            subs.append(s[sc.i + 1 : end])
            parts.append("$(...)")
            sc.i = end + 1
            continue
        parts.append(c)
        sc.i += 1
    sc.incomplete = True
    return "".join(parts)
