"""The same task code on PostgreSQL: queue and worker in one process, selection by URL and config,
several worker processes on one database, and a killed worker's tasks running again."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg  # type: ignore[import-untyped]
import pytest

import sitq
from sitq import TaskQueue, Worker
from sitq_core.errors import BackendError, ConfigurationError, ConnectionError, ValidationError
from sitq_postgres import PostgresBackend

import sitq_test_tasks as tasks
from sitq_test_helpers import wait_until

TESTS = Path(__file__).resolve().parents[1]


def url(dsn: str, schema: str) -> str:
    return f"{dsn}?schema={schema}"


class Workers:
    """``sitq worker`` processes on one PostgreSQL schema, ended after the test."""

    def __init__(self, backend_url: str, folder: Path) -> None:
        self.url, self.folder = backend_url, folder
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, *args: str) -> subprocess.Popen[bytes]:
        env = dict(os.environ, PYTHONPATH=str(TESTS))
        command = [sys.executable, "-m", "sitq", "worker", "-b", self.url, "-i", "sitq_test_tasks", *args]
        with open(self.folder / f"worker-{len(self.procs)}.log", "wb") as stderr:
            proc = subprocess.Popen(command, env=env, stderr=stderr)
        self.procs.append(proc)
        return proc

    def log(self, index: int) -> str:
        return (self.folder / f"worker-{index}.log").read_text(errors="replace")

    def cleanup(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait(10)


@pytest.fixture
def workers(pg_dsn: str, pg_schema: str, tmp_path: Path) -> Iterator[Workers]:
    pool = Workers(url(pg_dsn, pg_schema), tmp_path)
    yield pool
    pool.cleanup()


def lines(path: Path) -> list[tuple[str, int, int]]:
    if not path.exists():
        return []
    return [(kind, int(n), int(pid)) for kind, n, pid in (line.split() for line in path.read_text().splitlines())]


@pytest.mark.asyncio
async def test_same_task_code_runs_on_postgres(pg_dsn: str, pg_schema: str) -> None:
    backend = PostgresBackend(pg_dsn, schema=pg_schema)
    async with TaskQueue(backend) as queue:
        worker = Worker(backend, max_concurrency=4)
        await worker.start()
        try:
            sync_id = await queue.enqueue(tasks.add, 2, 3)
            async_id = await queue.enqueue(tasks.async_add, 4, b=5)
            failing = await queue.enqueue(tasks.boom, "no luck")
            assert queue.deserialize_result(await queue.get_result(sync_id, timeout=20)) == 5
            assert queue.deserialize_result(await queue.get_result(async_id, timeout=20)) == 9
            result = await queue.get_result(failing, timeout=20)
            assert result is not None and result.status == "failed" and "no luck" in (result.error or "")
            assert result.traceback and "ValueError" in result.traceback
        finally:
            await worker.stop()
        counts = await queue.counts()
    assert counts["success"] == 2 and counts["failed"] == 1


@pytest.mark.asyncio
async def test_selected_by_url_and_by_config(pg_dsn: str, pg_schema: str) -> None:
    async with sitq.connect(url(pg_dsn, pg_schema)) as queue:
        assert isinstance(queue.backend, PostgresBackend) and queue.backend.schema == pg_schema
        task_id = await queue.enqueue(tasks.add, 1)
    config = {"backend": "postgres", "dsn": pg_dsn, "schema": pg_schema, "max_connections": "3"}
    async with sitq.connect(config) as queue:
        assert queue.backend.max_connections == 3  # type: ignore[attr-defined]
        stored = await queue.get_task(task_id)
        assert stored is not None and stored.status == "queued"  # the same store, reached another way
    with pytest.raises(ConfigurationError) as info:
        sitq.connect(url(pg_dsn, pg_schema) + "&pool=3")
    assert info.value.parameter == "pool" and "max_connections" in str(info.value)


def test_bad_arguments_name_the_parameter() -> None:
    for kwargs, parameter, says in (
        ({"schema": "Robert'); DROP TABLE"}, "schema", ""),
        ({"max_connections": 0}, "max_connections", "max_connections must be an integer from 1 to 10000"),
        ({"min_connections": -1}, "min_connections", "min_connections must be an integer from 0 to 10000"),
        # asyncpg set up every slot at once: 10**7 took 18 s and gigabytes before a connection was tried
        ({"max_connections": 10**11}, "max_connections", "max_connections must be an integer from 1 to 10000"),
        ({"min_connections": 10_001, "max_connections": 10**6}, "min_connections", "from 0 to 10000"),
        ({"min_connections": 5, "max_connections": 2}, "min_connections", ""),
        ({"connect_timeout": -1}, "connect_timeout", "0, as in libpq, means the most"),
        ({"connect_timeout": float("nan")}, "connect_timeout", ""),
    ):
        with pytest.raises(ValidationError) as info:
            PostgresBackend("postgresql://localhost/x", **kwargs)  # type: ignore[arg-type]
        assert info.value.parameter == parameter
        assert says in str(info.value), "the message must say what is accepted (0 is, for connect_timeout)"


@pytest.mark.asyncio
async def test_unreachable_server_is_a_clear_connection_error() -> None:
    backend = PostgresBackend("postgresql://postgres@127.0.0.1:1/none", connect_timeout=2)
    with pytest.raises(ConnectionError) as info:
        await backend.connect()
    assert "cannot connect to PostgreSQL" in str(info.value) and "127.0.0.1:1" in str(info.value)


@pytest.mark.asyncio
async def test_bad_batch_stores_nothing_and_keeps_what_was_stored(pg_dsn: str, pg_schema: str) -> None:
    async with TaskQueue(PostgresBackend(pg_dsn, schema=pg_schema)) as queue:
        kept = await queue.enqueue(tasks.add, 1, 1)
        with pytest.raises(ValidationError):
            await queue.enqueue_many([(tasks.add, (1,)), ("not callable", ())])
        with pytest.raises(ValidationError):
            await queue.backend.enqueue(await queue.get_task(kept))  # type: ignore[arg-type]  # id taken
        counts = await queue.counts()
        assert counts["queued"] == 1 and (await queue.get_task(kept)) is not None


@pytest.mark.asyncio
@pytest.mark.slow
async def test_three_processes_run_each_task_once(
    pg_dsn: str, pg_schema: str, workers: Workers, tmp_path: Path
) -> None:
    log = tmp_path / "once.log"
    total = 600
    async with TaskQueue(PostgresBackend(pg_dsn, schema=pg_schema)) as queue:
        ids = await queue.enqueue_many([(tasks.record, (str(log), n)) for n in range(total)])
        procs = [workers.start("--concurrency", "4") for _ in range(3)]

        async def all_done() -> bool:
            counts = await queue.counts()
            return counts["success"] + counts["failed"] == total

        await wait_until(all_done, timeout=120, interval=0.05)
        assert (await queue.get_result(ids[-1], timeout=0)) is not None
        assert (await queue.counts())["success"] == total
    for proc in procs:
        proc.send_signal(signal.SIGTERM)
    ran = {pid for _kind, _n, pid in lines(log)}
    for index, proc in enumerate(procs):
        code = proc.wait(30)
        # A worker that ran tasks had its signal handlers installed: it drains and exits 0. One still
        # starting up when the others finished everything dies of the signal like any process.
        assert code == 0 if proc.pid in ran else code in (0, -signal.SIGTERM), workers.log(index)
        assert "Traceback" not in workers.log(index), workers.log(index)
    starts = Counter(n for kind, n, _pid in lines(log) if kind == "start")
    assert len(starts) == total and max(starts.values()) == 1, "a task ran twice"


@pytest.mark.asyncio
async def test_killed_worker_tasks_run_again(pg_dsn: str, pg_schema: str, workers: Workers, tmp_path: Path) -> None:
    log = tmp_path / "side-effects.log"
    async with TaskQueue(PostgresBackend(pg_dsn, schema=pg_schema)) as queue:
        ids = await queue.enqueue_many([(tasks.record, (str(log), n, 0.3)) for n in range(8)])
        victim = workers.start("--concurrency", "4", "--lease-timeout", "1")

        async def some_started() -> bool:
            return sum(1 for kind, _n, _pid in lines(log) if kind == "start") >= 2

        await wait_until(some_started, timeout=30, interval=0.02)
        victim.send_signal(signal.SIGKILL)
        victim.wait(10)
        workers.start("--concurrency", "4", "--lease-timeout", "1")
        for task_id in ids:
            result = await queue.get_result(task_id, timeout=60)
            assert result is not None and result.status == "success", result
    starts = Counter(n for kind, n, _pid in lines(log) if kind == "start")
    assert set(starts) == set(range(8))


def test_sync_queue_gets_results_from_a_worker_process(pg_dsn: str, pg_schema: str, workers: Workers) -> None:
    """SyncTaskQueue (its own event loop) with a worker in another process: the result wait wakes on NOTIFY."""
    workers.start("--concurrency", "2")
    with sitq.SyncTaskQueue(url(pg_dsn, pg_schema)) as queue:
        ids = [queue.enqueue(tasks.add, n, n) for n in range(5)]
        assert [queue.get_result(task_id, timeout=30) for task_id in ids] == [0, 2, 4, 6, 8]


@pytest.mark.asyncio
async def test_a_url_may_carry_libpq_parameters(pg_dsn: str, pg_schema: str) -> None:
    async with sitq.connect(url(pg_dsn, pg_schema) + "&sslmode=disable&application_name=sitq-test") as queue:
        assert "sslmode=disable" in queue.backend.dsn and "application_name=sitq-test" in queue.backend.dsn  # type: ignore[attr-defined]
        assert "schema" not in queue.backend.dsn  # type: ignore[attr-defined]
        await queue.enqueue(tasks.add, 1)
        assert (await queue.counts())["queued"] == 1


def test_the_repr_names_the_server_and_database_with_the_password_masked() -> None:
    shown = repr(PostgresBackend("postgresql://app:SECRET@db.internal:5433/jobs", schema="q"))
    assert shown == "PostgresBackend(schema='q', server='postgresql://app:***@db.internal:5433/jobs')"


def test_cli_stats_refuses_a_schema_that_does_not_exist_and_creates_nothing(pg_dsn: str, pg_schema: str) -> None:
    url = f"{pg_dsn}?schema={pg_schema}"
    command = [sys.executable, "-m", "sitq", "stats", "--json", "-b", url]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "no sitq data in PostgresBackend(schema=" in done.stderr and "Traceback" not in done.stderr
    parts = urlsplit(pg_dsn)  # which server and database, as other errors about PostgreSQL say
    assert f"{parts.hostname}" in done.stderr and f"{parts.path}'" in done.stderr, done.stderr
    assert asyncio.run(PostgresBackend(pg_dsn, schema=pg_schema).exists()) is False  # still not created

    async def store_one() -> None:
        async with TaskQueue(PostgresBackend(pg_dsn, schema=pg_schema)) as queue:
            await queue.enqueue(print, 1)

    asyncio.run(store_one())
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=True)
    assert json.loads(done.stdout)["queued"] == 1


def test_a_multi_host_url_falls_over_to_the_next_host(pg_dsn: str, pg_schema: str) -> None:
    import dataclasses

    from sitq_core.urls import parse_backend_url

    real = parse_backend_url(pg_dsn)
    assert real.host is not None
    url = dataclasses.replace(
        real, host="127.0.0.1", port=1, more_hosts=((real.host, real.port),), query={"schema": pg_schema}
    )  # nothing listens on port 1: the second host must be used

    async def round_trip() -> int:
        async with TaskQueue(url.render(hide_password=False)) as queue:
            await queue.enqueue(print, 1)
            return (await queue.counts())["queued"]

    assert asyncio.run(round_trip()) == 1


def test_each_ended_event_loop_gives_its_connections_back(pg_dsn: str, pg_schema: str) -> None:
    # asyncio.run per call (a sync view, a cron loop, a test per loop): one pool per loop, and the ended
    # loops' pools used to stay open until close(), running the server out of connections
    name = f"sitq-loops-{uuid.uuid4().hex[:8]}"
    queue = TaskQueue(url(pg_dsn, pg_schema) + f"&application_name={name}")

    async def open_connections() -> int:
        conn = await asyncpg.connect(pg_dsn)
        try:
            return int(await conn.fetchval("SELECT count(*) FROM pg_stat_activity WHERE application_name = $1", name))
        finally:
            await conn.close()

    for n in range(12):
        asyncio.run(queue.enqueue(tasks.add, n))
    assert asyncio.run(open_connections()) <= 2, "connections of ended event loops are still open"
    asyncio.run(queue.close())
    assert asyncio.run(open_connections()) == 0


class ReadsLoseTheirConnection(PostgresBackend):
    """The first result reads find their connection gone (a failover, a killed session)."""

    failures = 2

    async def _get_results(self, task_ids):  # type: ignore[no-untyped-def]
        if self.failures:
            self.failures -= 1
            raise BackendError(
                "PostgreSQL get_result failed",
                operation="get_result",
                cause=asyncpg.ConnectionDoesNotExistError("gone"),
            )
        return await super()._get_results(task_ids)


@pytest.mark.asyncio
async def test_a_waiter_whose_read_loses_its_connection_keeps_waiting(pg_dsn: str, pg_schema: str) -> None:
    backend = ReadsLoseTheirConnection(pg_dsn, schema=pg_schema)
    async with TaskQueue(backend) as queue:
        worker = Worker(backend)
        await worker.start()
        result = await queue.get_result(await queue.enqueue(tasks.add, 20, 22), timeout=15)
        await worker.stop()
        assert backend.failures == 0, "the reads did fail"
    assert result is not None and queue.deserialize_result(result) == 42  # not a BackendError for the caller
    with pytest.raises(BackendError):  # timeout=0 checks once: the error is the answer
        backend.failures = 1
        await backend.wait_for_result("some-id", 0)
    await backend.close()


def test_connects_cut_short_by_a_cancelled_caller_leave_no_unretrieved_errors(pg_dsn: str, pg_schema: str) -> None:
    """asyncpg cancelled in its TLS step left 'Future exception was never retrieved' at exit (a worker's stop)."""
    import gc
    import logging

    unretrieved: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            unretrieved.append(record.getMessage())

    handler = Collect(level=logging.ERROR)
    logging.getLogger("asyncio").addHandler(handler)

    async def main() -> None:
        backend = TaskQueue(url(pg_dsn, pg_schema)).backend
        await backend.connect()
        for step in range(40):
            waiting = asyncio.ensure_future(backend.wait_for_work(5))  # connects a pool and a listener
            for _ in range(step % 8):
                await asyncio.sleep(0)
            waiting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await waiting
            await backend.close()
            gc.collect()
        await backend.close()

    try:
        asyncio.run(main())
        gc.collect()
    finally:
        logging.getLogger("asyncio").removeHandler(handler)
    assert unretrieved == [], unretrieved[0]


_FOLLOW_UPS_SCRIPT = """
import asyncio, gc, sys
import asyncpg
from sitq import TaskQueue, Worker

gc.disable()  # the copies then live as long as they would between two rare cyclic collections
DSN, SCHEMA, PARENTS = sys.argv[1], sys.argv[2], int(sys.argv[3])
queue = TaskQueue(f"{DSN}?schema={SCHEMA}&max_connections=4&application_name=c{SCHEMA}")


@queue.task()
async def child(i: int) -> int:
    return i * 2


@queue.task()
async def parent(i: int) -> str:
    return await child.enqueue(i)  # through this process's copy of the module-level queue


async def main() -> None:
    worker = Worker(f"{DSN}?schema={SCHEMA}&application_name=sitq_worker", max_concurrency=8)
    await worker.start()
    try:
        async with queue:
            ids = await queue.enqueue_many([(parent, (i,)) for i in range(PARENTS)])
            children = [queue.deserialize_result(await queue.get_result(t, timeout=60)) for t in ids]
            assert all(await asyncio.gather(*(queue.get_result(c, timeout=60) for c in children)))
    finally:
        await worker.stop()
    conn = await asyncpg.connect(DSN)
    try:  # the producer closed its queue: what is left are the worker's copies of it
        query = "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1"
        while_held = await conn.fetchval(query, f"c{SCHEMA}")
        gc.collect()  # the last copy to go lets the shared backend go
        deadline = asyncio.get_running_loop().time() + 20
        while await conn.fetchval(query, f"c{SCHEMA}") and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.05)
        print(while_held, await conn.fetchval(query, f"c{SCHEMA}"))
    finally:
        await conn.close()


asyncio.run(main())
"""


def test_follow_ups_from_main_tasks_share_one_pool_in_the_worker(pg_dsn: str, pg_schema: str, tmp_path: Path) -> None:
    """Each run of a ``__main__`` task unpickles its own copy of the module-level queue it enqueues through.

    Every copy opened its own pool and kept its server connection until a cyclic collection freed it:
    40 parents left an idle worker with 30 connections, and a role limited to 20 saw tasks fail with
    TooManyConnectionsError. The copies of one process now share one backend (one pool per event loop).
    """
    script = tmp_path / "follow_ups.py"
    script.write_text(_FOLLOW_UPS_SCRIPT)
    done = subprocess.run(
        [sys.executable, str(script), pg_dsn, pg_schema, "30"], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    while_held, after_collection = map(int, done.stdout.split()[-2:])
    assert 1 <= while_held <= 4, f"{while_held} connections of the copies are open (one pool holds at most 4)"
    assert after_collection == 0, "the shared backend stayed open after its last copy was collected"


@pytest.mark.asyncio
async def test_sigterm_while_a_table_lock_blocks_the_start_exits_at_once(
    pg_dsn: str, pg_schema: str, workers: Workers
) -> None:
    """Another session locks sitq's tasks table (VACUUM FULL, ALTER TABLE) while a worker starts up.

    A SIGTERM then logged "stopped before it started" and the process never exited, even after the lock
    went: the abandoned schema check's connection was given back to the pool, and that give-back waited
    for the server to confirm the cancel of the statement blocked on the lock.
    """
    async with TaskQueue(PostgresBackend(pg_dsn, schema=pg_schema)) as queue:
        await queue.counts()  # creates the schema and its tables
    locker = await asyncpg.connect(pg_dsn)
    try:
        async with locker.transaction():
            await locker.execute(f"LOCK TABLE {pg_schema}.tasks IN ACCESS EXCLUSIVE MODE")
            proc = workers.start()

            async def worker_waits_on_the_lock() -> bool:
                waiting = await locker.fetchval(
                    "SELECT count(*) FROM pg_locks WHERE NOT granted AND relation = $1::regclass",
                    f"{pg_schema}.tasks",
                )
                return bool(waiting) or proc.poll() is not None

            await wait_until(worker_waits_on_the_lock, timeout=60, interval=0.05)
            assert proc.poll() is None, workers.log(0)
            proc.send_signal(signal.SIGTERM)
            # the lock is still held: the worker must not wait for it (closing waits at most 5 s more)
            code = await asyncio.to_thread(proc.wait, 20)
        assert code == 0, workers.log(0)
    finally:
        await locker.close()


def test_cli_stats_works_through_a_read_only_role(pg_dsn: str, pg_schema: str) -> None:
    """``sitq stats`` connects inside ``reading_only()``: it must create nothing, so a role that may only
    read (USAGE and SELECT, or sessions that are read-only as on a hot standby) gets the counts too."""
    from urllib.parse import urlsplit

    suffix = uuid.uuid4().hex[:12]
    reader, replica = f"sitq_ro_{suffix}", f"sitq_replica_{suffix}"

    async def set_up() -> None:
        async with TaskQueue(PostgresBackend(pg_dsn, schema=pg_schema)) as queue:
            await queue.enqueue(print, 1)
        conn = await asyncpg.connect(pg_dsn)
        try:
            await conn.execute(
                f"CREATE ROLE {reader} LOGIN; GRANT USAGE ON SCHEMA {pg_schema} TO {reader}; "
                f"GRANT SELECT ON ALL TABLES IN SCHEMA {pg_schema} TO {reader}; "
                f"CREATE ROLE {replica} LOGIN SUPERUSER; "
                f"ALTER ROLE {replica} SET default_transaction_read_only = on"
            )
        finally:
            await conn.close()

    async def tear_down() -> None:
        conn = await asyncpg.connect(pg_dsn)
        try:
            await conn.execute(f"DROP OWNED BY {reader}; DROP ROLE IF EXISTS {reader}; DROP ROLE IF EXISTS {replica}")
        finally:
            await conn.close()

    parts = urlsplit(pg_dsn)
    asyncio.run(set_up())
    try:
        for role in (reader, replica):
            netloc = f"{role}@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
            role_url = parts._replace(netloc=netloc).geturl() + f"?schema={pg_schema}"
            command = [sys.executable, "-m", "sitq", "stats", "--json", "-b", role_url]
            done = subprocess.run(command, capture_output=True, text=True, timeout=60)
            assert done.returncode == 0, f"as {role}: {done.stderr}"
            assert json.loads(done.stdout)["queued"] == 1
    finally:
        asyncio.run(tear_down())


@pytest.mark.asyncio
async def test_a_workers_connections_cut_by_the_server_are_replaced_without_an_error(
    pg_dsn: str, pg_schema: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """pg_terminate_backend on an idle worker's connections logged an ERROR traceback calling the server
    "out of reach" with asyncpg's "cannot switch to state 15": one cut connection, on a server that was fine."""
    name = f"sitq_cut_{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("SITQ_LOG_LEVEL", "INFO")
    workers = Workers(f"{url(pg_dsn, pg_schema)}&application_name={name}", tmp_path)
    admin = await asyncpg.connect(pg_dsn)
    try:
        async with TaskQueue(PostgresBackend(pg_dsn, schema=pg_schema)) as queue:
            proc = workers.start("--concurrency", "8")

            async def connected() -> bool:
                found = await admin.fetchval("SELECT count(*) FROM pg_stat_activity WHERE application_name = $1", name)
                return bool(found >= 2)  # its pool and its listener

            for round_ in range(8):
                result = await queue.get_result(await queue.enqueue(tasks.add, round_, 1), timeout=60)
                assert result is not None and result.status == "success", workers.log(0)
                await wait_until(connected, timeout=30)
                await admin.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1", name
                )
            result = await queue.get_result(await queue.enqueue(tasks.add, 2, 2), timeout=60)
            assert result is not None and result.status == "success", workers.log(0)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0, workers.log(0)
    finally:
        await admin.close()
        workers.cleanup()
    log = workers.log(0)
    for wrong in ("out of reach", "cannot switch to state", "Traceback", " ERROR "):
        assert wrong not in log, log
