"""The descriptor-setting ``__init__`` of the model dataclasses behaves exactly like the one dataclasses writes."""

from __future__ import annotations

import dataclasses
import inspect
import pickle
import typing
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from sitq_core.models import Outcome, ReservedTask, Result, Task, TaskStatus
from sitq_core.slotinit import quick_init

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


def reference_class(cls: type) -> Any:
    """A twin of ``cls`` made by dataclasses alone (its generated ``__init__`` untouched)."""
    fields = [(f.name, f.type, f) for f in dataclasses.fields(cls)]
    twin = dataclasses.make_dataclass(cls.__name__, fields, frozen=True, slots=True)
    twin.__module__ = cls.__module__
    return twin


@pytest.mark.parametrize("cls", [Task, ReservedTask, Outcome, Result])
def test_the_signature_is_the_one_dataclasses_writes(cls: type) -> None:
    assert str(inspect.signature(cls)) == str(inspect.signature(reference_class(cls)))
    assert cls.__init__.__qualname__ == f"{cls.__name__}.__init__"  # type: ignore[misc]


def test_every_field_keeps_its_value_and_defaults_fill_the_rest() -> None:
    given = ("an-id", b"payload", "msgpack", "m:f", "mail", 5, NOW, 2, 0.5, 3.0, 4, NOW)
    task = Task(*given)
    assert dataclasses.astuple(task)[:12] == given
    assert task.status is TaskStatus.QUEUED and task.attempts == 0 and task.cancel_requested is False
    twin = reference_class(Task)(*given)
    assert dataclasses.astuple(task) == dataclasses.astuple(twin)


def test_a_default_factory_runs_for_each_object_that_does_not_pass_the_field() -> None:
    first = Task(id="a", payload=b"")
    second = Task(id="b", payload=b"")
    assert first.eta.tzinfo is UTC and first.eta <= second.eta
    assert abs(first.enqueued_at - datetime.now(UTC)) < timedelta(minutes=1)
    given = Task(id="c", payload=b"", eta=NOW)
    assert given.eta is NOW


def test_the_object_stays_frozen_hashable_and_replaceable() -> None:
    task = Task(id="a", payload=b"x", eta=NOW, enqueued_at=NOW)
    with pytest.raises(dataclasses.FrozenInstanceError):
        task.id = "b"  # type: ignore[misc]
    assert hash(task) == hash(dataclasses.replace(task))
    assert dataclasses.replace(task, priority=3).priority == 3
    assert pickle.loads(pickle.dumps(task)) == task


def test_wrong_arguments_fail_as_with_dataclasses() -> None:
    with pytest.raises(TypeError, match="missing 2 required positional arguments: 'id' and 'payload'"):
        Task()  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="unexpected keyword argument 'bogus'"):
        Task(id="a", payload=b"", bogus=1)  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="multiple values for argument 'id'"):
        Task("a", b"", id="b")  # type: ignore[misc]


def test_classes_it_cannot_copy_exactly_are_refused() -> None:
    @dataclasses.dataclass(frozen=True, slots=True)
    class WithPostInit:
        x: int

        def __post_init__(self) -> None:
            pass

    @dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
    class KeywordOnly:
        x: int

    for cls in (WithPostInit, KeywordOnly):
        with pytest.raises(TypeError, match="plain fields only"):
            quick_init(cls)


@pytest.mark.parametrize("cls", [Task, ReservedTask, Outcome, Result])
def test_the_init_annotations_resolve_as_before(cls: type) -> None:
    """typing.get_type_hints(cls.__init__) raised NameError: the generated code had no module globals."""
    hints = typing.get_type_hints(cls.__init__)  # type: ignore[misc]
    assert hints == {**typing.get_type_hints(cls), "return": type(None)}


def test_passing_back_the_signature_default_of_a_factory_field_calls_the_factory() -> None:
    """``sig.bind(...).apply_defaults()`` passes the shown default back; it was stored as the marker itself."""
    bound = inspect.signature(Task).bind(id="a", payload=b"")
    bound.apply_defaults()
    task = Task(*bound.args, **bound.kwargs)
    assert isinstance(task.eta, datetime) and isinstance(task.enqueued_at, datetime)
