"""Shell command risk scoring (sans-IO, never raises).

``ShellRisk.assess(text)`` parses a command line (see ``shparse``), looks
through wrappers (``sudo``, ``env``, ``nohup``, ``timeout``, ``xargs``...),
into ``sh -c``/``bash -c``/``su -c``/``eval`` strings and command
substitutions, across pipelines and ``;``/``&&``/``||`` lists, and returns an
``Assessment`` with categories:

============== ===== =====================================================
category       score what
============== ===== =====================================================
rm_rf          75    ``rm`` recursive and forced, ``find -delete``
               100   ...aimed at ``/``, ``/*``, ``~``, or a top-level dir
mkfs           100   ``mkfs*``, ``mke2fs``, ``mkswap``, ``wipefs``
dd_device      100   ``dd of=/dev/<disk>``, ``> /dev/<disk>``, ``shred /dev/...``
shutdown       75    ``shutdown``, ``reboot``, ``halt``, ``poweroff``,
                     ``init 0|6``, ``systemctl reboot|poweroff|halt|kexec``
firewall_flush 75    ``iptables -F/-X``, ``nft flush|delete``, ``ufw disable|reset``
history_tamper 75    ``history -c``, ``unset HISTFILE``, ``HISTFILE=/dev/null``,
                     ``set +o history``, truncating or deleting ``*_history``
decode_to_shell 75   a decoder (``base64 -d``, ``xxd -r``...) piped or
                     substituted into a shell or interpreter
download_to_shell 75 ``curl``/``wget`` piped or substituted into a shell
line_editor    75    ``bind`` key bindings, ``stty`` settings, ``set -o vi``,
                     ``.inputrc``: keys then do what the gateway's line
                     tracker cannot follow (a key that runs the line, a macro)
unparseable    0     an open quote or trailing operator (see ``risk.unparseable``)
============== ===== =====================================================

Per-connection rules (``risk.rules``) add verdicts: ``match`` names one of
these categories, ``pattern`` is an RE2 pattern searched in the text.
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import re2

from hoopd.config import RiskSection
from hoopd.model import Verdict
from hoopd.policy import Assessment

from .shparse import Parsed, SimpleCommand, Word, parse

SCORES = {
    "rm_rf": 75,
    "mkfs": 100,
    "dd_device": 100,
    "shutdown": 75,
    "firewall_flush": 75,
    "history_tamper": 75,
    "decode_to_shell": 75,
    "download_to_shell": 75,
    "line_editor": 75,
    "unparseable": 0,
}
CATEGORIES = frozenset(SCORES)

MAX_DEPTH = 6

SHELLS = frozenset({"sh", "bash", "dash", "zsh", "ksh", "ash", "mksh", "fish", "busybox"})
INTERPRETERS = frozenset(
    {"python", "python2", "python3", "perl", "ruby", "node", "php", "lua", "tclsh"}
)
DOWNLOADERS = frozenset({"curl", "wget", "fetch", "aria2c", "lwp-download", "http", "https"})
SAFE_DEVICES = ("/dev/null", "/dev/zero", "/dev/stdout", "/dev/stderr", "/dev/tty",
                "/dev/random", "/dev/urandom", "/dev/fd/", "/dev/pts/", "/dev/shm/")
TOP_LEVEL = frozenset({"/", "/*", "~", "~/", "~/*", "$HOME", "${HOME}", "/.", "*", ".", ".."})
_SUDO_ARG_OPTS = frozenset("ughCDprtUT")
_WRAPPERS = frozenset(
    {"nohup", "time", "command", "builtin", "exec", "setsid", "unbuffer", "nice", "ionice",
     "timeout", "stdbuf", "chrt", "taskset", "xargs", "doas", "sudo", "env", "chroot",
     "watch", "flock", "runuser", "systemd-run", "strace", "ltrace", "then", "do", "else",
     "if", "while", "until", "!"}
)


@dataclass
class _Found:
    categories: set[str] = field(default_factory=set)
    reasons: list[str] = field(default_factory=list)
    score: int = 0
    variables: dict[str, str] = field(default_factory=dict)
    """Values the line gives variables (``r=rm; $r -rf x``)."""

    def add(self, category: str, reason: str, score: int | None = None) -> None:
        self.categories.add(category)
        if reason not in self.reasons:
            self.reasons.append(reason)
        self.score = max(self.score, SCORES[category] if score is None else score)


def _base(word: str) -> str:
    return posixpath.basename(word) if word else word


def _is_assignment(word: str) -> bool:
    name, eq, _ = word.partition("=")
    return bool(eq) and name.replace("_", "a").isalnum() and not name[:1].isdigit()


def _is_device(path: str) -> bool:
    return path.startswith("/dev/") and not path.startswith(SAFE_DEVICES)


def _is_history_file(path: str) -> bool:
    name = _base(path.rstrip("/"))
    return name.endswith("_history") or name in ("$HISTFILE", "${HISTFILE}")


class ShellRisk:
    """Scores shell command lines; ``rules`` come from the connection's ``risk`` section."""

    def __init__(self, risk: RiskSection | None = None) -> None:
        self.risk = risk
        self._patterns: list[tuple[str, object, Verdict]] = []
        self._matches: list[tuple[str, str, Verdict]] = []
        for rule in risk.rules if risk else ():
            if rule.pattern is not None:
                try:
                    compiled = re2.compile(rule.pattern)
                except Exception:  # validated at config time; be safe
                    continue
                self._patterns.append((rule.rule_id, compiled, rule.action))
            elif rule.match is not None:
                self._matches.append((rule.rule_id, rule.match, rule.action))

    # -- public ------------------------------------------------------------
    def assess(self, text: str, *, incomplete_is_unparseable: bool = True) -> Assessment:
        try:
            found = _Found()
            parsed = parse(text)
            self._walk(parsed, found, 0)
            if parsed.incomplete and incomplete_is_unparseable:
                found.add("unparseable", "the command line could not be parsed completely")
        except Exception as exc:  # pragma: no cover - the parser is total; belt and braces
            found = _Found()
            found.add("unparseable", f"parser error: {type(exc).__name__}")
        return self._assessment(text, found)

    def rules_only(self, text: str) -> Assessment:
        """Only the connection's ``pattern`` rules, for operations that are not
        shell commands (``direct-tcpip HOST:PORT`` tunnels)."""
        return self._assessment(text, _Found())

    def assess_loose(self, texts: Iterable[str], *, max_starts: int = 64) -> Assessment:
        """For text the gateway is not sure of (a terminal line edited with
        cursor keys, recalled from history, completed with Tab): the riskiest
        reading of any command that starts at any word of ``texts``. Errs on
        the side of holding: ``grep 'rm -rf' log`` scores like ``rm -rf``."""
        best: Assessment | None = None
        merged: set[str] = set()
        reasons: list[str] = []
        verdicts: dict[str, Verdict] = {}
        for text in texts:
            text = text[:4096]
            starts = [0] + [i + 1 for i, c in enumerate(text) if c in " \t;|&(`$'\"" and i + 1 < len(text)]
            for start in starts[:max_starts]:
                found = self.assess(text[start:], incomplete_is_unparseable=False)
                merged |= found.categories
                reasons += [r for r in found.reasons if r not in reasons]
                verdicts.update(found.rule_verdicts)
                if best is None or found.score > best.score:
                    best = found
        score = best.score if best is not None else 0
        return Assessment(score, frozenset(merged), tuple(reasons), verdicts)

    def assess_recalled(
        self, text: str, recent: Iterable[str],
        why: str = "history expansion: the line that runs comes from the shell's history",
    ) -> Assessment:
        """A terminal line that recalls earlier ones (history expansion such
        as ``!!``, ``!:1*``, ``^old^new``): what runs comes from the shell's
        history, which the gateway does not see (it reaches back into earlier
        sessions), so it counts as ``unparseable`` (``risk.unparseable``,
        review by default); the lines seen lately are judged loosely too."""
        loose = self.assess_loose([text, *recent])
        found = _Found(set(loose.categories), list(loose.reasons), loose.score)
        found.add("unparseable", why)
        own = self._assessment(text, found)
        return Assessment(own.score, own.categories, own.reasons, {**loose.rule_verdicts, **own.rule_verdicts})

    def _assessment(self, text: str, found: _Found) -> Assessment:
        verdicts: dict[str, Verdict] = {}
        for rule_id, category, action in self._matches:
            if category in found.categories:
                verdicts[rule_id] = action
        for rule_id, compiled, action in self._patterns:
            try:
                if compiled.search(text):  # type: ignore[attr-defined]
                    verdicts[rule_id] = action
                    found.reasons.append(f"matches rule {rule_id}")
            except Exception:
                continue
        unparseable = (self.risk or RiskSection()).unparseable  # no risk section: the default, review
        if "unparseable" in found.categories and unparseable != "allow":
            verdicts.setdefault("unparseable", Verdict(unparseable))
        return Assessment(
            score=found.score,
            categories=frozenset(found.categories),
            reasons=tuple(found.reasons),
            rule_verdicts=verdicts,
        )

    # -- walking -----------------------------------------------------------
    def _walk(self, parsed: Parsed, found: _Found, depth: int) -> None:
        if depth > MAX_DEPTH:
            found.add("unparseable", "commands nested too deeply")
            return
        for pipeline in parsed.pipelines:
            stages = [self._effective(cmd, found, depth) for cmd in pipeline]
            decoder_before = download_before = False
            literal_before: str | None = None
            for argv, cmd in stages:
                for w in cmd.words:
                    for sub in w.substitutions:
                        self._walk(parse(sub), found, depth + 1)
                for _, target in cmd.redirects:
                    for sub in target.substitutions:
                        self._walk(parse(sub), found, depth + 1)
                if not argv:
                    literal_before = None
                    continue
                name = _base(argv[0])
                if (decoder_before or download_before) and _reads_stdin_as_code(name, argv):
                    if decoder_before:
                        found.add("decode_to_shell", f"decoded data is run by {name}")
                    if download_before:
                        found.add("download_to_shell", f"downloaded data is run by {name}")
                if _is_decoder(name, argv):
                    decoder_before = True
                if name in DOWNLOADERS:
                    download_before = True
                if _runs_code(name):
                    self._substituted_code(name, cmd, found)
                if name in SHELLS and _reads_stdin_as_code(name, argv):
                    # the script is in the command line: sh <<< 'rm -rf x',
                    # echo 'rm -rf x' | sh
                    for op, target in cmd.redirects:
                        if op == "<<<":
                            self._walk(parse(target.text), found, depth + 1)
                    if literal_before is not None:
                        self._walk(parse(literal_before), found, depth + 1)
                literal_before = _literal_output(name, argv)

    def _substituted_code(self, name: str, cmd: SimpleCommand, found: _Found) -> None:
        """``sh -c "$(curl ...)"``, ``bash <(curl ...)``, ``eval "$(... | base64 -d)"``."""
        for w in cmd.words[1:]:
            for sub in w.substitutions:
                for stage in parse(sub).commands():
                    argv = stage.argv
                    while argv and (_is_assignment(argv[0]) or argv[0] in _WRAPPERS):
                        argv = argv[1:]
                    if not argv:
                        continue
                    inner = _base(argv[0])
                    if inner in DOWNLOADERS:
                        found.add("download_to_shell", f"downloaded data is run by {name}")
                    if _is_decoder(inner, argv):
                        found.add("decode_to_shell", f"decoded data is run by {name}")

    def _effective(
        self, cmd: SimpleCommand, found: _Found, depth: int
    ) -> tuple[list[str], SimpleCommand]:
        """Strip assignments and wrappers; judge the command and its redirects.
        Returns the argv that actually runs."""
        words = _expand_words(_substitute(cmd.words, found.variables))
        self._redirects(cmd, found)
        argv = [w.text for w in words]
        guard = 0
        while argv and guard < 32:
            guard += 1
            head = argv[0]
            if _is_assignment(head):
                self._assignment(head, found)
                argv, words = argv[1:], words[1:]
                continue
            name = _base(head)
            if name == "sudo" or name == "doas":
                argv, words = _skip_sudo(argv, words)
                continue
            if name == "env":
                argv, words = _skip_env(argv, words, self, found)
                continue
            if name in ("su", "runuser"):
                script = _option_value(argv, ("-c", "--command"))
                if script is None:
                    script = next((a[2:] for a in argv[1:] if a.startswith("-c") and len(a) > 2), None)
                if script is not None:
                    self._walk(parse(script), found, depth + 1)
                    return [], cmd
                if name == "runuser" and "--" in argv:  # runuser -u USER -- COMMAND...
                    k = argv.index("--") + 1
                    argv, words = argv[k:], words[k:]
                    continue
                return [], cmd
            if name in ("pkexec", "nsenter", "unshare", "setpriv", "eatmydata", "torsocks", "firejail",
                        "proxychains", "proxychains4", "faketime", "sg", "script"):
                string = _option_value(argv, ("-c", "--command")) if name in ("sg", "script") else None
                if string is not None:
                    self._walk(parse(string), found, depth + 1)
                    return [], cmd
                takes = {"pkexec": "u", "nsenter": "tSG", "setpriv": "", "faketime": "f"}.get(name, "")
                argv, words = _skip_options(argv[1:], words[1:], takes_arg=takes, long_args=("--user",))
                if name in ("faketime", "sg") and argv:
                    argv, words = argv[1:], words[1:]  # the time, the group
                continue
            if name in ("timeout",):
                argv, words = _skip_options(argv[1:], words[1:], takes_arg="sk")
                argv, words = argv[1:], words[1:]  # the duration
                continue
            if name in ("nice", "ionice", "stdbuf", "chrt", "taskset", "flock", "watch",
                        "xargs", "chroot", "systemd-run", "strace", "ltrace"):
                takes = {"nice": "n", "ionice": "cnp", "stdbuf": "ioe", "xargs": "dEILnPsa",
                         "watch": "nd", "strace": "eoOpsSuE", "ltrace": "eoOpsSuE",
                         "systemd-run": "pu"}.get(name, "")
                argv, words = _skip_options(argv[1:], words[1:], takes_arg=takes)
                if name in ("chrt", "taskset", "flock", "chroot") and argv:
                    argv, words = argv[1:], words[1:]
                if name == "watch" and argv:
                    self._walk(parse(" ".join(argv)), found, depth + 1)
                    return [], cmd
                continue
            if name in ("exec", "command", "time", "setsid", "coproc"):
                # exec -a NAME, command -p, time -p, setsid -f
                argv, words = _skip_options(argv[1:], words[1:], takes_arg="a" if name == "exec" else "")
                continue
            if name == "busybox" and len(argv) > 1 and _base(argv[1]) not in SHELLS:
                argv, words = argv[1:], words[1:]  # busybox rm -rf x: the applet runs
                continue
            if name in _WRAPPERS:
                argv, words = argv[1:], words[1:]
                continue
            break
        if not argv:
            return [], cmd
        name = _base(argv[0])
        if name in SHELLS:
            script = _shell_script(argv)
            if script is not None:
                self._walk(parse(script), found, depth + 1)
        elif name == "eval":
            self._walk(parse(" ".join(argv[1:])), found, depth + 1)
        else:
            self._judge(name, argv, found, depth)
        return argv, SimpleCommand(words, cmd.redirects)

    def _assignment(self, word: str, found: _Found) -> None:
        name, _, value = word.partition("=")
        if len(found.variables) < 256:
            found.variables[name] = value[:4096]
        if name == "INPUTRC":
            found.add("line_editor", "INPUTRC: another readline configuration")
        if name == "HISTFILE" and value in ("/dev/null", ""):
            found.add("history_tamper", "shell history redirected to /dev/null")
        elif name in ("HISTSIZE", "HISTFILESIZE", "SAVEHIST") and value in ("0", ""):
            found.add("history_tamper", f"{name} set to 0")

    def _redirects(self, cmd: SimpleCommand, found: _Found) -> None:
        for op, target in cmd.redirects:
            path = target.text
            if op in (">", ">|", "&>", ">>", "&>>", "<>") and _is_device(path):
                found.add("dd_device", f"writes to device {path}")
            if op in (">", ">|", "&>") and _is_history_file(path):
                found.add("history_tamper", f"truncates {path}")
            if op in (">", ">|", "&>", ">>", "&>>") and "inputrc" in _base(path):
                found.add("line_editor", f"writes {path} (readline key bindings)")

    def _judge(self, name: str, argv: list[str], found: _Found, depth: int) -> None:
        args = argv[1:]
        _line_editor(name, args, found)
        if name == "rm":
            short = "".join(a[1:] for a in args if a.startswith("-") and not a.startswith("--"))
            longs = {a for a in args if a.startswith("--")}
            recursive = "r" in short or "R" in short or "--recursive" in longs
            force = "f" in short or "--force" in longs or "--interactive=never" in longs
            targets = [a for a in args if not a.startswith("-")]
            if any(_is_history_file(t) for t in targets):
                found.add("history_tamper", "deletes a shell history file")
            if recursive and force:
                critical = [t for t in targets if _top_level(t)]
                if critical or "--no-preserve-root" in longs:
                    found.add("rm_rf", f"rm -rf on {' '.join(critical) or '/'}", 100)
                else:
                    found.add("rm_rf", "rm -rf (recursive forced delete)")
        elif name == "find" and ("-delete" in args or _find_exec_rm(args)):
            found.add("rm_rf", "find deletes what it finds")
        elif name == "find":
            for command in _find_exec_commands(args):  # find -exec sh -c '...' {} +
                self._walk(Parsed([[SimpleCommand([Word(a) for a in command])]]), found, depth + 1)
        elif name == "tar":
            for a in args:  # tar --to-command=..., -I PROG, --checkpoint-action=exec=...
                for opt in ("--to-command=", "--use-compress-program=", "--checkpoint-action=exec=",
                            "--info-script=", "--new-volume-script="):
                    if a.startswith(opt):
                        self._walk(parse(a[len(opt):]), found, depth + 1)
            for i, a in enumerate(args[:-1]):
                if a in ("-I", "--to-command", "--use-compress-program", "-F", "--info-script"):
                    self._walk(parse(args[i + 1]), found, depth + 1)
        elif name.startswith("mkfs") or name in ("mke2fs", "mkswap", "wipefs", "mkdosfs"):
            found.add("mkfs", f"{name} destroys a file system")
        elif name == "dd":
            for a in args:
                if a.startswith("of=") and _is_device(a[3:]):
                    found.add("dd_device", f"dd writes to device {a[3:]}")
        elif name in ("shred", "blkdiscard", "sgdisk", "fdisk", "parted", "sfdisk"):
            devices = [a for a in args if _is_device(a)]
            if name == "shred" and any(_is_history_file(a) for a in args):
                found.add("history_tamper", "shreds a shell history file")
            if devices and (name in ("shred", "blkdiscard") or _writes_table(name, args)):
                found.add("dd_device", f"{name} overwrites {' '.join(devices)}")
        elif name in ("shutdown", "reboot", "halt", "poweroff"):
            found.add("shutdown", f"{name} stops the machine")
        elif name in ("init", "telinit") and args[:1] in (["0"], ["6"]):
            found.add("shutdown", f"{name} {args[0]} stops the machine")
        elif name == "systemctl":
            verbs = {"reboot", "poweroff", "halt", "kexec", "rescue", "emergency", "soft-reboot"}
            hit = verbs.intersection(a for a in args if not a.startswith("-"))
            if hit:
                found.add("shutdown", f"systemctl {sorted(hit)[0]}")
        elif name in ("iptables", "ip6tables", "iptables-legacy", "iptables-nft",
                      "ip6tables-legacy", "ip6tables-nft", "ebtables", "arptables"):
            flags = set(args)
            short = "".join(a[1:] for a in args if a.startswith("-") and not a.startswith("--"))
            if flags & {"--flush", "--delete-chain"} or "F" in short or "X" in short:
                found.add("firewall_flush", f"{name} flushes firewall rules")
        elif name == "nft":
            words = [a for a in args if not a.startswith("-")]
            if words[:1] in (["flush"], ["delete"]):
                found.add("firewall_flush", f"nft {' '.join(words[:2])}")
        elif name == "ufw" and [a for a in args if not a.startswith("-")][:1] in (["disable"], ["reset"]):
            found.add("firewall_flush", "ufw disables the firewall")
        elif name == "history":
            short = "".join(a[1:] for a in args if a.startswith("-"))
            if "c" in short or "d" in short:
                found.add("history_tamper", "history cleared")
        elif name == "unset":
            if any(a in ("HISTFILE", "HISTSIZE", "HISTFILESIZE") for a in args):
                found.add("history_tamper", "history variables unset")
        elif name in ("export", "declare", "typeset", "local", "readonly"):
            for a in args:
                if _is_assignment(a):
                    self._assignment(a, found)
        elif name == "set":
            if "+o" in args and "history" in args:
                found.add("history_tamper", "set +o history")
        elif name == "fc" and not any(a.startswith("-") and "l" in a for a in args):
            found.add("unparseable", "fc runs a line from the shell's history")
        elif name == "trap":
            code = [a for a in args if a == "-" or not a.startswith("-")][:1]
            if code and code[0] != "-":
                self._walk(parse(code[0]), found, depth + 1)  # runs on the signal / exit
        elif name == "alias":
            for a in args:
                _, eq, value = a.partition("=")
                if eq:
                    self._walk(parse(value), found, depth + 1)  # runs when the alias is used
        elif name in ("ssh", "slogin"):
            remote = _ssh_command(args)
            if remote:
                self._walk(parse(remote), found, depth + 1)  # runs on the other host
        elif name in ("truncate", "ln", "cp", "mv") and any(_is_history_file(a) for a in args[1:]):
            found.add("history_tamper", f"{name} on a shell history file")


