"""The kit's check of what each backend method returns (not part of the public API).

A ``reserve`` that returns ``Task`` objects instead of ``ReservedTask`` leases, or an
``enqueue_many`` returning None, would otherwise fail dozens of contract tests with raw
Python errors raised wherever the answer is first used (``AttributeError: 'Task' object
has no attribute 'lease_token'`` inside ``Backend.complete``, ``TypeError: 'NoneType'
object is not subscriptable`` inside the default ``enqueue``). The kit wraps the methods
of the backends its contract tests use, so the first wrong answer fails naming the
contract, the method and what it must return. One ``isinstance`` per returned item:
the kit stays fast, and sitq's core pays nothing.
"""

from __future__ import annotations

import functools
import inspect
import weakref
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar

import pytest

from ..backend import Backend
from ..models import LeaseState, ReservedTask, Result, Task

if TYPE_CHECKING:
    from _pytest.outcomes import Failed
else:
    Failed = pytest.fail.Exception  # pytest's public name for its failure outcome

__all__ = ["WrongAnswer", "check_answers", "wrong_answer"]

B = TypeVar("B")

_MARK = "__sitq_kit_answers__"
_PLAIN = (str, bytes, int, float, type(None))  # shown as they are (bool is an int)
_LEASE_STATES = [state.value for state in LeaseState]


class WrongAnswer(Failed):
    """A backend method returned a value of the wrong type; the message names the contract and the method.

    A ``pytest.fail`` outcome, so a backend's own ``except Exception`` around a call of its
    own methods (``enqueue`` calling ``enqueue_many``) does not turn it into another error.
    """

    __module__ = "builtins"  # reported as "WrongAnswer: ...", as pytest reports its own "Failed: ..."


def _short(text: str, most: int = 120) -> str:
    return text if len(text) <= most else text[: most - 3] + "..."


def _kinds(items: Iterable[object]) -> str:
    names = dict.fromkeys(type(item).__name__ for item in items)
    return ", ".join(names)


def describe(answer: object) -> str:
    """``answer`` as a failure message shows it: plain values as they are, others by their types."""
    if isinstance(answer, _PLAIN):
        return _short(repr(answer))
    if isinstance(answer, tuple) and len(answer) <= 3:
        return "(" + ", ".join(describe(item) for item in answer) + ")"
    if isinstance(answer, list | tuple):
        if all(isinstance(item, _PLAIN) for item in answer):
            return _short(repr(answer))
        return f"a {type(answer).__name__} of {_kinds(answer)}"
    if isinstance(answer, dict):
        if all(isinstance(item, _PLAIN) for item in (*answer, *answer.values())):
            return _short(repr(answer))
        return f"a dict with keys {_short(repr(list(answer)), 60)}"
    return f"a {type(answer).__name__}"


def _number(given: object, what: str) -> str:
    """``"3 tasks"`` for a ``given`` list of three; ``""`` when ``given`` is no list (its length unknown)."""
    if not isinstance(given, list | tuple):
        return ""
    return f"{len(given)} {what}{'' if len(given) == 1 else 's'}"


def _list_of(fits: Callable[[object], bool], answer: object, given: object = None) -> bool:
    """A list of items that ``fits``, one per item of ``given`` when that is a list."""
    return (
        isinstance(answer, list)
        and all(fits(item) for item in answer)
        and (not isinstance(given, list | tuple) or len(answer) == len(given))
    )


def _a(kind: type) -> Callable[[object], bool]:
    return lambda item: isinstance(item, kind)


def _flag(answer: object) -> bool:
    """A bool; 1 and 0 pass too (they work wherever a bool does): only a wrong type fails here."""
    return isinstance(answer, int) and answer in (0, 1)


def _optional(kind: type) -> Callable[[object, object], bool]:
    return lambda answer, _given: answer is None or isinstance(answer, kind)


def _mapping(key: type, values: Callable[[object], bool]) -> Callable[[object, object], bool]:
    return lambda answer, _given: (
        isinstance(answer, dict) and all(isinstance(k, key) and values(v) for k, v in answer.items())
    )


def _ids(answer: object, tasks: object) -> bool:
    return _list_of(_a(str), answer, tasks)


def _bools(answer: object, outcomes: object) -> bool:
    return _list_of(_flag, answer, outcomes)


def _exchanged(answer: object, outcomes: object) -> bool:
    return (
        isinstance(answer, tuple)
        and len(answer) == 2
        and _bools(answer[0], outcomes)
        and _list_of(_a(ReservedTask), answer[1])
    )


def _per_task(tasks: object) -> str:
    number = _number(tasks, "task")
    return "a list of the task ids (str), one per task" + (f" ({number})" if number else "")


def _per_outcome(outcomes: object) -> str:
    number = _number(outcomes, "outcome")
    return "one bool per outcome" + (f": {number}" if number else "")


def _per_id(task_ids: object) -> str:
    number = _number(task_ids, "id")
    return "one bool per task id" + (f": {number}" if number else "")


def _pair(outcomes: object) -> str:
    number = _number(outcomes, "outcome")
    return (
        "a pair (accepted, reserved): a list of bool, one per outcome"
        + (f" ({number})" if number else "")
        + ", and a list of ReservedTask"
    )


