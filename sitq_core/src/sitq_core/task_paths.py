"""What a task's import path ``module:qualname`` may name: one rule for enqueue, the loader and ``--allow-task``.

A producer sends a function by its own path, so the qualname goes from the
module through classes only (``Box.method``, ``Box.Inner.deep``) to a
function: a plain one (a task's function, a ``functools.wraps`` wrapper) or
a module's builtin (``math:sqrt``). Nothing else is followed: not an
attribute of a dict or an instance (``sys:modules.clear`` reached a bound
method that emptied the worker's modules), and never a dunder name
(``total.__globals__`` reached a module's namespace), which is refused
before anything is looked up.
"""

from __future__ import annotations

import inspect
from typing import Any

from .task import is_task_function

__all__ = ["PathRefused", "dunder_refusal", "kind_of", "not_a_function", "walk", "with_article"]

#: appended to a refusal of what lies on the way to the function
_THROUGH_CLASSES = "a task path goes from its module through classes only"


class PathRefused(Exception):
    """A qualname that goes through something a producer's path never does; ``reason`` says what."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def dunder_refusal(qualname: str) -> str | None:
    """Why ``qualname`` is refused for a ``__name__`` part (a task path never holds one), else None."""
    dunder = next((part for part in qualname.split(".") if len(part) > 4 and part[:2] == part[-2:] == "__"), None)
    return None if dunder is None else f"{dunder!r} is a dunder name, which a task path never goes through"


def walk(root: object, qualname: str) -> Any:
    """What ``qualname`` names in ``root`` (a module), looked up through classes only.

    Raises :class:`PathRefused` for a dunder part (before any lookup) or a
    part reached through something that is not a class; AttributeError
    (or whatever a module's ``__getattr__`` raises) for a missing name.
    """
    refusal = dunder_refusal(qualname)
    if refusal is not None:
        raise PathRefused(refusal)
    parts = qualname.split(".")
    target: Any = root
    for index, part in enumerate(parts):
        if index and not inspect.isclass(target):
            owner = ".".join(parts[:index])
            raise PathRefused(f"{owner!r} is {kind_of(target)}, not a class ({_THROUGH_CLASSES})")
        target = getattr(target, part)
    return target


def not_a_function(obj: object) -> str | None:
    """None when ``obj`` (a task: its function) is what a path sends; else what it is ("a method (of a dict)")."""
    target: Any = obj
    if is_task_function(target):
        target = target.__wrapped__
    bound_builtin = inspect.isbuiltin(target) and not inspect.ismodule(getattr(target, "__self__", None))
    if bound_builtin or not (inspect.isfunction(target) or inspect.isbuiltin(target)):
        return kind_of(target)
    return None


def kind_of(func: Any) -> str:
    """What a callable that is not a module-level function is, for a refusal: a class, a method, ..."""
    if inspect.isclass(func):
        return "a class"
    if inspect.ismethod(func) or (inspect.isbuiltin(func) and not inspect.ismodule(getattr(func, "__self__", None))):
        owner = getattr(func, "__self__", None)
        return f"a method (of {with_article(type(owner).__name__)})" if owner is not None else "a method"
    return with_article(type(func).__name__)


def with_article(noun: str) -> str:
    """``noun`` with its indefinite article."""
    return f"{'an' if noun[:1].lower() in 'aeiou' else 'a'} {noun}"