_BIND_QUERIES = frozenset({"-l", "-p", "-P", "-v", "-V", "-s", "-S", "-X"})
_STTY_QUERIES = frozenset({"-a", "--all", "-g", "--save", "size", "speed", "sane"})
_READS_ONLY = frozenset({"cat", "less", "more", "head", "tail", "grep", "view", "ls", "stat",
                         "file", "diff", "wc", "md5sum", "sha256sum", "echo"})


FULL_SCREEN = frozenset(
    {"vi", "vim", "nvim", "view", "vimdiff", "rvim", "gvim", "nano", "pico", "emacs", "mg", "joe",
     "micro", "ne", "jed", "less", "more", "most", "pager", "man", "info", "top", "htop", "atop", "btop",
     "iotop", "iftop", "nload", "nethogs", "glances", "watch", "tmux", "screen", "byobu", "mc", "ranger",
     "nnn", "lf", "tig", "lazygit", "mutt", "neomutt", "alpine", "lynx", "w3m", "links", "elinks", "ncdu",
     "nmtui", "dialog", "whiptail", "vimtutor", "editor", "sensible-editor", "sensible-pager", "visudo",
     "vipw", "vigr", "sudoedit", "crontab", "systemctl", "journalctl", "git", "psql", "mysql", "fzf",
     "k9s", "ctop", "bat", "perf", "gdb", "cgdb", "iptraf-ng", "bmon", "cmus", "irssi", "weechat"}
)


