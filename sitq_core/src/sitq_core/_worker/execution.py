"""Running one task: decode it, call it (on the loop, or in a thread batch), and turn its end into an outcome.

Success, failure with or without a retry, a timeout, a cancel: each becomes an ``Outcome`` queued
for the exchange loop to report, and the task's slot is freed.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import contextvars
import functools
import inspect
import logging
import math
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from .. import checks
from ..bounded import within
from ..config import resolve_serializer
from ..current import running_as, set_current
from ..errors import SerializationError, SitqError
from ..models import Outcome
from ..plugins import get_plugin_manager
from ..serializers import Serializer, checked_bytes
from ..taskthreads import TaskThreads
from ..thread_batch import Call, CallResult, TaskExit, ThreadBatch, call_guarded
from .aio import _bounded, _resolve
from .calls import _call_marked, _DeadlinePassed, _drop_awaitable, _is_async_callable
from .delays import retry_delay
from .failures import _describe, _format, _should_retry, _task_error
from .limits import _BATCH_WATCH_AFTER
from .log import logger
from .running import _current_task_of, _names, _Running
from .state import WorkerState


def _ignore() -> None:
    """A batch's callback once it is over (the one it had refers back to it)."""


def _log_start(running: _Running, worker_id: str) -> None:
    """The DEBUG line of a task's start (callers check the level first: nothing is built at the default)."""
    task = running.reserved.task
    logger.debug(
        "worker %s: task %s (%s) started on queue %r, attempt %d",
        worker_id,
        task.id,
        checks.one_log_line(task.function_name),
        task.queue,
        task.attempts,
    )


