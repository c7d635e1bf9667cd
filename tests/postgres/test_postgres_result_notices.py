"""The NOTIFY that announces stored results: never the reason a finish or cancel fails, never missing an id.

PostgreSQL refuses a NOTIFY payload of 8000 bytes or more, and the refusal
rolled the whole finish back: a task whose id alone was that long (an id given
through the Backend API, a task moved in from another store) could never be
finished. Payloads were also measured in characters where the limit counts
bytes, so a batch of ids of emoji overflowed it just the same. And the ids
were joined by newlines, so an id holding one was announced as two other
ids: its waiter missed the notice and saw the result only at its next re-read.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence

import asyncpg  # type: ignore[import-untyped]
import pytest
import sitq_postgres.backend as pg_backend
from sitq_test_postgres import dsn_with

from sitq_core.models import Outcome, Task, TaskStatus
from sitq_postgres import PostgresBackend

_WAIT = 30.0  # seconds any one wait below may take at most
#: Over PostgreSQL's 8000-byte NOTIFY limit on its own (repetitive, so the id index still takes it compressed).
_TOO_LONG = "a" * 9000


async def store(backend: PostgresBackend, ids: Sequence[str]) -> None:
    """Tasks ``ids`` queued in ``backend``'s store, whatever their length.

    The core refuses ids over 255 characters since 2026-12-01, so a longer one
    is what an older version stored: enqueued under a short id here, then
    renamed by hand.
    """
    short = {task_id: task_id if len(task_id) <= 255 else f"long-{index}" for index, task_id in enumerate(ids)}
    await backend.enqueue_many([Task(id=short[task_id], payload=b"p") for task_id in ids])
    renames = [(task_id, placeholder) for task_id, placeholder in short.items() if task_id != placeholder]
    if renames:
        connection = await asyncpg.connect(backend.dsn)
        try:
            await connection.executemany(f"UPDATE {backend.schema}.tasks SET id = $1 WHERE id = $2", renames)
        finally:
            await connection.close()


async def finish(backend: PostgresBackend, ids: Sequence[str]) -> list[bool]:
    """Tasks ``ids`` enqueued, reserved and finished (success) in one finish_many."""
    await store(backend, ids)
    leases = await backend.reserve(worker_id="w", limit=len(ids), lease_seconds=60)
    assert sorted(lease.id for lease in leases) == sorted(ids)
    return await backend.finish_many([Outcome(lease.id, lease.lease_token, "success", value=b"v") for lease in leases])


async def announced(listener: PostgresBackend, finisher: PostgresBackend, ids: Sequence[str]) -> dict[str, bool]:
    """Which of ``ids`` the listener heard announced when ``finisher`` finished them (in one batch).

    A task finished after them is awaited first: notices come in commit order,
    so once its own has come, any notice of the batch has come too.
    """
    await listener._ensure_listener()
    subscriptions = {task_id: listener.notifier.subscribe(("sitq", "result", task_id)) for task_id in ids}
    last = listener.notifier.subscribe(("sitq", "result", "after-the-batch"))
    try:
        assert await finish(finisher, ids) == [True] * len(ids)
        assert await finish(finisher, ["after-the-batch"]) == [True]
        assert await last.wait(_WAIT), "the notice of a task finished after the batch never came"
        return {task_id: await subscription.wait(0) for task_id, subscription in subscriptions.items()}
    finally:
        for subscription in [*subscriptions.values(), last]:
            subscription.close()


@pytest.mark.asyncio
async def test_a_task_whose_id_does_not_fit_a_notice_finishes_and_its_waiter_reads_the_result(
    pg_dsn: str, pg_schema: str
) -> None:
    async with PostgresBackend(pg_dsn, schema=pg_schema) as backend, PostgresBackend(pg_dsn, schema=pg_schema) as other:
        waiter = asyncio.create_task(other.wait_for_result(_TOO_LONG, timeout=_WAIT))
        heard = await announced(other, backend, [_TOO_LONG, "short"])
        assert heard["short"]  # the others of its batch are announced as ever
        result = await asyncio.wait_for(waiter, _WAIT)  # at its periodic re-read
        assert result is not None and result.status == TaskStatus.SUCCESS
        task = await backend.get_task(_TOO_LONG)
        assert task is not None and task.status == TaskStatus.SUCCESS


@pytest.mark.asyncio
async def test_a_queued_task_whose_id_does_not_fit_a_notice_is_cancelled(pg_dsn: str, pg_schema: str) -> None:
    async with PostgresBackend(pg_dsn, schema=pg_schema) as backend:
        await store(backend, [_TOO_LONG])
        assert await backend.cancel(_TOO_LONG) is True
        task = await backend.get_task(_TOO_LONG)
        result = await backend.get_result(_TOO_LONG)
        assert task is not None and task.status == TaskStatus.CANCELLED
        assert result is not None and result.status == TaskStatus.CANCELLED


@pytest.mark.asyncio
async def test_a_notice_is_measured_in_bytes(pg_dsn: str, pg_schema: str) -> None:
    """5,249 + 1,749 characters passed a 7,000 limit counted in characters; as UTF-8 they are 12,246 bytes."""
    wide = "\N{GRINNING FACE}" * 1749  # 4 bytes each
    async with PostgresBackend(pg_dsn, schema=pg_schema) as backend, PostgresBackend(pg_dsn, schema=pg_schema) as other:
        heard = await announced(other, backend, ["a" * 5249, wide])
        assert heard == {"a" * 5249: True, wide: True}


@pytest.mark.asyncio
@pytest.mark.parametrize("odd", ["a\nb", "\nlead", "trail\n", "\n", "back\\slash\\n", "tab\there"])
async def test_an_id_holding_the_separator_is_announced_as_itself(pg_dsn: str, pg_schema: str, odd: str) -> None:
    # finished in one batch with others, so its notice shares a payload with theirs
    async with PostgresBackend(pg_dsn, schema=pg_schema) as backend, PostgresBackend(pg_dsn, schema=pg_schema) as other:
        heard = await announced(other, backend, [odd, "a", "b", "c"])
        assert heard == {odd: True, "a": True, "b": True, "c": True}


@pytest.mark.asyncio
async def test_a_notice_the_servers_encoding_makes_too_long_is_left_unsent(pg_dsn: str) -> None:
    """6,999 bytes in UTF-8 fit, but U+4E07 takes 4 bytes in EUC_TW (3 in UTF-8): 9,332 there, refused."""
    name = f"sitq_euc_{uuid.uuid4().hex[:12]}"
    task_id = "\N{CJK UNIFIED IDEOGRAPH-4E07}" * 2333
    admin = await asyncpg.connect(pg_dsn)
    try:
        await admin.execute(f"CREATE DATABASE {name} ENCODING 'EUC_TW' TEMPLATE template0 LC_COLLATE 'C' LC_CTYPE 'C'")
        try:
            async with PostgresBackend(dsn_with(pg_dsn, database=name), schema="sitq") as backend:
                assert await finish(backend, [task_id]) == [True]
                result = await backend.get_result(task_id)
                assert result is not None and result.status == TaskStatus.SUCCESS
        finally:
            await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    finally:
        await admin.close()


@pytest.mark.parametrize(
    ("ids", "notices"),
    [
        (["x" * 3499, "y" * 3500, "z"], 2),  # 7,000 bytes joined: one payload; "z" starts the next
        (["x" * 3500, "y" * 3500], 2),  # 7,001 bytes joined: two
        (["\N{GRINNING FACE}" * 1750, "e"], 2),  # exactly the limit alone
        (["a\nb", "c", "\n", "d"], 3),  # each newline id alone; "c" and "d" together
        (["x" * 7001, "ok", "\n" + "y" * 7000], 1),  # neither fits: left out, "ok" still goes
    ],
)
def test_result_notices_carry_every_id_that_fits_and_read_back_as_sent(ids: list[str], notices: int) -> None:
    payloads = pg_backend._result_notices(ids)
    assert len(payloads) == notices
    assert all(len(payload.encode()) <= pg_backend._NOTIFY_PAYLOAD_MAX for payload in payloads)
    read = [task_id for payload in payloads for task_id in pg_backend._announced_ids(payload)]
    assert sorted(read) == sorted(task_id for task_id in ids if len(task_id.encode()) + ("\n" in task_id) <= 7000)
