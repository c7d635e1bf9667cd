"""Starting reserved tasks as slots free up, and waiting (idle) when there is nothing to start.

Tasks wait in ``_waiting``, in the store's order (priority, then due time, then arrival: ``_line_up``);
this moves them to slots, hands a thread batch's unstarted tasks to a free slot, and sets how long
the exchange loop may sleep before it looks for work again.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..bounded import within
from ..errors import SitqError, describe_exception
from ..models import Outcome
from ..serializers import Serializer, checked_call
from ..thread_batch import Call, ThreadBatch
from . import limits
from .calls import _is_async_callable
from .failures import _describe, _format, _missing_here
from .limits import _ADAPTIVE_PREFETCH_MAX, _ADAPTIVE_PREFETCH_WINDOW, _BATCH_HANDOFF_AFTER, _MAX_SYNC_BATCH, _WRAPPERS
from .log import logger
from .running import _rank, _Running
from .state import WorkerState


def _log_escaped(future: asyncio.Task[None]) -> None:
    """A task's or batch's asyncio task ended with an error of the worker's own: say so now (ERROR), not at exit.

    ``_execute`` fails the task for anything raised around its call; what is
    left (reporting it, starting the next one) would otherwise be printed only
    when the process ends ("Task exception was never retrieved").
    """
    if future.cancelled():
        return
    error = future.exception()
    if error is not None:
        logger.error(
            "%s ended with an error of the worker's own: %s", future.get_name(), _describe(error), exc_info=error
        )


def _withdraw_unstarted(
    batch: ThreadBatch, members: list[_Running], into: list[_Running], older_than: float = 0.0
) -> float | None:
    """Take ``batch``'s calls not yet started (if it has run ``older_than`` seconds) back into ``into``.

    They leave the batch (no batch or future of theirs any more) to be lined
    up again; returns when the batch comes of age, as ``take_unstarted`` does.
    """
    taken, wait = batch.take_unstarted(older_than)
    for index in taken:
        running = members[index]
        running.batch, running.future = None, None
        into.append(running)
    return wait


class Dispatching(WorkerState):
    """Starts waiting tasks in free slots, and idles when there are none."""

    if TYPE_CHECKING:

        def _end_isolation_later(self, suspect: _Running) -> None: ...

        def _serializer_for(self, name: str) -> Serializer: ...

        async def _execute(self, running: _Running, call: Call) -> None: ...

        def _on_batch_start(self, members: list[_Running]) -> Callable[[int, float], None]: ...

        async def _execute_sync_batch(self, members: list[_Running], batch: ThreadBatch) -> None: ...

        def _failure(self, running: _Running, error: str, traceback: str, *, retry: bool) -> Outcome: ...

        def _outcomes_put(self, running: _Running, outcome: Outcome, extra: dict[str, Any]) -> None: ...

        def _lease_ran_out(self, running: _Running) -> bool: ...

        def _backlog_full(self) -> bool: ...

        def _batch_room(self) -> int: ...

        def _budgeted_batch(
            self, members: list[_Running], calls: list[Call], on_start: Callable[[int, float], None]
        ) -> ThreadBatch: ...

    def _poke(self) -> None:
        if self._wake is not None:
            self._wake.set()

    async def _idle(self, *, can_reserve: bool, timeout: float) -> bool:
        """Sleep until an outcome arrives or the worker stops (or new work, when ``can_reserve``).

        Returns True when woken because work may be due.
        """
        assert self._wake is not None and self._stopping is not None
        self._wake.clear()
        if self._outcomes or self._closing:
            return False
        poked = asyncio.ensure_future(self._wake.wait())
        waiters: set[asyncio.Future[Any]] = {poked}
        work: asyncio.Future[Any] | None = None
        if can_reserve:
            work = asyncio.ensure_future(self.backend.wait_for_work(timeout))
            waiters.add(work)
        try:
            # the bound is a safety net: wait_for_work returns by itself within ``timeout``
            done, _pending = await asyncio.wait(
                waiters, timeout=timeout * 2 + 0.05, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            for future in waiters:
                if not future.done():
                    future.cancel()
            for future in waiters:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await future
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                # this loop's own cancel (the event loop ending: asyncio.run cancels each task once) landed
                # on one of those awaits and was suppressed with the waiter's: swallowed, the loop idled on
                # and asyncio.run never returned
                raise asyncio.CancelledError
        if work is not None and work in done and not work.cancelled() and work.exception() is not None:
            # the store cannot tell us about new work now (its notification channel is down): do not spin
            # reserving in a loop; look again after a poll interval, as a backend without notices would
            self._wait_failures += 1
            if self._wait_failures == 1 or self._wait_failures % 100 == 0:
                logger.warning(
                    "worker %s: waiting for work failed (%s); polling every %.2fs until it works again",
                    self.worker_id,
                    _describe(work.exception()),  # type: ignore[arg-type]
                    self.poll_interval,
                )
            with contextlib.suppress(TimeoutError):
                await within(self._wake.wait(), min(self.poll_interval, max(timeout, 0.01)))
            return True
        if work is not None and work in done:
            self._wait_failures = 0
        return work is not None and work in done

    def _ahead(self) -> int:
        """How many tasks to reserve beyond the free slots (fixed, or adaptive when prefetch is None)."""
        if self.prefetch is not None:
            return self.prefetch
        per_slot = self._mean_run_time / self.max_concurrency
        if per_slot >= 0.05:
            return 0
        return min(_ADAPTIVE_PREFETCH_MAX, int(_ADAPTIVE_PREFETCH_WINDOW / max(per_slot, 1e-5)))

    async def _idle_timeout(self) -> float:
        timeout = self.poll_interval
        try:
            eta = await self.backend.next_eta(self.queues)
        except Exception:
            logger.debug("next_eta failed", exc_info=True)
            return timeout
        if eta is not None:
            try:
                until = (eta - self.backend.now()).total_seconds()
            except (TypeError, OverflowError):  # a backend handing back an odd time must not stop the worker
                logger.debug("next_eta returned %r", eta, exc_info=True)
                return timeout
            timeout = min(timeout, max(until, 0.0))
        return max(timeout, 0.0005)

    def _dispatch(self) -> None:
        """Start waiting tasks while slots are free; then let free slots take tasks stuck in slow batches."""
        self._start_waiting()
        if self._batches and not self._waiting and self._executing < self.max_concurrency and self._hand_off():
            self._start_waiting()

    def _hand_off(self) -> bool:
        """Move the tasks not started yet of batches older than ``_BATCH_HANDOFF_AFTER`` to the waiting line.

        A batch runs its calls one after another on one thread: without this,
        a quick task batched behind a slow one starts only once that returns,
        while slots sit idle. Called when slots are free and nothing waits;
        True when tasks were moved. A younger batch is looked at again when it
        comes of age (a timer), unless something else dispatched first.
        """
        if self._suspect is not None or self._stopping is None or self._stopping.is_set():
            return False
        moved: list[_Running] = []
        soonest = math.inf
        for batch, members in self._batches.items():
            wait = _withdraw_unstarted(batch, members, moved, _BATCH_HANDOFF_AFTER)
            if wait is not None:
                soonest = min(soonest, wait)
        if moved:
            logger.debug("worker %s: %d task(s) moved out of slow sync batches", self.worker_id, len(moved))
            self._line_up(moved, front=True)  # reserved before what waits (nothing, or a suspect)
        elif soonest < math.inf and self._handoff_timer is None and self._loop is not None:

            def again() -> None:
                self._handoff_timer = None
                self._dispatch()

            self._handoff_timer = self._loop.call_later(soonest + 0.001, again)
        return bool(moved)

    def _line_up(self, runnings: list[_Running], *, front: bool = False) -> None:
        """Put ``runnings`` (in the store's order) in line to start: by priority, then due time, then arrival.

        Stable: among equals, what waits already stays first, or, with
        ``front``, ``runnings`` go first (tasks given back to the line, which
        were reserved before what waits). Tasks come in batches already in
        order, so the common case (one priority) costs one comparison per
        batch; only a batch that outranks the end of the line is merged.
        """
        if not runnings:
            return
        waiting = self._waiting
        try:
            if not waiting:
                waiting.extend(runnings)
                return
            if front:
                if _rank(runnings[-1]) <= _rank(waiting[0]):
                    waiting.extendleft(reversed(runnings))
                    return
                merged = sorted([*runnings, *waiting], key=_rank)  # two sorted runs: a linear merge
            else:
                if _rank(waiting[-1]) <= _rank(runnings[0]):
                    waiting.extend(runnings)
                    return
                merged = sorted([*waiting, *runnings], key=_rank)
        except TypeError:  # a backend handing back a naive eta beside aware ones: keep the order tasks came in
            logger.debug("worker %s: cannot order held tasks by due time", self.worker_id, exc_info=True)
            if front:
                waiting.extendleft(reversed(runnings))
            else:
                waiting.extend(runnings)
            return
        waiting.clear()
        waiting.extend(merged)

    def _line_up_reserved(self, runnings: list[_Running]) -> None:
        """``_line_up`` tasks just reserved (or loaded); the sync tasks they outrank come out of their thread batch.

        A thread batch runs its calls one after another in one slot: a task
        of higher priority reserved later would otherwise start only once
        every lower one batched before it had run.
        """
        if not runnings:
            return
        if self._batches and self._suspect is None and self._stopping is not None and not self._stopping.is_set():
            try:
                best = _rank(runnings[0])
                outranked = [(batch, members) for batch, members in self._batches.items() if best < _rank(members[-1])]
            except TypeError:
                outranked = []
            moved: list[_Running] = []
            for batch, members in outranked:
                _withdraw_unstarted(batch, members, moved)
            if moved:
                logger.debug(
                    "worker %s: %d task(s) moved out of sync batches behind a task of higher priority",
                    self.worker_id,
                    len(moved),
                )
                self._line_up(moved, front=True)
        self._line_up(runnings)

    def _take_back_outranking(self) -> None:
        """Line up again the unstarted tasks of thread batches under way that outrank the next one waiting.

        A batch runs its calls one after another in its slot: without this, a
        slot that frees would start a lower task while higher ones wait there
        behind a running call. Members are in rank order, so a batch whose
        first member does not outrank the next waiting task is skipped
        without asking it (the common case: one priority).
        """
        if self._stopping is None or self._stopping.is_set():
            return
        moved: list[_Running] = []
        try:
            first = _rank(self._waiting[0])
            for batch, members in self._batches.items():
                if not _rank(members[0]) < first:
                    continue
                index = batch.next_unstarted()
                if index is None or not _rank(members[index]) < first:
                    continue
                _withdraw_unstarted(batch, members, moved)
            moved.sort(key=_rank)  # from several batches: one line in rank order (stable among equals)
        except TypeError:  # a naive eta beside aware ones: no order to keep (what was taken is lined up below)
            logger.debug("worker %s: cannot order held tasks by due time", self.worker_id, exc_info=True)
        if moved:
            logger.debug(
                "worker %s: %d task(s) moved out of sync batches ahead of a task of lower priority",
                self.worker_id,
                len(moved),
            )
            self._line_up(moved, front=True)

    def _start_waiting(self) -> None:
        """Start waiting tasks while slots are free; consecutive sync tasks share one thread hop.

        None starts while the results waiting to be stored exceed their byte
        budget (backlog.py): the next stored report dispatches again.
        """
        budget = limits._MAX_PENDING_RESULT_BYTES
        while self._waiting and self._executing < self.max_concurrency:
            if self._pending_bytes > budget and self._backlog_full():
                return
            suspect = self._suspect
            if suspect is not None:  # it runs alone (kept only when nothing ran here, or after _SUSPECT_WAIT)
                if suspect not in self._waiting:  # still loading, or started: nothing starts beside it
                    return
                self._waiting.remove(suspect)
                call = self._decode(suspect)
                if call is not None:
                    self._executing += 1
                    suspect.future = asyncio.create_task(
                        self._execute(suspect, call), name=f"sitq-task-{suspect.id}", context=self._task_context()
                    )
                    suspect.future.add_done_callback(_log_escaped)
                    self._end_isolation_later(suspect)
                return
            if self._batches and self.max_concurrency > 1:
                self._take_back_outranking()
            running = self._waiting.popleft()
            if self._lease_ran_out(running):
                continue
            call = self._decode(running)
            if call is None:
                continue
            self._executing += 1
            if _is_async_callable(call[0]) or running.reserved.task.timeout is not None or not self._waiting:
                running.future = asyncio.create_task(
                    self._execute(running, call), name=f"sitq-task-{running.id}", context=self._task_context()
                )
                running.future.add_done_callback(_log_escaped)
                continue
            free = self.max_concurrency - self._executing + 1
            share = min(_MAX_SYNC_BATCH, -(-(len(self._waiting) + 1) // free), self._batch_room())
            batch = [(running, call)]
            while len(batch) < share and self._waiting:
                candidate = self._waiting[0]
                if candidate.reserved.task.timeout is not None:
                    break
                candidate_call = self._decode(self._waiting.popleft())
                if candidate_call is None:
                    continue
                if _is_async_callable(candidate_call[0]):
                    candidate.call = candidate_call
                    self._waiting.appendleft(candidate)
                    break
                batch.append((candidate, candidate_call))
            members = [member for member, _call in batch]
            thread_batch = self._budgeted_batch(
                members, [member_call for _member, member_call in batch], self._on_batch_start(members)
            )
            self._batches[thread_batch] = members
            future = asyncio.create_task(
                self._execute_sync_batch(members, thread_batch),
                name=f"sitq-batch-{running.id}",
                context=self._task_context(),
            )
            future.add_done_callback(_log_escaped)
            for index, member in enumerate(members):
                member.future = future
                member.batch = thread_batch
                member.batch_index = index

    def _task_context(self) -> contextvars.Context:
        """A copy of the context ``start()`` ran in, for one task's asyncio task.

        ``_dispatch`` also runs inside a finishing task's own task; a task
        started from there must not inherit that task's ``current_task()``.
        """
        return self._base_context.copy()

    def _preload(self, runnings: list[_Running]) -> None:
        """Decode ``runnings`` (on a thread). One that fails here is decoded again on the loop by ``_decode``,
        which reports its error: some modules can only be imported on the main thread (``signal.signal``)."""
        for running in runnings:
            task = running.reserved.task
            try:
                serializer = self._serializer_for(task.serializer)
                running.call = checked_call(serializer, serializer.loads_call(task.payload))
            except BaseException:  # tried again (and reported) on the loop
                continue
            if not task.function_name.startswith(_WRAPPERS):  # a partial's name says nothing of its module
                self._loaded.add((task.serializer, task.function_name))

    def _decode(self, running: _Running) -> Call | None:
        """The task's (func, args, kwargs); an unreadable task is reported failed and None returned."""
        if running.call is not None:
            return running.call
        task = running.reserved.task
        try:
            serializer = self._serializer_for(task.serializer)
            # checked: a plugin's loads_call may return anything, and a wrong shape unpacked in the task's
            # asyncio task left it running for good with its slot held
            running.call = checked_call(serializer, serializer.loads_call(task.payload))
        except BaseException as exc:  # the payload's own code ran: anything it raises is this task's failure
            # (SystemExit from a module's import, GeneratorExit or CancelledError from a __reduce__ ...); one
            # escaping here froze the worker with the task held, or ended the process, task after task
            running.started_at = self.backend.now()
            # sitq's own error by its message: the stored text (Result.error, `sitq tasks`) carries no
            # "(context: operation=..., data_type=...)" suffix, which str() adds for a raised error
            detail = (
                str(exc.message)
                if isinstance(exc, SitqError)
                else f"{describe_exception(exc)}"
                if str(exc)
                else (type(exc).__name__)
            )
            message = f"cannot load task {task.function_name or task.id}: {detail}"
            cause = exc.__cause__ if isinstance(exc.__cause__, ImportError) else exc
            module = (task.function_name or "").partition(":")[0]
            missing = cause.name or "" if isinstance(cause, ImportError) else ""
            if missing and (module == missing or module.startswith(missing + ".")) and "importable" not in message:
                message = (
                    f"cannot load task {task.function_name}: module {missing!r} is not importable here "
                    f"(is it on the worker's working directory or PYTHONPATH?): "
                    f"{exc.message if isinstance(exc, SitqError) else exc}"
                )
            # a module or function missing here may be there on a worker of a newer (or older) deploy: that
            # failure follows max_retries like any other; a payload that cannot load anywhere never retries
            outcome = self._failure(running, message, _format(exc), retry=_missing_here(exc))
            self._outcomes_put(running, outcome, {"error": exc, "duration": 0.0})
            return None
        return running.call
