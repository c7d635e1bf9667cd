"""PostgreSQL behind a stalled network: the connection stays open, but no byte gets through.

That is what a partition, a dead NAT entry or a frozen load balancer looks
like to a client. Calls must still obey the caller's deadline, and a worker
must still stop, instead of waiting for the operating system's TCP timeout.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import asyncpg  # type: ignore[import-untyped]
import pytest

import sitq
import sitq_core._worker.limits
from sitq import Worker
from sitq_postgres import PostgresBackend

import sitq_test_tasks as tasks
from sitq_test_helpers import wait_until


class StallingRelay:
    """A TCP relay to the PostgreSQL server that can stop passing bytes while keeping every socket open."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.stalled = threading.Event()  # what the tests read
        self.loop = asyncio.new_event_loop()
        self.flowing = asyncio.Event()  # what the relay waits on (set and cleared on its own loop)
        self.flowing.set()
        self.held = 0  # chunks and new connections held back by a stall (written on the relay's loop only)
        self.cut_at_query = False  # drop a connection as its client sends a statement (Parse or Query)
        ready = threading.Event()
        self.port = 0

        def serve() -> None:
            asyncio.set_event_loop(self.loop)
            server = self.server = self.loop.run_until_complete(asyncio.start_server(self._handle, "127.0.0.1", 0))
            self.port = server.sockets[0].getsockname()[1]
            ready.set()
            self.loop.run_forever()

        self.thread = threading.Thread(target=serve, daemon=True)
        self.thread.start()
        assert ready.wait(10)

    async def _wait_flowing(self) -> None:
        """Wait out a stall, counted in ``held`` meanwhile."""
        if self.flowing.is_set():
            return
        self.held += 1
        try:
            await self.flowing.wait()
        finally:
            self.held -= 1

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, client: bool = False) -> None:
        try:
            while data := await reader.read(65536):
                await self._wait_flowing()
                if client and self.cut_at_query and data[:1] in (b"P", b"Q"):
                    break  # the session ends under the statement (the startup and SSL requests start with 0)
                writer.write(data)
                await writer.drain()
        except OSError:
            pass
        finally:
            writer.close()

    async def _handle(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        await self._wait_flowing()  # a new connection gets no further than the handshake either
        server_reader, server_writer = await asyncio.open_connection(*self.target)
        await asyncio.gather(
            self._pipe(client_reader, server_writer, client=True), self._pipe(server_reader, client_writer)
        )

    def stall(self) -> None:
        self.stalled.set()
        self.loop.call_soon_threadsafe(self.flowing.clear)

    def flow(self) -> None:
        self.stalled.clear()
        self.loop.call_soon_threadsafe(self.flowing.set)

    def cut(self) -> None:
        """The server goes away: open connections drop, and new ones are refused."""

        async def cut_off() -> None:
            self.server.close()
            for task in [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]:
                task.cancel()

        asyncio.run_coroutine_threadsafe(cut_off(), self.loop).result(10)

    def restore(self) -> None:
        """The server is back after a ``cut``: the relay takes connections again, on the same port."""

        async def reopen() -> None:
            self.server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)

        asyncio.run_coroutine_threadsafe(reopen(), self.loop).result(10)

    def close(self) -> None:
        async def shut_down() -> None:
            tasks = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        self.flow()
        asyncio.run_coroutine_threadsafe(shut_down(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture
def relay(pg_dsn: str) -> Iterator[StallingRelay]:
    parts = urlsplit(pg_dsn)
    relay = StallingRelay(parts.hostname or "127.0.0.1", parts.port or 5432)
    yield relay
    relay.close()


def relayed_url(pg_dsn: str, relay: StallingRelay, schema: str) -> str:
    parts = urlsplit(pg_dsn)
    return f"postgresql://{parts.username or 'postgres'}@127.0.0.1:{relay.port}{parts.path}?schema={schema}"


def stall_for(relay: StallingRelay, seconds: float) -> threading.Timer:
    """Stall the network now and let it flow again after ``seconds`` (the test's own upper bound)."""
    relay.stall()
    timer = threading.Timer(seconds, relay.flow)
    timer.start()
    return timer


@pytest.mark.asyncio
async def test_a_call_obeys_the_callers_deadline_on_a_stalled_network(
    pg_dsn: str, pg_schema: str, relay: StallingRelay
) -> None:
    async with sitq.connect(relayed_url(pg_dsn, relay, pg_schema)) as queue:
        await queue.counts()  # the pool now holds an idle connection
        timer = stall_for(relay, 15)
        try:
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(queue.counts(), 1)
            # the deadline held while the network was still stalled (before: about 20 s, the TCP timeout)
            assert relay.stalled.is_set(), "counts() ended only when the network came back"
        finally:
            timer.cancel()
            relay.flow()
        assert (await queue.counts())["queued"] == 0  # the pool recovers once bytes flow again


@pytest.mark.asyncio
async def test_worker_stop_returns_on_a_stalled_network(
    pg_dsn: str, pg_schema: str, relay: StallingRelay, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sitq_core._worker.limits, "_FINAL_REPORT_TIMEOUT", 1.0)  # keep the test short
    async with sitq.connect(relayed_url(pg_dsn, relay, pg_schema)) as queue:
        worker = Worker(queue.backend, poll_interval=0.2)
        await worker.start()
        task_id = await queue.enqueue(tasks.add, 2, 3)
        result = await queue.get_result(task_id, timeout=10)
        assert result is not None and result.status == "success"
        timer = stall_for(relay, 20)
        try:
            began = time.monotonic()
            await asyncio.wait_for(worker.stop(), 30)
            assert relay.stalled.is_set(), (
                f"stop() returned only when the network came back, after {time.monotonic() - began:.1f} s"
            )
        finally:
            timer.cancel()
            relay.flow()


@pytest.mark.asyncio
async def test_an_idle_worker_stopping_on_a_stalled_network_does_not_warn_of_outcomes_it_never_had(
    pg_dsn: str, pg_schema: str, relay: StallingRelay, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """It logged "the backend did not take the last outcomes ...; those tasks run again" while holding no task."""
    monkeypatch.setattr(sitq_core._worker.limits, "_FINAL_REPORT_TIMEOUT", 1.0)  # keep the test short
    async with sitq.connect(relayed_url(pg_dsn, relay, pg_schema)) as queue:
        worker = Worker(queue.backend, poll_interval=0.2)
        await worker.start()
        await queue.counts()
        timer = stall_for(relay, 20)
        try:

            async def a_call_is_held() -> bool:
                return relay.held > 0

            await wait_until(a_call_is_held, timeout=10)  # the idle worker's reserve waits on the network
            await asyncio.wait_for(worker.stop(), 30)
        finally:
            timer.cancel()
            relay.flow()
    assert "did not take the last outcomes" not in caplog.text


@pytest.mark.asyncio
async def test_cancelling_stop_is_not_swallowed(
    pg_dsn: str, pg_schema: str, relay: StallingRelay, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A caller that gives up on ``stop()`` gets its TimeoutError, not a silent None."""
    monkeypatch.setattr(sitq_core._worker.limits, "_FINAL_REPORT_TIMEOUT", 3.0)
    async with sitq.connect(relayed_url(pg_dsn, relay, pg_schema)) as queue:
        worker = Worker(queue.backend, poll_interval=0.2)
        await worker.start()
        await queue.counts()
        timer = stall_for(relay, 20)
        try:
            # a reserve (every 0.2 s) is on its way when stop() begins, so stop() has to wait for it; a
            # stop() called between two reserves needed no byte and returned at once (seen under load)
            async def a_call_is_held() -> bool:
                return relay.held > 0

            await wait_until(a_call_is_held, timeout=10)
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(worker.stop(), 0.5)
        finally:
            timer.cancel()
            relay.flow()
        await asyncio.wait_for(worker.stop(), 30)  # the stop goes on, and finishes once bytes flow


@pytest.mark.asyncio
async def test_an_enqueue_the_caller_gave_up_on_is_not_stored_later(pg_dsn: str, pg_schema: str) -> None:
    """The server is asked to cancel the statement: a write waiting on a lock must not commit once the lock goes."""
    async with sitq.connect(f"{pg_dsn}?schema={pg_schema}") as queue:
        await queue.enqueue(tasks.add, 0)
        locker = await asyncpg.connect(pg_dsn)
        try:
            locking = locker.transaction()
            await locking.start()
            await locker.execute(f"LOCK TABLE {pg_schema}.tasks IN SHARE MODE")  # blocks every INSERT
            for _ in range(3):
                with pytest.raises(TimeoutError):
                    await asyncio.wait_for(queue.enqueue(tasks.add, 1), 0.3)

            async def inserts_waiting() -> int:
                return int(
                    await locker.fetchval(
                        "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE '%INSERT%'"
                    )
                )

            await wait_until(lambda: _is(inserts_waiting(), 0))  # cancelled on the server, not left waiting
            await locking.commit()
            assert (await queue.counts())["queued"] == 1, "an enqueue reported as cut short was stored after all"
        finally:
            await locker.close()


async def _is(value: Any, expected: Any) -> bool:
    return await value == expected


@pytest.mark.asyncio
async def test_a_server_gone_after_first_use_is_a_connection_error(
    pg_dsn: str, pg_schema: str, relay: StallingRelay
) -> None:
    """It raised a plain BackendError once the queue had been used; code catching sitq.ConnectionError missed it."""
    async with sitq.connect(relayed_url(pg_dsn, relay, pg_schema)) as queue:
        await queue.counts()  # used: the pool holds a connection
        relay.cut()
        for call in (queue.counts, lambda: queue.enqueue(tasks.add, 1, 2)):
            with pytest.raises(sitq.ConnectionError) as info:
                await call()
            assert info.value.backend_type == "postgres" and "out of reach" in str(info.value)


@pytest.mark.asyncio
@pytest.mark.parametrize("timeout", [None, 30])
async def test_get_result_on_a_server_never_reached_raises_at_once(pg_schema: str, timeout: float | None) -> None:
    """A wrong URL (or a server down at start) waited without end, silently: there is nothing to fail over from."""
    backend = PostgresBackend("postgresql://postgres@127.0.0.1:1/x", schema=pg_schema, connect_timeout=2)
    queue = sitq.TaskQueue(backend)  # not entered: that would connect first
    try:
        async with asyncio.timeout(10):  # the bound of this test, not of the call: it must not wait at all
            with pytest.raises(sitq.ConnectionError) as info:
                await queue.get_result("some-id", timeout=timeout)
    finally:
        await queue.close()
    assert info.value.backend_type == "postgres" and "127.0.0.1:1" in str(info.value)


@pytest.mark.asyncio
async def test_waiters_through_an_outage_warn_once_and_say_when_the_server_answers_again(
    pg_dsn: str, pg_schema: str, relay: StallingRelay, caplog: pytest.LogCaptureFixture
) -> None:
    """A server lost after it was reached (a failover, a restart): waiters keep waiting, and say so once."""
    caplog.set_level(logging.DEBUG, logger="sitq.postgres")

    def logged(level: int, text: str) -> list[str]:
        records = [r for r in caplog.records if r.name == "sitq.postgres" and r.levelno == level]
        return [r.getMessage() for r in records if text in r.getMessage()]

    async def retried_enough() -> bool:
        return len(logged(logging.DEBUG, "trying again")) >= 9  # three waiters, several tries each

    async with sitq.connect(relayed_url(pg_dsn, relay, pg_schema)) as queue:
        task_id = await queue.enqueue(tasks.add, 20, 22)
        relay.cut()
        waiters = [asyncio.create_task(queue.get_result(task_id)) for _ in range(3)]
        await wait_until(retried_enough)
        assert all(not waiter.done() for waiter in waiters), "a waiter gave up during the outage"
        warned = logged(logging.WARNING, "cannot be reached")
        assert len(warned) == 1, warned  # once for the outage, not once per waiter or per try
        assert f"127.0.0.1:{relay.port}" in warned[0]
        assert not logged(logging.INFO, "answers again")
        relay.restore()
        worker_backend = PostgresBackend(pg_dsn, schema=pg_schema)
        worker = Worker(worker_backend)
        await worker.start()
        try:
            async with asyncio.timeout(15):
                results = await asyncio.gather(*waiters)
        finally:
            await worker.stop()
            await worker_backend.close()
        assert [queue.deserialize_result(result) for result in results] == [42, 42, 42]
        assert len(logged(logging.INFO, "answers again")) == 1
        assert len(logged(logging.WARNING, "cannot be reached")) == 1


@pytest.mark.asyncio
async def test_exists_whose_session_is_cut_is_a_connection_error(
    pg_dsn: str, pg_schema: str, relay: StallingRelay
) -> None:
    """sitq stats asks exists() first: a session cut under its query escaped as a raw asyncpg error."""
    queue = sitq.TaskQueue(relayed_url(pg_dsn, relay, pg_schema))
    try:
        relay.cut_at_query = True
        with pytest.raises(sitq.ConnectionError) as info:
            await queue.backend.exists()
        assert info.value.backend_type == "postgres" and "connection was closed" in str(info.value)
        relay.cut_at_query = False
        assert await queue.backend.exists() is False  # the next one asks anew
    finally:
        await queue.close()
