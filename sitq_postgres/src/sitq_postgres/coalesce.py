"""Result reads of many waiters coalesced into one query per loop turn.

``await asyncio.gather(*(queue.get_result(i) for i in ids))`` over 50,000 ids
made 50,000 single-row reads at once, and every waiter's safety re-read
another one every few seconds: the pool's connections went to waiters while
a worker sharing the backend waited for one. Reads asked for in the same
loop turn are now served by one ``task_id = ANY($1)`` query (in chunks), so
waiting costs one query per turn, not one per waiter.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence

from sitq_core.models import Result

__all__ = ["ResultReads"]

_CHUNK = 1000  # ids per query


class ResultReads:
    """The pending reads of one event loop and the task that serves them."""

    def __init__(self, fetch: Callable[[Sequence[str]], Awaitable[dict[str, Result]]]) -> None:
        self._fetch = fetch
        self._pending: dict[str, list[asyncio.Future[Result | None]]] = {}
        self._reader: asyncio.Task[None] | None = None

    async def read(self, task_id: str) -> Result | None:
        """The stored result of ``task_id`` (None when there is none yet), read with the others of this turn."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Result | None] = loop.create_future()
        self._pending.setdefault(task_id, []).append(future)
        if self._reader is None:
            self._reader = loop.create_task(self._serve(), name="sitq-postgres-result-reads")
        return await future

    async def _serve(self) -> None:
        batch: dict[str, list[asyncio.Future[Result | None]]] = {}
        try:
            while self._pending:
                batch, self._pending = self._pending, {}
                ids = [task_id for task_id, futures in batch.items() if any(not f.done() for f in futures)]
                for start in range(0, len(ids), _CHUNK):
                    chunk = ids[start : start + _CHUNK]
                    try:
                        found = await self._fetch(chunk)
                    except Exception as exc:
                        for task_id in chunk:
                            _settle(batch[task_id], None, exc)
                        continue
                    for task_id in chunk:
                        _settle(batch[task_id], found.get(task_id), None)
        except BaseException:  # cancelled (the loop is closing): nobody gets an answer
            for futures in (*batch.values(), *self._pending.values()):
                for future in futures:
                    future.cancel()
            self._pending = {}
            raise
        finally:
            self._reader = None


def _settle(futures: list[asyncio.Future[Result | None]], result: Result | None, exc: Exception | None) -> None:
    for future in futures:
        if future.done():
            continue
        if exc is not None:
            future.set_exception(exc)
        else:
            future.set_result(result)
