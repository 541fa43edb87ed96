"""Per-connection masking configuration (embedded in the gateway YAML under ``masking:``).

Example::

    masking:
      recognizers:
        personal: true              # email, phone, card, ssn, iban, ipv4, ipv6
        disable: [ipv4, ipv6]
      rules:
        - id: employee-id
          pattern: 'EMP-[0-9]{6}'
        - id: pii-columns
          fields: [email, "*_ssn", "users.phone"]
          replace: hmac
        - id: vault-paths
          json_paths: ["$.spec.credentials", "$..apiToken"]
      allow:
        - "noreply@example.com"
        - {pattern: '.*@example\\.org', rules: [email]}
      replacements:
        card: partial               # ****-****-****-1234
        email: hmac                 # [EMAIL:3f1c…]
"""

from __future__ import annotations

import fnmatch
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ._regex import check_pattern
from .paths import parse_path
from .recognizers import BY_ID
from .replacements import ReplacementSpec

_FROZEN = ConfigDict(frozen=True, extra="forbid")

CATEGORY_KEYS = ("credential", "personal", "default")


class Replacement(BaseModel):
    """``placeholder`` | ``partial`` | ``hmac``; a bare string selects the kind."""

    model_config = _FROZEN

    kind: Literal["placeholder", "partial", "hmac"] = "placeholder"
    placeholder: str | None = Field(default=None, min_length=1, max_length=128)
    keep_first: int | None = Field(default=None, ge=0, le=32)
    keep_last: int | None = Field(default=None, ge=0, le=32)
    mask_char: str = Field(default="*", min_length=1, max_length=1)
    hmac_chars: int = Field(default=16, ge=8, le=64)

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data: Any) -> Any:
        if isinstance(data, str):
            return {"kind": data}
        return data

    @field_validator("placeholder")
    @classmethod
    def _one_line(cls, value: str | None) -> str | None:
        if value is not None and ("\n" in value or "\r" in value):
            raise ValueError("placeholder must be a single line")
        return value

    @field_validator("mask_char")
    @classmethod
    def _not_alnum(cls, value: str) -> str:
        if value.isalnum():
            raise ValueError("mask_char must not be a letter or digit")
        return value

    def spec(self) -> ReplacementSpec:
        return ReplacementSpec(
            kind=self.kind,
            placeholder=self.placeholder,
            keep_first=self.keep_first,
            keep_last=self.keep_last,
            mask_char=self.mask_char,
            hmac_chars=self.hmac_chars,
        )


def _known_ids(ids: tuple[str, ...]) -> tuple[str, ...]:
    unknown = [i for i in ids if i not in BY_ID]
    if unknown:
        raise ValueError(f"unknown recognizer id(s) {unknown}; known: {sorted(BY_ID)}")
    return ids


class Recognizers(BaseModel):
    """Which built-in recognizers are on.

    Credential recognizers are on unless ``credentials: false`` or listed in
    ``disable``; personal-data recognizers are off unless ``personal: true`` or
    listed in ``enable``. A plain list is shorthand for ``enable``.
    """

    model_config = _FROZEN

    credentials: bool = True
    personal: bool = False
    enable: tuple[str, ...] = ()
    disable: tuple[str, ...] = ()

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data: Any) -> Any:
        if isinstance(data, list | tuple):
            return {"enable": data}
        return data

    @field_validator("enable", "disable")
    @classmethod
    def _ids(cls, ids: tuple[str, ...]) -> tuple[str, ...]:
        return _known_ids(ids)

    def active_ids(self) -> list[str]:
        out = []
        for rid, rec in BY_ID.items():
            on = self.credentials if rec.category == "credential" else self.personal
            if rid in self.enable:
                on = True
            if rid in self.disable:
                on = False
            if on:
                out.append(rid)
        return out


