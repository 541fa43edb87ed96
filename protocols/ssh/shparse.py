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


MAX_NESTING = 8
"""``${...}`` expansions looked into, one inside another, at most (deeper:
incomplete); each level is read again, so this bounds the work."""


class _Scanner:
    def __init__(self, text: str, depth: int = 0) -> None:
        self.s = text
        self.i = 0
        self.incomplete = False
        self.depth = depth

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
            if c == "'" and self.i > start and s[self.i - 1] == "$":
                self.i += 1
                _read_ansi_c(self)  # $'...' may hold \'
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


def parse(text: str, _depth: int = 0) -> Parsed:
    """Split ``text`` into pipelines. Never raises."""
    out = Parsed()
    if len(text) > MAX_INPUT:
        text = text[:MAX_INPUT]
        out.incomplete = True
    sc = _Scanner(text, _depth)
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
        if not word.text and not word.quoted and not word.substitutions and pending_redirect is None:
            continue  # an unquoted expansion to nothing ($IFS) is no word
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
        ifs = _unquoted_ifs(s, sc.i)
        if ifs:
            # rm${IFS}-rf${IFS}x: the expansion is split into fields (the
            # default IFS is white space), so it ends the word
            sc.i += ifs
            if parts or subs:
                break
            continue
        if c == "$" and sc.peek(2) == "${":
            sc.i += 2
            inner = sc.skip_balanced("{", "}")
            parts.append("${" + inner + "}")
            subs.extend(_nested_substitutions(inner, sc))  # ${x:-$(cmd)}, ${x:-`cmd`}
            continue
        if c == "$" and sc.peek(2) == "$'":
            # ANSI-C quoting: $'rm' is the word rm, $'\x72m' too
            quoted = True
            sc.i += 2
            parts.append(_read_ansi_c(sc))
            continue
        if c == "$" and sc.peek(2) == '$"':
            quoted = True  # $"..." (locale translation): a double-quoted string
            sc.i += 2
            parts.append(_read_double(sc, subs))
            continue
        parts.append(c)
        sc.i += 1
    return Word("".join(parts), subs, quoted)


def _unquoted_ifs(s: str, i: int) -> int:
    """The length of ``$IFS`` or ``${IFS}`` at ``i``, else 0."""
    if s.startswith("${IFS}", i):
        return 6
    if s.startswith("$IFS", i) and not (i + 4 < len(s) and (s[i + 4].isalnum() or s[i + 4] == "_")):
        return 4
    return 0


def _nested_substitutions(text: str, sc: _Scanner) -> list[str]:
    """Command substitutions in the text of a ``${...}`` expansion."""
    if "$(" not in text and "`" not in text and "<(" not in text and ">(" not in text:
        return []
    if sc.depth >= MAX_NESTING:
        sc.incomplete = True
        return []
    found: list[str] = []
    parsed = parse(text, sc.depth + 1)
    if parsed.incomplete:
        sc.incomplete = True
    for cmd in parsed.commands():
        for w in cmd.words:
            found += w.substitutions
        for _, target in cmd.redirects:
            found += target.substitutions
    return found


_ANSI_C = {"a": "\a", "b": "\b", "e": "\x1b", "E": "\x1b", "f": "\f", "n": "\n", "r": "\r",
           "t": "\t", "v": "\v", "\\": "\\", "'": "'", '"': '"', "?": "?"}


def _read_ansi_c(sc: _Scanner) -> str:
    """The text of ``$'...'`` from just after the opening quote, escapes decoded."""
    s = sc.s
    parts: list[str] = []
    while sc.i < len(s):
        c = s[sc.i]
        if c == "'":
            sc.i += 1
            return "".join(parts)
        if c != "\\" or sc.i + 1 >= len(s):
            parts.append(c)
            sc.i += 1
            continue
        nxt = s[sc.i + 1]
        sc.i += 2
        if nxt in _ANSI_C:
            parts.append(_ANSI_C[nxt])
        elif nxt in "xuU":
            digits = {"x": 2, "u": 4, "U": 8}[nxt]
            j = sc.i
            while j < len(s) and j - sc.i < digits and s[j] in "0123456789abcdefABCDEF":
                j += 1
            if j > sc.i:
                parts.append(_chr(int(s[sc.i : j], 16)))
                sc.i = j
            else:
                parts.append("\\" + nxt)
        elif nxt in "01234567":
            j = sc.i - 1
            while j < len(s) and j - (sc.i - 1) < 3 and s[j] in "01234567":
                j += 1
            parts.append(_chr(int(s[sc.i - 1 : j], 8)))
            sc.i = j
        elif nxt == "c" and sc.i < len(s):
            parts.append(_chr(ord(s[sc.i]) & 0x1F))
            sc.i += 1
        else:
            parts.append("\\" + nxt)
    sc.incomplete = True
    return "".join(parts)


def _chr(code: int) -> str:
    try:
        return chr(code)
    except (ValueError, OverflowError):
        return "\ufffd"


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


_NO_EXPANSION_AFTER = " \t\n\r=("


def history_expansion(text: str) -> bool:
    """Would an interactive bash expand history in ``text`` (``!!``,
    ``!rm``, ``!:1*``, ``!?x?``, a leading ``^old^new``)? Then the line that
    runs is made of earlier lines of the shell's history. Approximate, erring
    towards yes (a ``!`` outside single quotes, not escaped, not ``$!`` or
    ``${!``, followed by something other than white space, ``=`` or ``(``)."""
    if text.lstrip(" \t").startswith("^"):
        return True
    quote = ""
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c == "\\":
            i += 2
            continue
        if quote == "'":
            if c == "'":
                quote = ""
        elif c == "'" and not quote:
            quote = "'"
        elif c == '"':
            quote = "" if quote == '"' else '"'
        elif c == "!" and i + 1 < n:
            nxt = text[i + 1]
            before = text[max(i - 2, 0) : i]
            in_dq_end = quote == '"' and nxt == '"'
            if nxt not in _NO_EXPANSION_AFTER and not before.endswith(("$", "${")) and not in_dq_end:
                return True
        i += 1
    return False
