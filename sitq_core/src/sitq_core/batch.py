"""``TaskBatch``: the tasks of one ``enqueue_many`` call, built when first read.

A backend that declares :attr:`~sitq_core.backend.Capability.STREAMED_BATCHES`
receives one of these instead of a list, so it can store the first tasks while
later ones are still being serialised (the SQLite backend overlaps the two).
Reading an item may raise the error that building it raised
(``ValidationError``, ``SerializationError``); such a backend reads the items
inside its transaction, so the error stores nothing.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import overload

from .models import Task

__all__ = ["TaskBatch"]


class TaskBatch(Sequence[Task]):
    """A sequence of ``count`` tasks pulled in order from ``source`` as they are first needed."""

    def __init__(self, source: Iterator[Task], count: int) -> None:
        self._source = source
        self._count = count
        self._tasks: list[Task] = []
        self._error: BaseException | None = None

    def __len__(self) -> int:
        return self._count

    @overload
    def __getitem__(self, index: int) -> Task: ...

    @overload
    def __getitem__(self, index: slice) -> list[Task]: ...

    def __getitem__(self, index: int | slice) -> Task | list[Task]:
        if isinstance(index, slice):
            start, stop, step = index.indices(self._count)
            positions = range(start, stop, step)
            if positions:
                self._build_to(max(positions[0], positions[-1]) + 1)
            return [self._tasks[position] for position in positions]
        if index < 0:
            index += self._count
        if not 0 <= index < self._count:
            raise IndexError("TaskBatch index out of range")
        self._build_to(index + 1)
        return self._tasks[index]

    def __iter__(self) -> Iterator[Task]:
        for start in range(0, self._count, 256):
            yield from self[start : start + 256]

    @property
    def error(self) -> BaseException | None:
        """The exception building a task raised, if any."""
        return self._error

    def built(self) -> list[Task]:
        """Every task, built now (for backends that want a plain list)."""
        self._build_to(self._count)
        return self._tasks

    def built_so_far(self) -> list[Task]:
        """The tasks built until now (the first ones, in order), without building more."""
        return self._tasks

    def _build_to(self, stop: int) -> None:
        if len(self._tasks) >= stop:
            return
        if self._error is not None:
            raise self._error
        try:
            while len(self._tasks) < stop:
                self._tasks.append(next(self._source))
        except BaseException as exc:
            self._error = exc
            raise