def _always(text: str) -> Callable[[object], str]:
    return lambda _given: text


_BOOL = (_always("a bool"), lambda answer, _given: _flag(answer))

#: method -> (what it must return, given the argument named in _PER; whether an answer does so, given that argument)
CHECKS: dict[str, tuple[Callable[[object], str], Callable[[object, object], bool]]] = {
    "enqueue_many": (_per_task, _ids),
    "enqueue": (_always("the task id (str)"), lambda answer, _given: isinstance(answer, str)),
    "enqueue_blocking": (_always("the task id (str), or None having stored nothing"), _optional(str)),
    "reserve": (_always("a list of ReservedTask"), lambda answer, _given: _list_of(_a(ReservedTask), answer)),
    "heartbeat": (_always("a dict of task id (str) to LeaseState"), _mapping(str, lambda v: v in _LEASE_STATES)),
    "finish_many": (_per_outcome, _bools),
    "finish_and_reserve": (_pair, _exchanged),
    "complete": _BOOL,
    "fail": _BOOL,
    "retry": _BOOL,
    "release": _BOOL,
    "cancel": _BOOL,
    "requeue": _BOOL,
    "requeue_many": (_per_id, _bools),
    "get_task": (_always("a Task or None"), _optional(Task)),
    "get_result": (_always("a Result or None"), _optional(Result)),
    "wait_for_result": (_always("a Result or None"), _optional(Result)),
    "next_eta": (_always("a datetime or None"), _optional(datetime)),
    "list_tasks": (_always("a list of Task"), lambda answer, _given: _list_of(_a(Task), answer)),
    "counts": (_always("a dict of status (str) to count (int)"), _mapping(str, _a(int))),
    "purge": (_always("the number of tasks deleted (an int)"), lambda answer, _given: isinstance(answer, int)),
}

#: The argument whose items a method's answer has one each of.
_PER = {
    "enqueue_many": "tasks",
    "finish_many": "outcomes",
    "finish_and_reserve": "outcomes",
    "requeue_many": "task_ids",
}


def wrong_answer(method: str, answer: object, args: tuple[Any, ...] = (), kwargs: dict[str, Any] | None = None) -> str:
    """``""`` when ``answer`` is of the type ``method`` must return; else what is wrong, e.g.
    ``"reserve must return a list of ReservedTask, got a list of Task"``."""
    expected, fits = CHECKS[method]
    per = _PER.get(method)
    given = (args[0] if args else (kwargs or {}).get(per)) if per else None
    if fits(answer, given):
        return ""
    return f"{method} must return {expected(given)}, got {describe(answer)}"


def _checked_async(ref: Callable[[], object], function: Callable[..., Any], name: str, state: dict[str, str]) -> Any:
    @functools.wraps(function)
    async def checked(*args: Any, **kwargs: Any) -> Any:
        __tracebackhide__ = True  # the report ends at the kit's call (and the backend's frames when it raised)
        pending = function(ref(), *args, **kwargs)
        if not inspect.isawaitable(pending):
            raise WrongAnswer(
                f"{state['contract']}: {name} must be 'async def' (it returned {describe(pending)}, not an awaitable)"
            )
        answer = await pending
        wrong = wrong_answer(name, answer, args, kwargs)
        if wrong:
            raise WrongAnswer(f"{state['contract']}: {wrong}")
        return answer

    return checked


def _checked_sync(ref: Callable[[], object], function: Callable[..., Any], name: str, state: dict[str, str]) -> Any:
    @functools.wraps(function)
    def checked(*args: Any, **kwargs: Any) -> Any:
        __tracebackhide__ = True
        answer = function(ref(), *args, **kwargs)
        wrong = wrong_answer(name, answer, args, kwargs)
        if wrong:
            raise WrongAnswer(f"{state['contract']}: {wrong}")
        return answer

    return checked


def check_answers(backend: B, contract: str) -> B:
    """``backend`` itself, its methods now checking what they return (failing with ``contract``'s name).

    The methods are wrapped on the instance, so calls the backend makes of its own methods
    (the default ``enqueue`` calling ``enqueue_many``) are checked too. A backend already
    checked only takes the new contract name; anything but a ``Backend`` (the fixture
    reports that) and a method the instance set itself are left as they are.
    """
    if not isinstance(backend, Backend):
        return backend
    try:
        namespace = vars(backend)
    except TypeError:  # no instance __dict__: nothing to wrap
        return backend
    state: dict[str, str] | None = namespace.get(_MARK)
    if state is not None:
        state["contract"] = contract
        return backend
    state = {"contract": contract}
    ref = weakref.ref(backend)  # no cycle through the instance's own __dict__
    for name in CHECKS:
        bound = getattr(backend, name, None)
        if name in namespace or not inspect.ismethod(bound) or bound.__self__ is not backend:
            continue
        wrap = _checked_sync if name == "enqueue_blocking" else _checked_async
        namespace[name] = wrap(ref, bound.__func__, name, state)
    namespace[_MARK] = state
    return backend