def runs_full_screen(text: str) -> bool:
    """Does the line end by starting a program that may take the terminal's
    alternate screen (an editor, a pager, top...)? Its keys are not shell
    lines; other output that switches screens does not stop the tracking."""
    cmds = parse(text).commands()
    if not cmds:
        return False
    argv = cmds[-1].argv
    while argv and (_is_assignment(argv[0]) or argv[0] in _WRAPPERS):
        if _base(argv[0]) in ("sudo", "doas"):
            argv = _skip_sudo(argv, [Word(a) for a in argv])[0]
            continue
        argv = argv[1:]
    return bool(argv) and _base(argv[0]) in FULL_SCREEN


def _line_editor(name: str, args: list[str], found: _Found) -> None:
    """Commands that change what keys do in the terminal (readline's key
    bindings and mode, the tty's special characters): the gateway's line
    tracker models the defaults, so after them a key may run a line (``bind
    '"z": accept-line'``), type one (a macro), or erase differently (``stty
    werase ^U``) without the gateway seeing it."""
    if name == "bind":
        rest = [a for i, a in enumerate(args) if not (i and args[i - 1] in ("-m", "-q"))]
        if any(a not in _BIND_QUERIES and a not in ("-m", "-q") for a in rest):
            found.add("line_editor", "bind changes readline's key bindings")
    elif name == "stty":
        rest = [a for i, a in enumerate(args)
                if not a.startswith(("-F", "--file")) and not (i and args[i - 1] in ("-F", "--file"))]
        if any(a not in _STTY_QUERIES for a in rest):
            found.add("line_editor", "stty changes the terminal's keys or modes")
    elif name == "set" and "vi" in args and any(a in ("-o", "+o") for a in args):
        found.add("line_editor", "set -o vi: vi key bindings")
    elif name not in _READS_ONLY and any("inputrc" in _base(a) for a in args):
        found.add("line_editor", "changes readline's configuration (inputrc)")


