"""Built-in recognizers.

Each recognizer is an RE2 pattern (also valid Python ``re`` syntax, for the
fallback), an optional validator, boundary rules checked in Python (RE2 has no
lookaround) and a bound on the length of a match, which the stream masker uses
to bound how much it holds back.

Groups named ``v``/``v1``/``v2``… mark the *value*: only that part is replaced
(``password=[PASSWORD]``). Without such a group the whole match is replaced.

Patterns never match a newline, except ``pem_private_key``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from . import validators as v

Category = Literal["credential", "personal"]

ALNUM = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789")
WORD = ALNUM | frozenset(b"_")
TOKEN = WORD | frozenset(b"-")
B64 = ALNUM | frozenset(b"+/")
EMPTY: frozenset[int] = frozenset()


@dataclass(frozen=True)
class ScanForm:
    """The pattern the accelerated scan searches for a rule whose pattern starts
    with a bounded repetition of a broad class (``[A-Za-z0-9_.-]{0,64}password``):
    unanchored, such a prefix keeps a thread alive at every start position in a
    run of the class, and RE2's DFA for all rules together explodes on base64,
    hex and other alphanumeric-dense text (0.2-2 MB/s). The scan form starts at
    the rare part instead.

    Promises, relied on by ``masking/_re2scan.cpp`` (and checked by
    tests/masking/test_dense.py against the full pattern): the rule matches
    wherever the scan form matches (at the same start), and every match of the
    rule starts at most ``lookback`` bytes before a match of the scan form, over
    bytes in ``left`` only."""

    pattern: str
    lookback: int
    left: frozenset[int]


@dataclass(frozen=True)
class SideForm:
    """A rule the accelerated scan leaves out of its joined pattern and finds from
    a literal ``anchor`` instead: its scheme or prefix is a bounded repetition
    the joined DFA cannot afford, and no shorter form matches only where the
    rule does. Promises: every match of the rule holds an occurrence of
    ``anchor`` that starts at most ``maxleft`` bytes after the match's start and
    after which the match holds no ``stop`` byte (so a search of the rule that
    ends at a stop byte sees every match whose anchor is before it whole), and
    a later start has a later (or the same) anchor."""

    anchor: bytes
    maxleft: int
    stop: frozenset[int]
    tail: int = -1
    """The most bytes a match holds after its anchor (-1: no bound but ``stop``)."""


@dataclass(frozen=True)
class Recognizer:
    id: str
    category: Category
    label: str
    """Placeholder label: ``[EMAIL]``."""
    pattern: str
    max_len: int
    """No match is longer than this (the stream masker's window)."""
    min_len: int
    """No match is shorter than this."""
    description: str
    validator: v.Validator | None = None
    left: frozenset[int] = EMPTY
    """Bytes that must not precede a match."""
    right: frozenset[int] = EMPTY
    """Bytes that must not follow a match (or the accepted prefix)."""
    dotted: bool = False
    """Also reject a match followed by ``.<digit>`` (IPs inside version strings)."""
    keep_last: int = 0
    """Characters kept by the ``partial`` replacement (cards: 4)."""
    keep_first: int = 0
    needs: tuple[tuple[bytes, ...], ...] = ()
    """Cheap pre-check: for each group, one of its byte strings occurs between the
    start of a candidate and the end of its line (sound: every match contains them)."""
    prefixes: tuple[bytes, ...] = ()
    """Every match starts with one of these (lower-case; compared case-insensitively)."""
    scan: ScanForm | None = None
    side: SideForm | None = None
    examples: tuple[str, ...] = field(default=(), compare=False)


_IPV4 = r"(?:[0-9]{1,3}\.){3}[0-9]{1,3}"

_KV_WORDS = (
    r"(?i:password|passwd|passphrase|secret|token|api[_-]?key|apikey"
    r"|access[_-]?key|private[_-]?key|credential|client[_-]?secret)[A-Za-z0-9_.-]{0,64}|(?i:pwd)"
)
KV_KEYS = r"[A-Za-z0-9_.-]{0,64}" + _KV_WORDS
_KV_CLASS = ALNUM | frozenset(b"_.-")
_KV_REST = (
    r")[\"']?[ \t]*(?::|=|=>|:=)[ \t]*"
    r"(?:\"(?P<v1>[^\"\r\n]+)\"|'(?P<v2>[^'\r\n]+)'|(?P<v3>[^\s\"',;&<>]+))"
    r"|\b(?i:password)[ \t]+'(?P<v4>[^'\r\n]+)'"
)

_EMAIL_LOCAL = r"(?:[A-Za-z0-9._%+-]|[^\x00-\x7F])"
_EMAIL_DOMAIN = (
    r"@(?:[A-Za-z0-9-]|[^\x00-\x7F])+(?:\.(?:[A-Za-z0-9-]|[^\x00-\x7F])+)*\.[A-Za-z]{2,24}"
)
_IPV6_FULL = r"[0-9A-Fa-f]{1,4}(?::[0-9A-Fa-f]{1,4}){7}"
_IPV6_SHORT = r"::[0-9A-Fa-f:.]{0,45}"
_HEX = frozenset(b"0123456789ABCDEFabcdef")

BUILTINS: tuple[Recognizer, ...] = (
    # ---- credentials (on by default) -------------------------------------------------
    Recognizer(
        id="pem_private_key",
        category="credential",
        label="PRIVATE_KEY",
        pattern=(
            r"-----BEGIN [A-Z0-9 ]{0,40}PRIVATE KEY(?: BLOCK)?-----"
            r"(?:[A-Za-z0-9+/=\r\n\t \\]|(?:Proc-Type|DEK-Info|Comment|Version|Hash): [^\r\n]*)*"
            r"(?:-----END [A-Z0-9 ]{0,40}PRIVATE KEY(?: BLOCK)?-----)?"
        ),
        max_len=16384,
        min_len=40,
        description="PEM/OpenSSH/PGP private key blocks (multi-line; a key without its END line is masked up to the end of its base64 body)",
    ),
    Recognizer(
        id="aws_access_key_id",
        category="credential",
        label="AWS_ACCESS_KEY_ID",
        pattern=r"\b(?:AKIA|ASIA|ABIA|ACCA|A3T[A-Z0-9])[A-Z0-9]{16}",
        max_len=20,
        min_len=20,
        left=ALNUM,
        right=ALNUM,
        prefixes=(b"akia", b"asia", b"abia", b"acca", b"a3t"),
        description="AWS access key ids (AKIA…, ASIA…)",
    ),
    Recognizer(
        id="aws_secret_access_key",
        category="credential",
        label="AWS_SECRET_ACCESS_KEY",
        pattern=(
            r"(?i:aws[_ .-]?secret(?:[_ .-]?access)?[_ .-]?key|secret[_ .-]?access[_ .-]?key)"
            r"[\"']?[ \t]{0,8}(?::|=|=>)[ \t]{0,8}[\"']?(?P<v>[A-Za-z0-9/+]{40})"
        ),
        max_len=200,
        min_len=44,
        right=B64,
        needs=((b":", b"="),),
        prefixes=(b"aws", b"secret"),
        description="AWS secret access keys next to their usual key names (aws_secret_access_key=…)",
    ),
    Recognizer(
        id="gcp_api_key",
        category="credential",
        label="GCP_API_KEY",
        pattern=r"\bAIza[0-9A-Za-z_-]{35}",
        max_len=39,
        min_len=39,
        left=TOKEN,
        right=TOKEN,
        prefixes=(b"aiza",),
        description="Google Cloud / Firebase API keys (AIza…)",
    ),
    Recognizer(
        id="gcp_oauth_token",
        category="credential",
        label="GCP_OAUTH_TOKEN",
        pattern=r"\bya29\.[0-9A-Za-z_-]{20,}",
        max_len=2048,
        min_len=25,
        left=TOKEN,
        right=TOKEN,
        prefixes=(b"ya29.",),
        description="Google OAuth2 access tokens (ya29.…)",
    ),
    Recognizer(
        id="azure_storage_key",
        category="credential",
        label="AZURE_KEY",
        pattern=r"(?i:AccountKey|SharedAccessKey|SharedAccessSignature)=(?P<v>[A-Za-z0-9+/%]{20,}={0,2})",
        max_len=512,
        min_len=31,
        right=B64,
        needs=((b"=",),),
        prefixes=(b"accountkey", b"sharedaccess"),
        description="Azure storage account keys and Service Bus/Event Hubs shared access keys in connection strings",
    ),
    Recognizer(
        id="azure_client_secret",
        category="credential",
        label="AZURE_CLIENT_SECRET",
        pattern=r"[A-Za-z0-9_~.-]{3}[0-9]Q~[A-Za-z0-9_~.-]{31,34}",
        side=SideForm(b"Q~", 4, frozenset(range(256)) - (TOKEN | frozenset(b"~.")), 34),
        max_len=40,
        min_len=37,
        left=TOKEN | frozenset(b"~."),
        right=TOKEN | frozenset(b"~."),
        needs=((b"Q~",),),
        description="Azure AD (Entra ID) application client secrets (…Q~…)",
    ),
    Recognizer(
        id="github_token",
        category="credential",
        label="GITHUB_TOKEN",
        pattern=r"\b(?:gh[pousr]_[A-Za-z0-9]{36,251}|github_pat_[A-Za-z0-9_]{22,255})",
        max_len=266,
        min_len=33,
        left=WORD,
        right=WORD,
        prefixes=(b"ghp_", b"gho_", b"ghu_", b"ghs_", b"ghr_", b"github_pat_"),
        description="GitHub tokens (ghp_, gho_, ghu_, ghs_, ghr_, github_pat_)",
    ),
    Recognizer(
        id="gitlab_token",
        category="credential",
        label="GITLAB_TOKEN",
        pattern=(
            r"\b(?:gl(?:pat|dt|rt|ptt|ft|imt|agent|oas|cbt|soat|ffct)-[A-Za-z0-9_-]{20,}"
            r"|GR1348941[A-Za-z0-9_-]{20,})"
        ),
        max_len=256,
        min_len=25,
        left=TOKEN,
        right=TOKEN,
        prefixes=(b"gl", b"gr1348941"),
        description="GitLab tokens (glpat-, gldt-, glrt-, glptt-, runner GR1348941…)",
    ),
    Recognizer(
        id="slack_token",
        category="credential",
        label="SLACK_TOKEN",
        pattern=(
            r"\b(?:xox[abposer]-[A-Za-z0-9-]{10,}|xapp-[0-9]-[A-Za-z0-9-]{10,}"
            r"|https://hooks\.slack\.com/(?:services|workflows|triggers)/[A-Za-z0-9/_-]{20,})"
        ),
        max_len=512,
        min_len=15,
        left=TOKEN,
        right=TOKEN,
        prefixes=(b"xox", b"xapp-", b"https://hooks.slack.com/"),
        description="Slack tokens (xoxb-, xoxp-, xapp-…) and incoming webhook URLs",
    ),
    Recognizer(
        id="jwt",
        category="credential",
        label="JWT",
        pattern=r"\beyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*",
        max_len=16384,
        min_len=15,
        validator=v.jwt,
        left=TOKEN,
        right=TOKEN,
        needs=((b".",),),
        prefixes=(b"eyj",),
        description="JSON Web Tokens (header must decode to JSON with alg/typ)",
    ),
    Recognizer(
        id="http_authorization",
        category="credential",
        label="CREDENTIALS",
        pattern=(
            r"(?i:(?:proxy-)?authorization)[\"']?[ \t]*[:=][ \t]*[\"']?"
            r"(?:(?i:bearer|basic|token|digest|negotiate|ntlm|aws4-hmac-sha256|apikey)[ \t]+)?"
            r"(?P<v>[^\s\"',;]{6,})"
        ),
        max_len=16384,
        min_len=20,
        validator=v.key_value,
        right=EMPTY,
        needs=((b":", b"="),),
        prefixes=(b"authorization", b"proxy-authorization"),
        description="Credentials in Authorization / Proxy-Authorization headers (scheme kept)",
    ),
    Recognizer(
        id="bearer_token",
        category="credential",
        label="BEARER_TOKEN",
        pattern=r"\b(?i:bearer)[ \t]+(?P<v>[A-Za-z0-9._~+/-]{16,}=*)",
        max_len=16384,
        min_len=23,
        validator=v.bearer,
        right=TOKEN | frozenset(b"~+/=."),
        prefixes=(b"bearer",),
        description="Bearer tokens (`Bearer <token>`, 16+ characters, not plain words)",
    ),
    Recognizer(
        id="basic_auth",
        category="credential",
        label="BASIC_CREDENTIALS",
        pattern=r"\b(?i:basic)[ \t]+(?P<v>[A-Za-z0-9+/]{6,}={0,2})",
        max_len=1024,
        min_len=12,
        validator=v.basic_credentials,
        right=B64 | frozenset(b"="),
        prefixes=(b"basic",),
        description="HTTP Basic credentials (`Basic <base64(user:pass)>`, decoded value must hold a colon)",
    ),
    Recognizer(
        id="url_password",
        category="credential",
        label="PASSWORD",
        pattern=r"\b[A-Za-z][A-Za-z0-9+.-]{1,20}://[^\s:/?#@\"'<>]*:(?P<v>[^\s/?#\"'<>]+)@",
        side=SideForm(b"://", 21, frozenset(b"\t\n\f\r /?#\"'<>")),
        max_len=2048,
        min_len=7,
        needs=((b"://",), (b"@",)),
        description="Passwords in URLs and connection strings (postgres://user:PASS@host)",
    ),
    Recognizer(
        id="secret_key_value",
        category="credential",
        label="SECRET",
        pattern=r"(?:" + KV_KEYS + _KV_REST,
        # from the key word: the name's start is found afterwards (at most 64
        # name bytes before it)
        scan=ScanForm(r"(?:" + _KV_WORDS + _KV_REST, 64, _KV_CLASS),
        max_len=4096,
        min_len=4,
        validator=v.key_value,
        left=TOKEN | frozenset(b".["),
        needs=((b"=", b":", b"'"),),
        description='Generic key-values: password=…, secret: …, token=…, api_key=…, "client_secret": "…", PASSWORD \'…\'',
    ),
    # ---- personal data (off unless a connection turns them on) -----------------------
    Recognizer(
        id="email",
        category="personal",
        label="EMAIL",
        pattern=_EMAIL_LOCAL + "{1,64}" + _EMAIL_DOMAIN,
        # from the local part's last character (63 more characters of at most
        # 4 bytes before it)
        scan=ScanForm(
            _EMAIL_LOCAL + _EMAIL_DOMAIN,
            63 * 4,
            ALNUM | frozenset(b"._%+-") | frozenset(range(0x80, 0x100)),
        ),
        max_len=320,
        min_len=6,
        validator=v.email,
        left=ALNUM,
        right=ALNUM,
        keep_first=1,
        needs=((b"@",),),
        description="E-mail addresses",
    ),
    Recognizer(
        id="card",
        category="personal",
        label="CARD",
        # (the first digit as the validator wants it: a digit run that
        # starts with 0, 1 or 7-9 makes no candidate to refuse one by one)
        pattern=r"\b[2-6](?:[ -]?[0-9]){12,18}",
        max_len=37,
        min_len=13,
        validator=v.card,
        left=ALNUM | frozenset(b"-."),
        right=ALNUM,
        keep_last=4,
        description="Payment card numbers (13-19 digits, IIN 2-6, Luhn)",
    ),
    Recognizer(
        id="ssn",
        category="personal",
        label="SSN",
        pattern=r"\b[0-9]{3}[- ][0-9]{2}[- ][0-9]{4}",
        max_len=11,
        min_len=11,
        validator=v.ssn,
        left=ALNUM | frozenset(b"-"),
        right=ALNUM | frozenset(b"-"),
        keep_last=4,
        needs=((b"-", b" "),),
        description="US Social Security numbers (123-45-6789; area/group/serial rules)",
    ),
    Recognizer(
        id="iban",
        category="personal",
        label="IBAN",
        pattern=r"\b[A-Z]{2}[0-9]{2}(?: ?[A-Z0-9]){11,30}",
        max_len=64,
        min_len=15,
        validator=v.iban,
        left=ALNUM,
        right=ALNUM,
        keep_first=2,
        keep_last=4,
        description="International bank account numbers (mod-97 checksum)",
    ),
    Recognizer(
        id="phone",
        category="personal",
        label="PHONE",
        pattern=(
            r"\+[1-9](?:[ .-]?[0-9]){6,14}"
            r"|(?:\b1[ .-]?)?(?:\([2-9][0-9]{2}\)[ .-]?|\b[2-9][0-9]{2}[ .-])[2-9][0-9]{2}[ .-][0-9]{4}"
        ),
        max_len=32,
        min_len=8,
        validator=v.phone,
        left=ALNUM | frozenset(b"+"),
        right=ALNUM,
        dotted=True,
        keep_last=4,
        description="Phone numbers: E.164 (+14155552671, +44 20 7946 0958) and North American (415-555-2671, (415) 555-2671)",
    ),
    Recognizer(
        id="ipv4",
        category="personal",
        label="IP",
        pattern=r"\b" + _IPV4,
        max_len=15,
        min_len=7,
        validator=v.ipv4,
        left=ALNUM | frozenset(b"."),
        right=ALNUM,
        dotted=True,
        needs=((b".",),),
        description="IPv4 addresses (octets 0-255, no leading zeros)",
    ),
    Recognizer(
        id="ipv6",
        category="personal",
        label="IP",
        pattern=_IPV6_FULL + "|[0-9A-Fa-f:]{0,39}" + _IPV6_SHORT,
        # compressed forms from their "::"
        scan=ScanForm(_IPV6_FULL + "|" + _IPV6_SHORT, 39, _HEX | frozenset(b":")),
        max_len=45,
        min_len=2,
        validator=v.ipv6,
        left=ALNUM | frozenset(b":"),
        right=ALNUM | frozenset(b":"),
        needs=((b"::", b":"),),
        description="IPv6 addresses (validated with the standard library; ::1-like short forms are left alone)",
    ),
)

BY_ID: dict[str, Recognizer] = {r.id: r for r in BUILTINS}
CREDENTIAL_IDS: frozenset[str] = frozenset(r.id for r in BUILTINS if r.category == "credential")
PERSONAL_IDS: frozenset[str] = frozenset(r.id for r in BUILTINS if r.category == "personal")
