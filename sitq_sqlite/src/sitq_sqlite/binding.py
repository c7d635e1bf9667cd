"""A cheaper way for the stdlib ``sqlite3`` module to bind ``bytes``, ``None`` and ``bool`` parameters.

``sqlite3`` binds ``int``, ``float``, ``str`` and ``bytearray`` directly, but
sends every other value (each task payload and result value, each ``None``,
each ``bool``) through its adapter protocol first: a registry lookup, then a
failed ``__adapt__`` lookup on ``PrepareProtocol`` that builds and discards an
``AttributeError``, then a ``__conform__`` lookup, and only then binds the value
as it is. Registering an adapter that returns what would be bound anyway ends
the search at the registry: ``bytes(value)`` is the same object for a ``bytes``
value, ``{}.get(None)`` is ``None`` (bound as NULL) and ``int(flag)`` is the 0 or
1 that a ``bool`` is bound as. What is stored does not change; each such
parameter costs about 0.3-0.6 µs less to bind.

The registry is process-wide: an adapter the application registered first for
one of these types is left alone (and one it registers later replaces this one).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import Any

__all__ = ["SHORTCUTS", "register_fast_adapters"]

_NOTHING: dict[Any, Any] = {}  # never holds anything: its ``get`` maps None to None at C speed

#: Each type and the adapter that returns exactly what ``sqlite3`` binds for it without one.
SHORTCUTS: tuple[tuple[type, Callable[[Any], Any]], ...] = (
    (bytes, bytes),
    (type(None), _NOTHING.get),
    (bool, int),
)


def register_fast_adapters() -> None:
    """Register the :data:`SHORTCUTS`, each unless an adapter for its type is registered already."""
    registry = getattr(sqlite3, "adapters", None)
    if registry is None:
        return
    for kind, adapter in SHORTCUTS:
        if (kind, sqlite3.PrepareProtocol) not in registry:
            sqlite3.register_adapter(kind, adapter)
