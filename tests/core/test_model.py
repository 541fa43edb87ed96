"""Events: the slot-setting ``__init__`` (model._slot_init) behaves like the
one dataclasses generates: same parameters and defaults, every field set,
fresh default_factory values, still frozen."""

from __future__ import annotations

import dataclasses
import inspect

import pytest

from hoopd.model import EVENT_TYPES, Command, CommandKind, Decision, Verdict


@pytest.mark.parametrize("cls", list(EVENT_TYPES.values()), ids=lambda c: c.__name__)
def test_event_init_is_the_dataclass_init(cls: type) -> None:
    fields = dataclasses.fields(cls)
    params = list(inspect.signature(cls).parameters.values())
    assert [p.name for p in params] == [f.name for f in fields]
    for p, f in zip(params, fields, strict=True):
        assert p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD
        if f.default is not dataclasses.MISSING:
            assert p.default is f.default
        elif f.default_factory is not dataclasses.MISSING:
            assert p.default is not inspect.Parameter.empty
        else:
            assert p.default is inspect.Parameter.empty

    values = [object() for _ in fields]
    by_position = cls(*values)
    by_name = cls(**{f.name: v for f, v in zip(fields, values, strict=True)})
    for f, v in zip(fields, values, strict=True):
        assert getattr(by_position, f.name) is v
        assert getattr(by_name, f.name) is v
    assert by_position == by_name

    required = [v for f, v in zip(fields, values, strict=True) if _required(f)]
    a, b = cls(*required), cls(*required)
    for f in fields:
        if f.default is not dataclasses.MISSING:
            assert getattr(a, f.name) is f.default
        elif f.default_factory is not dataclasses.MISSING:
            assert getattr(a, f.name) == f.default_factory()
            assert getattr(a, f.name) is not getattr(b, f.name)
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(a, fields[0].name, 1)
    with pytest.raises(TypeError):
        cls(*values, object())


def _required(f: dataclasses.Field[object]) -> bool:
    return f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING


def test_events_compare_hash_and_round_trip() -> None:
    cmd = Command(3, CommandKind.SQL, "select 1", {"protocol": "simple"})
    assert Command.from_record(cmd.to_record()) == cmd
    d1 = Decision(3, Verdict.ALLOW, 0, ("read-only query",), (), "", "", False)
    d2 = Decision(3, Verdict.ALLOW, reasons=("read-only query",))
    assert d1 == d2 and hash(d1) == hash(d2)
    assert Decision.from_record(d1.to_record()) == d1
    assert repr(d2).startswith("Decision(command_seq=3, verdict=")