class Rule(BaseModel):
    """A custom rule: a regex over content, or field/column names, or JSON paths."""

    model_config = _FROZEN

    id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
    pattern: str | None = Field(default=None, min_length=1, max_length=4096)
    """RE2 syntax; a group named ``value`` limits the replacement to that group.
    Patterns never match across a newline."""
    ignore_case: bool = False
    max_length: int = Field(default=256, ge=1, le=65536)
    """Longest value the pattern can match (bounds the stream hold-back)."""
    fields: tuple[str, ...] = ()
    """Column / JSON key names: exact or glob (``*_ssn``), optionally ``table.column``;
    case-insensitive."""
    json_paths: tuple[str, ...] = ()
    label: str | None = Field(default=None, pattern=r"^[A-Z0-9_]{1,32}$")
    replace: Replacement | None = None

    @field_validator("pattern")
    @classmethod
    def _re2(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                check_pattern(value)
            except ValueError as exc:
                raise ValueError(f"invalid RE2 pattern {value!r}: {exc}") from None
        return value

    @field_validator("fields")
    @classmethod
    def _fields(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for name in value:
            if not name or name.strip() != name:
                raise ValueError(f"invalid field name {name!r}")
            fnmatch.translate(name)
        return value

    @field_validator("json_paths")
    @classmethod
    def _paths(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for p in value:
            parse_path(p)
        return value

    @model_validator(mode="after")
    def _one_kind(self) -> Rule:
        if self.pattern is None and not self.fields and not self.json_paths:
            raise ValueError("a rule needs one of: pattern, fields, json_paths")
        if self.pattern is not None and (self.fields or self.json_paths):
            raise ValueError(
                "a pattern rule cannot also have fields or json_paths; split it in two rules"
            )
        return self

    @property
    def display_label(self) -> str:
        if self.label:
            return self.label
        return "".join(c if c.isalnum() else "_" for c in self.id.upper())[:32]


class AllowEntry(BaseModel):
    """A value never masked: exact ``value`` or an RE2 ``pattern`` (full match).
    ``rules`` limits the exception to some rule/recognizer ids. A bare string is a value."""

    model_config = _FROZEN

    value: str | None = Field(default=None, min_length=1)
    pattern: str | None = Field(default=None, min_length=1)
    rules: tuple[str, ...] = ()

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data: Any) -> Any:
        if isinstance(data, str):
            return {"value": data}
        return data

    @field_validator("pattern")
    @classmethod
    def _re2(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                check_pattern(value)
            except ValueError as exc:
                if "empty string" not in str(exc):
                    raise ValueError(f"invalid RE2 pattern {value!r}: {exc}") from None
        return value

    @model_validator(mode="after")
    def _exactly_one(self) -> AllowEntry:
        if (self.value is None) == (self.pattern is None):
            raise ValueError("an allow entry needs exactly one of: value, pattern")
        return self


class MaskingConfig(BaseModel):
    model_config = _FROZEN

    enabled: bool = True
    recognizers: Recognizers = Recognizers()
    rules: tuple[Rule, ...] = ()
    allow: tuple[AllowEntry, ...] = ()
    replacements: dict[str, Replacement] = Field(default_factory=dict)
    """Replacement per recognizer/rule id, or per category: ``credential``,
    ``personal``, ``default``. Unset: ``placeholder``. A rule's own ``replace`` wins."""
    kubernetes_secrets: Literal["replace", "mask", "off"] = "replace"
    """Secret ``data``/``stringData`` values: ``replace`` every value (default),
    ``mask`` decode and mask content only, ``off`` treat like any other object."""

    @field_validator("replacements")
    @classmethod
    def _replacement_keys(cls, value: dict[str, Replacement]) -> dict[str, Replacement]:
        return value  # rule ids are checked in _cross_check, where rules are known

    @model_validator(mode="after")
    def _cross_check(self) -> MaskingConfig:
        seen: set[str] = set()
        for i, rule in enumerate(self.rules):
            if rule.id in BY_ID:
                raise ValueError(
                    f"rules[{i}].id {rule.id!r} collides with a built-in recognizer id"
                )
            if rule.id in seen:
                raise ValueError(f"rules[{i}].id {rule.id!r} is used twice")
            seen.add(rule.id)
        known = seen | set(BY_ID) | set(CATEGORY_KEYS)
        for key in self.replacements:
            if key not in known:
                raise ValueError(
                    f"replacements key {key!r} is not a rule id, recognizer id or one of {CATEGORY_KEYS}"
                )
        for i, entry in enumerate(self.allow):
            bad = [r for r in entry.rules if r not in seen and r not in BY_ID]
            if bad:
                raise ValueError(f"allow[{i}].rules: unknown rule id(s) {bad}")
        return self
