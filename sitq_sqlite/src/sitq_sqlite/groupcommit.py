"""Group commit: single enqueues that arrive together share one transaction (one fsync).

A lone ``await queue.enqueue(...)`` is cheapest as one autocommit INSERT run
right away (see ``inline.py``). But a server handling many requests at once
calls ``enqueue`` from many coroutines (or threads, through
``SyncTaskQueue``) at the same moment, and one fsync per call caps all of
them together at the disk's commit rate. So when other work is already
waiting to run on the event loop, an enqueue joins a *group* instead: the
group is written one loop turn later, after every ready coroutine has had
the chance to add its task, as one transaction. While a group is being
written, later callers form the next group.

Each caller still gets its own outcome: when a group is refused for one
task's sake (a duplicate id), its tasks are written again one by one so that
each caller sees the error of its own task and nothing else. A failure of the
store itself (locked past ``busy_timeout``, a disk error) reaches every caller
of the group at once, after one ``busy_timeout``, not one per caller. A caller
cancelled before its group is written is left out of it; one cancelled
while the group is being written may find its task stored (as after a
cancelled network call to any queue).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence

from sitq_core.models import Task

__all__ = ["GroupCommit", "others_ready"]

log = logging.getLogger("sitq.sqlite")

_Waiting = tuple[Task, "asyncio.Future[str]"]


def others_ready(loop: asyncio.AbstractEventLoop) -> bool:
    """True when other callbacks wait to run on ``loop`` (so a group would gain company).

    Reads the ready queue of asyncio's own event loops; a loop without one
    (uvloop) reports False and every enqueue is written at once, as before.
    """
    return bool(getattr(loop, "_ready", None))


class GroupCommit:
    """The pending group of one event loop and the task that writes it."""

    def __init__(
        self,
        write_one: Callable[[Task], Awaitable[str]],
        write_many: Callable[[Sequence[Task]], Awaitable[list[str]]],
        store_failure: Callable[[Exception], bool],
    ) -> None:
        self._write_one = write_one
        self._write_many = write_many
        self._store_failure = store_failure  # True: the store failed (same for every task), not one task
        self._pending: list[_Waiting] = []
        self._writer: asyncio.Task[None] | None = None

    @property
    def busy(self) -> bool:
        """True while a group waits or is being written: later enqueues must queue behind it."""
        return self._writer is not None

    async def settle(self) -> None:
        """Wait until the groups pending now are written (``close()`` must not strand them)."""
        writer = self._writer
        if writer is not None and writer is not asyncio.current_task():
            await asyncio.wait({writer})

    async def submit(self, task: Task) -> str:
        """Add ``task`` to the next group and return its id once that group is committed."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[str] = loop.create_future()
        self._pending.append((task, future))
        if self._writer is None:
            self._writer = loop.create_task(self._write_groups(), name="sitq-sqlite-group-commit")
        return await future

    async def _write_groups(self) -> None:
        try:
            while self._pending:
                group = [entry for entry in self._pending if not entry[1].done()]
                self._pending = []
                if group:
                    await self._write(group)
        except BaseException:
            for _task, future in self._pending:
                future.cancel()
            self._pending = []
            raise
        finally:
            self._writer = None

    async def _write(self, group: list[_Waiting]) -> None:
        if len(group) > 1:
            try:
                ids = await self._write_many([task for task, _future in group])
            except asyncio.CancelledError:
                _cancel(group)
                raise
            except Exception as exc:
                if not self._store_failure(exc):  # one task's own fault (a taken id, bad text): find whose
                    log.debug("a group of %d enqueues was refused; writing them one by one", len(group))
                else:  # the store's fault (locked past busy_timeout, I/O): the same for every task
                    for _task, future in group:
                        if not future.done():
                            future.set_exception(exc)
                    return
            else:
                for (_task, future), task_id in zip(group, ids, strict=True):
                    if not future.done():
                        future.set_result(task_id)
                return
        for index, (task, future) in enumerate(group):
            if future.done():
                continue
            try:
                task_id = await self._write_one(task)
            except asyncio.CancelledError:
                _cancel(group[index:])
                raise
            except Exception as exc:
                if not future.done():
                    future.set_exception(exc)
            else:
                if not future.done():
                    future.set_result(task_id)


def _cancel(group: list[_Waiting]) -> None:
    for _task, future in group:
        future.cancel()