class Executing(WorkerState):
    """Runs tasks and turns how they ended into outcomes."""

    if TYPE_CHECKING:

        def _loop_ending(self) -> bool: ...

        def _line_up(self, runnings: list[_Running], *, front: bool = False) -> None: ...

        async def _after_tear_down(self) -> None: ...

        def _begin_tear_down(self) -> None: ...

        def _poke(self) -> None: ...

        def _dispatch(self) -> None: ...

        def _let_expired_go(self, running: _Running) -> None: ...

    def _serializer_for(self, name: str) -> Serializer:
        serializer = self._serializers.get(name)
        if serializer is not None:
            return serializer
        if self._only_serializer is not None:
            raise SerializationError(
                f"task was written by serializer {name!r}, but this worker accepts only {self._only_serializer.name!r}",
                operation="loads_call",
                data_type=name,
            )
        if not name.strip():
            raise SerializationError(
                "task was written by a serializer without a name (''): run it on a worker given that same "
                "serializer (Worker(..., serializer=...)), and give the serializer class a name for new tasks",
                operation="loads_call",
                data_type=name,
            )
        try:
            serializer = resolve_serializer(name)
        except SitqError as exc:
            raise SerializationError(
                f"task was written by serializer {name!r}, which is not available here: {exc.message}",
                operation="loads_call",
                data_type=name,
                cause=exc,
            ) from exc
        self._serializers[name] = serializer
        return serializer

    def _started(self, running: _Running) -> None:
        self._last_start = time.monotonic()
        running.started_at = self.backend.now()
        if logger.isEnabledFor(logging.DEBUG):  # free at the default level: the drain rate is benchmarked
            _log_start(running, self.worker_id)
        try:  # an observer (or a plugin registry in trouble) must not keep the task from running and reporting
            manager = get_plugin_manager()
            if manager.has_observers("sitq_task_started"):
                reserved = running.reserved
                manager.notify(
                    "sitq_task_started", task=reserved.task, attempt=reserved.attempt, worker_id=self.worker_id
                )
        except Exception:
            logger.exception("worker %s: notifying sitq_task_started observers failed", self.worker_id)

    async def _execute(self, running: _Running, call: Call) -> None:
        """Run one task (async on the loop, sync in the pool), report its outcome and free its slot.

        Whatever the worker's own steps around the call raise fails that task
        (logged at ERROR): escaping into its asyncio task, it left the task
        ``running`` for good, its lease renewed and its slot held.
        """
        try:
            ended = await self._run_task(running, call)
        except asyncio.CancelledError as exc:
            if running.settled or self._loop_ending():  # stop() or the loop's end: _run_task freed the slot
                raise
            self._log_broken([running], exc)
            ended = self._broken(running, exc)
        except BaseException as exc:
            self._log_broken([running], exc)
            ended = self._broken(running, exc)
        if ended is None:
            self._report_nothing(running)
        else:
            self._report(running, *ended)

    def _log_broken(self, runnings: list[_Running], exc: BaseException) -> None:
        """Say at once (ERROR, with its traceback) that the worker's own steps around these tasks raised."""
        logger.error(
            "worker %s: the worker itself failed around task(s) %s: %s; they fail (or retry) with that error",
            self.worker_id,
            _names(runnings),
            _describe(exc),
            exc_info=exc,
        )

    def _broken(self, running: _Running, exc: BaseException) -> tuple[Outcome, dict[str, Any]] | None:
        """The failure of a task whose run the worker itself broke off with ``exc`` (None: nothing to report).

        It follows the task's retry policy like its own exception would (the
        next attempt may not meet it); a task ``stop()`` gave back, or one
        already reported, is left as it is.
        """
        if running.settled or running.outcome_queued:
            return None
        message = f"the worker failed around this task's call (not an error of the task): {_describe(exc)}"
        try:
            outcome = self._failure(running, message, _format(exc), retry=True)
        except Exception:  # the backend's clock itself, perhaps: stamped by this machine's then
            logger.exception("worker %s: failing task %s failed", self.worker_id, running.id)
            now = datetime.now(UTC)
            outcome = Outcome(
                running.reserved.id,
                running.reserved.lease_token,
                "failed",
                error=checks.escaped_for_store(message),
                traceback=checks.escaped_for_store(_format(exc)),
                started_at=running.started_at or now,
                finished_at=now,
            )
        return outcome, {"error": exc, "duration": 0.0}

    async def _run_task(self, running: _Running, call: Call) -> tuple[Outcome, dict[str, Any]] | None:
        """Run one task; how it ended (None: nothing to report), or CancelledError once it freed its slot."""
        task = running.reserved.task
        func, args, kwargs = call
        if running.cancel_asked():  # cancelled between its dispatch and its first step
            return self._cancelled(running), {"error": "cancelled", "duration": 0.0}
        describe = functools.partial(_current_task_of, running.reserved, self.worker_id)
        set_current(describe)  # this asyncio task's own context: current_task() inside an async task
        self._started(running)  # (observers of the start see it too)
        running.on_loop = _is_async_callable(func)
        if not running.on_loop:
            func = running_as(describe, func)  # ... and inside a sync one, in its thread
        began = time.perf_counter()
        call_began = [began]  # moved to when a thread starts a sync call with a timeout
        try:
            value = await self._call(func, args, kwargs, task.timeout, call_began, running=running)
        except asyncio.CancelledError as exc:
            current = asyncio.current_task()
            if running.settled:  # stop() abandoned it (and reports or releases it): report nothing here
                self._report_nothing(running)
                raise
            if running.cancel_asked():
                outcome, extra = (
                    self._cancelled(running),
                    {"error": "cancelled", "duration": time.perf_counter() - began},
                )
            elif self._loop_ending():  # cancelled with every task of the loop: given back, not failed
                self._begin_tear_down()  # first: the slot freed next must not start a waiting task
                self._report_nothing(running)
                await self._after_tear_down()
                raise
            else:  # the task raised CancelledError itself (or cancelled its own asyncio task): its failure
                if current is not None and current.cancelling():
                    current.uncancel()
                outcome = self._failed_with(running, exc)
                extra = {"error": exc, "duration": time.perf_counter() - began}
        except TimeoutError as exc:
            elapsed = time.perf_counter() - call_began[0]
            error: BaseException = exc
            # a sync call's deadline is judged in _call (by its thread's stamps); an awaited one's here
            passed = isinstance(exc, _DeadlinePassed) or (
                running.on_loop and task.timeout is not None and elapsed >= task.timeout * 0.999
            )
            if passed and task.timeout is not None:
                message = f"task timed out after {task.timeout:g} s"
                error = TimeoutError(message)  # what observers see: the worker's deadline, not a bare error
                if not isinstance(exc, _DeadlinePassed):  # sitq's private marker is no part of the traceback
                    error.__cause__ = exc
            else:
                message = _describe(exc)
            # the traceback ends with the deadline ("TimeoutError: task timed out after 2 s"), not a bare
            # TimeoutError from inside asyncio: its last line is what people print
            outcome = self._failure(running, message, _format(error, from_task=True), retry=_should_retry(exc))
            extra = {"error": error, "duration": elapsed}
        except BaseException as exc:  # any other exception is the task's own (KeyboardInterrupt included)
            error = _task_error(exc)
            outcome = self._failed_with(running, error)
            extra = {"error": error, "duration": time.perf_counter() - began}
        else:
            duration = time.perf_counter() - began
            self._mean_run_time += (duration - self._mean_run_time) * 0.2
            outcome, extra = self._success(running, value, duration)
        if running.settled and outcome.kind != "success":
            # stop() abandoned it and its cancel ended in an error (a client library cut off mid-call):
            # the stop's doing, not the task's; _abandon gives it back to run again, no attempt used
            return None
        if running.cancel_asked() and outcome.kind != "cancelled":  # cancelled while it ran on (a sync call)
            outcome, extra = self._cancelled(running), {"error": "cancelled", "duration": time.perf_counter() - began}
        return outcome, extra

    async def _call(
        self,
        func: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        timeout: float | None,
        began: list[float] | None = None,
        *,
        running: _Running,
    ) -> Any:
        task_id = running.id
        if _is_async_callable(func):
            if timeout is None:
                return await func(*args, **kwargs)
            return await _bounded(func(*args, **kwargs), timeout)
        loop = asyncio.get_running_loop()
        deadline = math.inf  # perf_counter time the timeout runs out (a returned awaitable gets what is left)
        if timeout is None:
            value = await loop.run_in_executor(self._pool, call_guarded, func, args, kwargs)
        else:
            # The timeout counts from when a thread starts the call (a thread still held by an
            # earlier timed-out task must not time this one out before it ran), as the thread itself
            # stamped it: an async task blocking the loop must not stretch it. A thread cannot be
            # killed: the task is reported as timed out while its thread runs on until it returns.
            started: asyncio.Future[None] = loop.create_future()
            stamps = [0.0, math.inf]  # set in the thread: when the call began, when it returned

            def mark_started() -> None:
                loop.call_soon_threadsafe(_resolve, started)

            assert self._pool is not None
            thread_call = self._pool.submit(_call_marked, mark_started, stamps, func, args, kwargs)
            future = asyncio.wrap_future(thread_call)
            try:
                await asyncio.wait({started, future}, return_when=asyncio.FIRST_COMPLETED)
            except asyncio.CancelledError:
                future.cancel()  # not started yet: it never will be
                raise
            if began is not None:
                began[0] = stamps[0]
            deadline = stamps[0] + timeout
            value = await self._within_deadline(future, thread_call, stamps, deadline, task_id)
        if inspect.isawaitable(value):
            # A sync callable handed back an awaitable (a naive decorator over an async def): from here its
            # task runs on the loop like an async one, so a cancel request interrupts it (the heartbeat
            # decides by on_loop, what runs now, not by the callable's signature). One that came while the
            # sync part ran in its thread: the awaitable is never started.
            running.on_loop = True
            if running.cancel_asked():
                _drop_awaitable(value)
                raise asyncio.CancelledError
            if timeout is None:
                return await value
            left = deadline - time.perf_counter()  # the timeout covers the sync part and what it returned
            if left <= 0:
                _drop_awaitable(value)
                raise _DeadlinePassed
            value = await _bounded(value, left)
        return value

    async def _within_deadline(
        self,
        future: asyncio.Future[Any],
        thread_call: concurrent.futures.Future[Any],
        stamps: list[float],
        deadline: float,
        task_id: str,
    ) -> Any:
        """What a sync call returned in its thread by ``deadline``; ``_DeadlinePassed`` when it had not.

        The docs' rule: timed out when the deadline passed before the function
        returned (the thread's own stamps decide). A loop blocked past the
        deadline times the task out as soon as it answers again, even when the
        call returned meanwhile: its value (or error) came too late.
        """
        try:
            value = await within(future, max(deadline - time.perf_counter(), 0.0))
        except TimeoutError:
            if not thread_call.done():  # the deadline passed with the call still in its thread
                self._retire_pool()
                self._outlive(thread_call, task_id)
                raise _DeadlinePassed from None
            if stamps[1] >= deadline:
                raise _DeadlinePassed from None
            # in time: the call's own TimeoutError (or its end crossed the deadline's cancel): what it gave
            value = thread_call.result()
        except asyncio.CancelledError:
            raise
        except BaseException:  # the call's own error: counted only when it came before the deadline
            if stamps[1] >= deadline:
                raise _DeadlinePassed from None
            raise
        if stamps[1] >= deadline:  # returned, but past its deadline (the loop was blocked until now)
            _drop_awaitable(value)
            raise _DeadlinePassed
        return value

    def _retire_pool(self) -> None:
        """A timed-out sync call keeps its thread: later calls get a fresh pool instead of waiting behind it.

        The old pool's other threads finish what they hold and end; the busy
        one ends when its call returns (``sitq worker`` does not wait for it).
        """
        old = self._pool
        self._pool = TaskThreads(max_workers=self.max_concurrency, thread_name_prefix="sitq-task")
        if old is not None:
            old.shutdown(wait=False)

    def _on_batch_start(self, members: list[_Running]) -> Callable[[int, float], None]:
        """A callback for the pool thread: record when each member starts, make it current_task() there
        (and tell observers, on the loop)."""
        loop = asyncio.get_running_loop()
        base_now, base_perf = self.backend.now(), time.perf_counter()
        notify = get_plugin_manager().has_observers("sitq_task_started")
        debug = logger.isEnabledFor(logging.DEBUG)  # asked once per batch, not per task
        worker_id = self.worker_id

        def on_start(index: int, began: float) -> None:
            self._last_start = time.monotonic()
            running = members[index]
            # current_task() in the call that starts now, on this thread (made here, off the loop's thread)
            set_current(functools.partial(_current_task_of, running.reserved, worker_id))
            running.started_at = base_now + timedelta(seconds=max(began - base_perf, 0.0))
            if debug:
                _log_start(running, worker_id)
            if notify:
                loop.call_soon_threadsafe(self._notify_started, running)

        return on_start

    def _notify_started(self, running: _Running) -> None:
        reserved = running.reserved
        get_plugin_manager().notify(
            "sitq_task_started", task=reserved.task, attempt=reserved.attempt, worker_id=self.worker_id
        )

    async def _execute_sync_batch(self, members: list[_Running], batch: ThreadBatch) -> None:
        """``_run_sync_batch``; what the worker's own steps raise fails the members not reported yet.

        Escaping into the batch's asyncio task, it left them ``running`` for good.
        """
        try:
            await self._run_sync_batch(members, batch)
        except asyncio.CancelledError:
            raise  # _abandon reported or released every member, or the loop's end gives them back
        except BaseException as exc:
            left = [member for member in members if member.batch is batch and not member.settled]
            self._log_broken(left or members, exc)
            for member in left:
                ended = self._broken(member, exc)
                if ended is not None:
                    self._settle(member, *ended)
                member.batch = None

    async def _run_sync_batch(self, members: list[_Running], batch: ThreadBatch) -> None:
        """Run several sync tasks one after another in one pool thread, reporting each as it returns.

        A batch that ends within ``_BATCH_WATCH_AFTER`` reports its members as
        it ends (one loop wake-up for the whole run); one that runs longer is
        watched from then on, and each member is reported as it returns: a
        finished task must not stay ``running`` (and run again after a crash)
        behind a slow or hung task later in its batch. Members that never
        started were withdrawn by a cancel request (and reported then) or given
        back by ``stop()``; members ``_abandon`` already reported are settled:
        nothing more is reported for them here.
        """
        loop = asyncio.get_running_loop()
        context = contextvars.copy_context()  # the batch's own, for the reports made between its steps
        collected = 0  # members[:collected] have been looked at
        awaitables: list[tuple[_Running, CallResult]] = []  # returned an awaitable: finished on the loop at the end
        over = False

        def collect(entries: list[CallResult | None]) -> None:
            nonlocal collected
            requeued: list[_Running] = []
            for entry in entries:
                running = members[collected]
                collected += 1
                if running.batch is not batch:  # taken out before it started: it runs (or waits) elsewhere
                    continue
                # skipped in the thread: its lease had run out, or results waiting to be stored filled their
                # byte budget (backlog.py) ...
                if entry is None and not running.settled:
                    if time.monotonic() < running.lease_until:  # ... but its lease holds: it waits for a slot
                        running.batch = None
                        requeued.append(running)
                    else:
                        self._let_expired_go(running)
                    continue
                if entry is None or running.settled:
                    continue
                try:
                    if not self._settle_batch_member(running, entry):
                        awaitables.append((running, entry))
                except Exception as exc:  # the worker's own step (often run as a loop callback): this task fails
                    self._log_broken([running], exc)
                    ended = self._broken(running, exc)
                    if ended is not None:
                        self._settle(running, *ended)
            if requeued:
                self._line_up(requeued, front=True)  # first in line among equals, in their order
                if not over:  # the batch still runs: a free slot (if any) may start them now
                    self._dispatch()

        def report_returned() -> None:  # on the loop
            if not over:
                collect(batch.returned_since(collected))

        def returned() -> None:  # in the pool thread
            with contextlib.suppress(RuntimeError):  # the loop has closed: nothing is reported any more
                loop.call_soon_threadsafe(report_returned, context=context)

        def watch() -> None:
            if not over:
                batch.watch(returned)
                report_returned()

        timer = loop.call_later(_BATCH_WATCH_AFTER, watch)
        try:
            ran: list[CallResult | None] = await loop.run_in_executor(self._pool, batch.run)
        except asyncio.CancelledError:
            self._batches.pop(batch, None)
            over = True
            timer.cancel()
            # cancelled by _abandon, which reported or released every member, or by the end of the event
            # loop: then they are given back, and the slot freed here must not start a waiting task
            ending = self._loop_ending() and not all(member.settled for member in members)
            if ending:
                self._begin_tear_down()
            self._release_slot()
            if ending:
                await self._after_tear_down()
            raise
        except BaseException:  # the batch's own machinery (a task's error is caught in its thread): members fail
            self._batches.pop(batch, None)
            over = True
            timer.cancel()
            self._release_slot()
            raise
        timer.cancel()
        self._batches.pop(batch, None)
        try:
            over = True  # the rest is collected here: the slot is freed (and the requeued started) below
            collect(ran[collected:])
            for running, entry in awaitables:
                if running.settled:
                    continue
                value = entry[2]  # an awaitable returned by a sync function: finish it on the loop
                if running.cancel_requested:  # cancelled before its turn: it never starts
                    _drop_awaitable(value)
                    self._settle(running, self._cancelled(running), {"error": "cancelled", "duration": entry[1]})
                    continue
                set_current(functools.partial(_current_task_of, running.reserved, self.worker_id))  # as its own
                running.on_loop = True  # awaited on the loop now: a cancel request interrupts it (the heartbeat)
                try:
                    value = await value
                except asyncio.CancelledError as exc:
                    if running.settled:
                        raise  # _abandon cancelled the batch: it reports or releases every member
                    if running.cancel_asked():  # the heartbeat cancelled the batch's task for this member
                        current = asyncio.current_task()
                        if current is not None and current.cancelling():
                            current.uncancel()  # the next member's awaitable must not see that cancel
                        self._settle(running, self._cancelled(running), {"error": "cancelled", "duration": entry[1]})
                        continue
                    error = _task_error(exc)
                    self._settle(running, self._failed_with(running, error), {"error": error, "duration": entry[1]})
                    continue
                except BaseException as exc:  # the awaitable's own failure, whatever its type
                    error = _task_error(exc)
                    outcome = self._failed_with(running, error)
                    self._settle(running, outcome, {"error": error, "duration": entry[1]})
                else:
                    self._settle(running, *self._success(running, value, entry[1]))
                finally:
                    running.on_loop = False
        finally:
            over = True
            # the batch holds what each call returned: freed now, by its reference count, not once the last of
            # these outcomes is stored or the cyclic collector comes by (big results were held twice, raw and
            # serialised): its members let go of it, and it of the callback that refers back to it
            batch.watch(_ignore)
            for member in members:
                if member.batch is batch and member.settled:
                    member.batch = None
            self._release_slot()

    def _settle_batch_member(self, running: _Running, entry: CallResult) -> bool:
        """Report a batch member from what its call returned; False when that is an awaitable still to run."""
        _began, duration, value, error = entry
        self._mean_run_time += (duration - self._mean_run_time) * 0.2
        if running.cancel_requested:
            if error is None and not running.on_loop:  # an awaitable it handed back is never started
                _drop_awaitable(value)
            outcome, extra = self._cancelled(running), {"error": "cancelled", "duration": duration}
        elif error is not None:
            error = _task_error(error)
            outcome = self._failed_with(running, error)
            extra = {"error": error, "duration": duration}
        elif inspect.isawaitable(value):
            return False
        else:
            outcome, extra = self._success(running, value, duration)
        self._settle(running, outcome, extra)
        return True

    def _settle(self, running: _Running, outcome: Outcome, extra: dict[str, Any]) -> None:
        running.settled = True
        self._outcomes_put(running, outcome, extra)

    def _success(self, running: _Running, value: Any, duration: float) -> tuple[Outcome, dict[str, Any]]:
        reserved = running.reserved
        serializer = self._serializer_for(reserved.task.serializer)
        try:
            # a plugin's dumps may return str or None: stored, the value read back as a failure, or was lost
            payload = None if value is None else checked_bytes(serializer, serializer.dumps(value), "dumps")
        except BaseException as exc:  # whatever pickling raises (SystemExit, CancelledError) fails its task only
            # sitq's own error by its message: its "(context: ...)" tail is for logs, not the task's error
            described = str(exc.message) if isinstance(exc, SitqError) else _describe(exc)
            message = f"cannot serialise the return value: {described}"
            return self._failure(running, message, _format(exc), retry=False), {"error": exc, "duration": duration}
        outcome = Outcome(
            reserved.id,
            reserved.lease_token,
            "success",
            value=payload,
            started_at=running.started_at,
            finished_at=self.backend.now(),
        )
        return outcome, {"duration": duration, "serializer": serializer.name}

    def _cancelled(self, running: _Running) -> Outcome:
        reserved = running.reserved
        return Outcome(
            reserved.id,
            reserved.lease_token,
            "cancelled",
            error="cancelled",
            started_at=running.started_at,
            finished_at=self.backend.now(),
        )

    def _failed_with(self, running: _Running, error: BaseException) -> Outcome:
        """The outcome of a task that raised ``error`` (a retry when its policy allows one).

        A task's ``sys.exit(3)`` reads "the task called sys.exit(3)", and its
        traceback is the ``SystemExit``'s own, ending "SystemExit: 3": it ended
        with sitq's private ``TaskExit`` wrapped around it, a class users
        cannot import or catch.
        """
        shown = error.__cause__ if isinstance(error, TaskExit) and isinstance(error.__cause__, SystemExit) else error
        return self._failure(running, _describe(error), _format(shown, from_task=True), retry=_should_retry(error))

    def _failure(self, running: _Running, error: str, traceback: str, *, retry: bool) -> Outcome:
        # one odd message must not fail a whole batch
        error, traceback = checks.escaped_for_store(error), checks.escaped_for_store(traceback)
        reserved = running.reserved
        task = reserved.task
        finished = self.backend.now()
        if retry and reserved.attempt <= task.max_retries:
            delay = retry_delay(task.retry_backoff, reserved.attempt)
            return Outcome(
                reserved.id,
                reserved.lease_token,
                "retry",
                error=error,
                traceback=traceback,
                retry_at=finished + timedelta(seconds=delay),
                started_at=running.started_at,
                finished_at=finished,
            )
        return Outcome(
            reserved.id,
            reserved.lease_token,
            "failed",
            error=error,
            traceback=traceback,
            started_at=running.started_at,
            finished_at=finished,
        )

    def _outcomes_put(self, running: _Running, outcome: Outcome, extra: dict[str, Any]) -> None:
        running.outcome_queued = True
        self._outcomes.append((running, outcome, extra))
        value = outcome.value
        size = 0 if value is None else len(value)
        self._pending_bytes += size  # bounds what waits to be stored (backlog.py)
        self._result_size = size if size > self._result_size else self._result_size * 0.9
        self._poke()

    def _release_slot(self) -> None:
        self._executing -= 1
        self._dispatch()

    def _outlive(self, thread_call: concurrent.futures.Future[Any], task_id: str) -> None:
        """Book-keeping for a timed-out sync call whose thread runs on until the function returns.

        Hung calls of up to ``max_concurrency`` different tasks do not hold a
        slot, so a few hung tasks do not stop the worker (the retries of one
        hung task add at most its ``max_retries`` threads); a hung call of one
        more task keeps its slot until it returns, so hung calls cannot pile up
        threads without bound. A slot held so is not reserved for
        (``_hung_slots`` in the exchange loop): tasks wait in the store, free
        for other workers, not here.
        """
        loop = asyncio.get_running_loop()
        holds_slot = task_id not in self._outliving and len(set(self._outliving)) >= self.max_concurrency
        if holds_slot:
            self._executing += 1
            self._hung_slots += 1
        self._outliving.append(task_id)
        run = self._stopped  # this run's own: a restarted worker counts afresh

        def release() -> None:
            if self._stopped is not run:
                return
            self._outliving.remove(task_id)
            if holds_slot:
                self._hung_slots -= 1
                self._release_slot()
            else:
                self._dispatch()

        def returned(_call: concurrent.futures.Future[Any]) -> None:
            with contextlib.suppress(RuntimeError):  # the loop has ended: nothing left to start
                loop.call_soon_threadsafe(release)

        thread_call.add_done_callback(returned)

    def _report(self, running: _Running, outcome: Outcome, extra: dict[str, Any]) -> None:
        self._outcomes_put(running, outcome, extra)
        self._release_slot()

    def _report_nothing(self, running: _Running) -> None:
        self._release_slot()
