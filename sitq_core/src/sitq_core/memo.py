"""A per-callable memo that never fails on the callable it is asked about.

sitq remembers facts about task functions (async or not, importable by name,
which option keywords they take) so each is worked out once per function, not
once per task. The callable is the user's: it may not be weakly referenceable
(builtins), not hashable, or have a ``__hash__``/``__eq__`` that raises. Such
a callable is simply not remembered; the fact is worked out each time.
"""

from __future__ import annotations

import contextlib
import weakref
from typing import Any, Generic, TypeVar

V = TypeVar("V")

__all__ = ["CallableMemo"]


class CallableMemo(Generic[V]):
    """Facts per callable, held weakly, with lookups that answer None rather than raise."""

    __slots__ = ("_facts",)

    def __init__(self) -> None:
        self._facts: weakref.WeakKeyDictionary[Any, V] = weakref.WeakKeyDictionary()

    def get(self, func: Any) -> V | None:
        """The remembered fact about ``func``, or None (not seen yet, or not rememberable)."""
        try:
            return self._facts.get(func)
        except Exception:  # not weakly referenceable, unhashable, or a __hash__/__eq__ that raises
            return None

    def remember(self, func: Any, fact: V) -> None:
        """Keep ``fact`` for ``func`` while ``func`` lives; a callable that cannot be a key is skipped."""
        with contextlib.suppress(Exception):  # as in get(): such a callable is worked out each time
            self._facts[func] = fact