_VARIABLE = re2.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$([A-Za-z_][A-Za-z0-9_]*)")


def _substitute(words: list[Word], variables: dict[str, str]) -> list[Word]:
    """Words with the variables the line set earlier put in: ``r=rm; $r -rf
    x`` runs ``rm -rf x``. An unquoted expansion is split at white space."""
    if not variables or not any("$" in w.text for w in words):
        return words
    out: list[Word] = []
    for w in words:
        if "$" not in w.text:
            out.append(w)
            continue

        def value(m: Any) -> str:
            return str(variables.get(m.group(1) or m.group(2), m.group(0)))

        text = _VARIABLE.sub(value, w.text)
        if text == w.text:
            out.append(w)
        elif w.quoted:
            out.append(Word(text, w.substitutions, True))
        else:
            pieces = text.split() or [""]
            out += [Word(p, w.substitutions if k == 0 else []) for k, p in enumerate(pieces)]
    return out


def _expand_words(words: list[Word]) -> list[Word]:
    """The words as brace expansion makes them: ``{rm,-rf,x}`` is ``rm -rf x``."""
    out: list[Word] = []
    for w in words:
        text = w.text
        if (
            not w.quoted and len(text) > 2 and text[0] == "{" and text[-1] == "}"
            and "," in text and "{" not in text[1:-1] and "}" not in text[1:-1]
        ):
            out += [Word(p, w.substitutions if k == 0 else []) for k, p in enumerate(text[1:-1].split(","))]
            continue
        out.append(w)
    return out


