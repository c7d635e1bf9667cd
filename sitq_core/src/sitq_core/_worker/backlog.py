"""The bytes of results waiting to be stored, kept under ``limits._MAX_PENDING_RESULT_BYTES``.

A task's slot is freed as soon as it returns, before its result is stored:
when storing is slower than running (results of megabytes, a store held up
by a lock elsewhere), results piled up in the worker with no byte limit (200
results of 5 MB took a ``-c 8`` worker to 1.7 GB). While the results it holds
exceed the budget, the worker starts no task; one result larger than the
budget still goes through, alone.

The count is kept as outcomes are queued and stored; it is recomputed from
what really waits before it holds a task back, so a missed decrement can
never stall the worker.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterable
from typing import Any

from ..models import Outcome
from ..thread_batch import Call, ThreadBatch
from . import limits
from .running import _Running
from .state import WorkerState

_Item = tuple[_Running, Outcome, dict[str, Any]]


def _weight(items: Iterable[_Item]) -> int:
    """The value bytes of ``items``' outcomes."""
    return sum(len(outcome.value) for _running, outcome, _extra in items if outcome.value is not None)


class ResultBacklog(WorkerState):
    """Counts the bytes of results not stored yet, and says when no task may start."""

    def _backlog_full(self) -> bool:
        """True when the results waiting to be stored (queued or on their way) exceed the budget.

        Callers check ``_pending_bytes`` against the budget first (this is
        off the hot path); the count is then recomputed exactly.
        """
        exact = _weight(self._outcomes) + _weight(self._sending)
        self._pending_bytes = exact
        return exact > limits._MAX_PENDING_RESULT_BYTES

    def _backlog_settled(self, batch: list[_Item]) -> None:
        """``batch``, taken from ``_outcomes``, is done with (stored, refused, given up on)."""
        self._sending = []
        if self._outcomes:
            self._pending_bytes -= _weight(batch)
        else:  # nothing waits: the count is exactly zero, whatever it drifted to
            self._pending_bytes = 0

    def _batch_room(self) -> int:
        """How many sync tasks one thread batch may take: their results held together within one slot's share.

        A batch runs its tasks one after another and keeps their results until
        they are collected: 32 tasks of 5 MB results held 160 MB per slot.
        Result sizes are judged by ``_result_size``: the largest recent one,
        decaying as small results come (a drain of small results batches as
        before).
        """
        share = limits._MAX_PENDING_RESULT_BYTES // self.max_concurrency
        return max(1, int(share // max(self._result_size, 1.0)))

    def _budgeted_batch(
        self, members: list[_Running], calls: list[Call], on_start: Callable[[int, float], None]
    ) -> ThreadBatch:
        """A thread batch of ``calls`` whose members stop starting once results fill the budget.

        A member starts (in the pool thread) while its lease holds, the
        results waiting to be stored are within the budget, and what this
        batch's members returned so far (measured there: the loop collects it
        only later) is within one slot's share of it. The first member was let
        through by the dispatch. Members not started go back to wait for a
        slot, as ``_execute_sync_batch`` does with any member skipped.
        """
        budget = _BatchBudget(self, members, on_start)
        return ThreadBatch(calls, budget.on_start, may_start=budget.may_start)


class _BatchBudget:
    """The bytes one thread batch's members returned, tallied in its pool thread (see ``_budgeted_batch``)."""

    __slots__ = ("_counted", "_limit", "_members", "_on_start", "_share", "_worker", "returned")

    def __init__(self, worker: WorkerState, members: list[_Running], on_start: Callable[[int, float], None]) -> None:
        self._worker = worker
        self._members = members
        self._on_start = on_start
        self._limit = limits._MAX_PENDING_RESULT_BYTES
        self._share = self._limit // worker.max_concurrency
        self.returned = 0  # bytes returned by members[:_counted]
        self._counted = 0

    def on_start(self, index: int, began: float) -> None:
        """Before member ``index`` starts: tally what the members before it returned (outside the batch's lock).

        The batch is found through the member (no reference of its own: a batch
        is freed, with the values its calls returned, once its members let go).
        """
        if index:
            batch = self._members[index].batch
            if batch is not None:
                for earlier in range(self._counted, index):
                    entry = batch.result(earlier)
                    if entry is not None and entry[2] is not None:
                        self.returned += _rough_size(entry[2])
                self._counted = index
        self._on_start(index, began)

    def may_start(self, index: int) -> bool:
        """Asked under the batch's lock just before member ``index`` would start (the tally lags one member).

        As ``_leases_still_held``: not once its lease has surely run out.
        """
        if index and (self.returned > self._share or self._worker._pending_bytes > self._limit):
            return False
        return time.monotonic() < self._members[index].lease_until  # a float, set on the loop


def _rough_size(value: object) -> int:
    """About how many bytes ``value`` takes: exact for bytes and text, an object's own size otherwise."""
    if isinstance(value, _SIZED):
        return len(value)
    if isinstance(value, memoryview):
        return value.nbytes
    try:
        return sys.getsizeof(value)
    except Exception:  # a foreign object's __sizeof__ must not fail the batch
        return 0


_SIZED = (bytes, str, bytearray)