def _literal_output(name: str, argv: list[str]) -> str | None:
    """What ``echo``/``printf`` with literal arguments write (roughly)."""
    args = argv[1:]
    if name == "echo":
        while args and args[0].startswith("-") and set(args[0][1:]) <= set("neE"):
            args = args[1:]
        return " ".join(args)
    if name == "printf":
        return " ".join(a for a in args if a != "--")
    return None


_SSH_ARG_OPTS = "BbcDEeFIiJLlmOoPpQRSWw"


def _ssh_command(args: list[str]) -> str:
    """The remote command of ``ssh [options] host command...``."""
    return " ".join(args[_options_end(args, _SSH_ARG_OPTS) + 1 :])


def _top_level(path: str) -> bool:
    p = path.rstrip("/") or "/"
    if path in TOP_LEVEL or p in TOP_LEVEL:
        return True
    if p.startswith("/") and p.count("/") == 1:  # /etc, /usr, /home ...
        return True
    return p.endswith("/*") and p[:-2].count("/") <= 1


def _find_exec_commands(args: list[str]) -> list[list[str]]:
    """The commands of ``find ... -exec CMD ARGS... ;`` (or ``+``)."""
    out: list[list[str]] = []
    i = 0
    while i < len(args):
        if args[i] in ("-exec", "-execdir", "-ok", "-okdir"):
            j = i + 1
            while j < len(args) and args[j] not in (";", "+"):
                j += 1
            out.append(args[i + 1 : j])
            i = j
        i += 1
    return out


def _find_exec_rm(args: list[str]) -> bool:
    for i, a in enumerate(args):
        if a in ("-exec", "-execdir", "-ok") and i + 1 < len(args) and _base(args[i + 1]) == "rm":
            return True
    return False


def _writes_table(name: str, args: list[str]) -> bool:
    if name == "sgdisk":
        return any(a.startswith(("-Z", "--zap", "-o", "--clear")) for a in args)
    if name == "parted":
        return any(a in ("mklabel", "rm", "mkpart") for a in args)
    return name == "sfdisk"


def _is_decoder(name: str, argv: list[str]) -> bool:
    args = argv[1:]
    if name in ("base64", "base32", "basenc", "gbase64"):
        return any(a in ("-d", "--decode", "-D") or (a.startswith("-") and "d" in a[1:] and not a.startswith("--")) for a in args)
    if name == "xxd":
        return any(a.startswith("-r") or a == "-revert" for a in args)
    if name == "openssl":
        return bool(args) and args[0] in ("base64", "enc") and "-d" in args
    if name in ("uudecode", "gunzip", "zcat", "bunzip2", "xz", "unxz", "rev"):
        return name != "xz" or "-d" in args
    if name == "printf":
        return any("\\x" in a or "\\0" in a for a in args)
    if name == "echo":
        return any(a.startswith("-") and "e" in a for a in args) and any("\\x" in a for a in args)
    return name == "tr"  # rot13 and friends


def _runs_code(name: str) -> bool:
    return name in SHELLS or name in INTERPRETERS or name in ("eval", "source", ".")


def _reads_stdin_as_code(name: str, argv: list[str]) -> bool:
    args = argv[1:]
    if name in SHELLS:
        return _shell_script(argv) is None and (
            not [a for a in args if not a.startswith("-")] or "-s" in args
        )
    if name in INTERPRETERS:
        positional = [a for a in args if not a.startswith("-") or a == "-"]
        return not positional or positional[0] == "-"
    if name in ("source", "."):
        return any(a in ("/dev/stdin", "-") for a in args)
    return name == "xargs"


def _shell_script(argv: list[str]) -> str | None:
    """The string of ``sh -c STRING`` (flags may be combined: ``-lc``)."""
    args = argv[1:]
    if argv and _base(argv[0]) == "busybox":
        args = args[1:]
    for i, a in enumerate(args):
        if a.startswith("-") and not a.startswith("--") and "c" in a[1:]:
            rest = [x for x in args[i + 1 :]]
            return rest[0] if rest else ""
        if not a.startswith(("-", "+")):
            return None
    return None


def _option_value(argv: list[str], names: Iterable[str]) -> str | None:
    names = tuple(names)
    for i, a in enumerate(argv[1:], 1):
        if a in names and i + 1 < len(argv):
            return argv[i + 1]
        for n in names:
            if n.startswith("--") and a.startswith(n + "="):
                return a[len(n) + 1 :]
    return None


def _skip_options(
    argv: list[str], words: list[Word], takes_arg: str = "", long_args: tuple[str, ...] = ()
) -> tuple[list[str], list[Word]]:
    i = _options_end(argv, takes_arg, long_args)
    return argv[i:], words[i:]


def _options_end(argv: list[str], takes_arg: str = "", long_args: tuple[str, ...] = ()) -> int:
    """Index of the first operand: options (``takes_arg``: the letters of
    short options, ``long_args``: the long options that take the next
    word) and a ``--`` skipped."""
    i = 0
    while i < len(argv):
        a = argv[i]
        if a == "--":
            return i + 1
        if not a.startswith("-") or a == "-":
            break
        if a in long_args or (not a.startswith("--") and len(a) == 2 and a[1] in takes_arg):
            i += 2
            continue
        i += 1
    return i


def _skip_sudo(argv: list[str], words: list[Word]) -> tuple[list[str], list[Word]]:
    i = 1
    while i < len(argv):
        a = argv[i]
        if a == "--":
            i += 1
            break
        if not a.startswith("-"):
            break
        if not a.startswith("--") and len(a) >= 2:
            # -u root, -Eu root: the option that takes a value is the last
            # letter; -uroot carries its value
            at = next((k for k, ch in enumerate(a[1:], 1) if ch in _SUDO_ARG_OPTS), None)
            i += 2 if at == len(a) - 1 else 1
            continue
        i += 1
    return argv[i:], words[i:]


def _skip_env(
    argv: list[str], words: list[Word], scorer: ShellRisk, found: _Found
) -> tuple[list[str], list[Word]]:
    i = 1
    while i < len(argv):
        a = argv[i]
        if a in ("-u", "--unset", "-C", "--chdir", "-S", "--split-string"):
            if a in ("-S", "--split-string") and i + 1 < len(argv):
                rest = argv[i + 1].split() + argv[i + 2 :]
                return rest, [Word(x) for x in rest]
            i += 2
            continue
        if a.startswith("-"):
            i += 1
            continue
        if _is_assignment(a):
            scorer._assignment(a, found)
            i += 1
            continue
        break
    return argv[i:], words[i:]
