"""Construction, paths, URLs, options, the file on disk and its lifecycle."""

from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
import subprocess
import sys
import threading
from contextlib import closing
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

import sitq
from sitq import TaskQueue, Worker
from sitq_core.backend import Capability
from sitq_core.errors import BackendError, ConfigurationError, ConnectionError, ValidationError
from sitq_core.models import Task, TaskStatus, new_id
from sitq_core.urls import parse_backend_url
from sitq_sqlite import SQLiteBackend
from sitq_sqlite.schema import SCHEMA_VERSION

import sitq_test_tasks as tasks
from sitq_test_helpers import wait_until


def new_task(**changes: object) -> Task:
    return Task(id=new_id(), payload=b"data", **changes)  # type: ignore[arg-type]


def tables(path: Path) -> set[str]:
    with sqlite3.connect(path) as conn:
        return {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


def test_construction_is_lazy(tmp_path: Path) -> None:
    SQLiteBackend(tmp_path / "sub" / "lazy.db")
    assert not (tmp_path / "sub").exists()


@pytest.mark.asyncio
@pytest.mark.parametrize("kind", ["str", "path", "pathlike"])
async def test_path_types_and_parent_folders(tmp_path: Path, kind: str) -> None:
    target = tmp_path / "a" / "b" / "tasks.db"

    class PathLike:
        def __fspath__(self) -> str:
            return str(target)

    path: object = {"str": str(target), "path": target, "pathlike": PathLike()}[kind]
    backend = SQLiteBackend(path)  # type: ignore[arg-type]
    task = new_task()
    await backend.enqueue(task)  # first use connects, creates the folders and the tables
    assert target.exists()
    assert {"tasks", "results"} <= tables(target)
    await backend.close()
    await backend.close()  # idempotent
    with sqlite3.connect(target) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert conn.execute("SELECT id, status FROM tasks").fetchall() == [(task.id, "queued")]


def test_relative_path_is_resolved_at_construction(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert SQLiteBackend("rel.db").path == str(tmp_path / "rel.db")


@pytest.mark.parametrize("bad", [None, "", "   ", 42, b"tasks.db", 1.5, True])
def test_bad_path(bad: object) -> None:
    with pytest.raises(ValidationError) as info:
        SQLiteBackend(bad)  # type: ignore[arg-type]
    assert info.value.parameter == "path"
    assert info.value.value is bad and info.value.context["value"] is bad, "the error names the value given"


class _IntPath(os.PathLike[str]):
    def __fspath__(self) -> str:
        return 5  # type: ignore[return-value]


class _BytesPath(os.PathLike[bytes]):
    def __fspath__(self) -> bytes:
        return b"tasks.db"


@pytest.mark.parametrize("bad", [_IntPath(), _BytesPath()], ids=["fspath-int", "fspath-bytes"])
def test_a_path_like_giving_no_text_path_is_a_validation_error(bad: object) -> None:
    with pytest.raises(ValidationError) as info:
        SQLiteBackend(bad)  # type: ignore[arg-type]
    assert info.value.parameter == "path" and info.value.value is bad


@pytest.mark.asyncio
async def test_a_folder_given_as_the_database_path_is_named_as_a_folder(tmp_path: Path) -> None:
    backend = SQLiteBackend(tmp_path)
    with pytest.raises(ConnectionError, match="that path is a folder"):
        await backend.connect()
    with pytest.raises(ConnectionError, match="that path is a folder"):
        await backend.exists()  # what sitq stats asks first
    assert os.listdir(tmp_path) == [], "nothing may be created inside the folder"


@pytest.mark.parametrize("given", ["newdir/", "data/newdir/", "newdir/.", "newdir/..", f"newdir{os.sep}", "."])
def test_a_path_ending_in_a_separator_names_a_folder_and_is_refused(
    given: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SQLiteBackend("newdir/") made a FILE named newdir and used it as the database."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValidationError, match="names a folder") as info:
        SQLiteBackend(given)
    assert info.value.parameter == "path" and info.value.value == given
    with pytest.raises(ValidationError, match="names a folder"):
        sitq.connect(f"sqlite:///{given}")
    assert os.listdir(tmp_path) == [], "nothing may be created for a refused path"


@pytest.mark.parametrize("url", ["sqlite:///tasks.db", "sqlite:////tmp/tasks.db", "postgresql://db/app"])
def test_a_url_given_as_the_path_is_refused_not_made_into_folders(
    url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValidationError, match="is a URL, not a file path") as info:
        SQLiteBackend(url)
    assert info.value.parameter == "path"
    assert list(tmp_path.iterdir()) == [], "nothing may be created for a refused path"


def test_a_windows_style_drive_path_is_not_taken_for_a_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert SQLiteBackend("C:tasks.db").path == str(tmp_path / "C:tasks.db")


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("journal_mode", "fast"),
        ("journal_mode", "OFF"),
        ("synchronous", "sometimes"),
        ("synchronous", 2),
        ("busy_timeout", -1),
        ("busy_timeout", "5"),
        ("cache_size_kib", 0),
        ("cache_size_kib", 1.5),
        ("watch_interval", 0),
        ("watch_interval", 5),
    ],
)
def test_bad_options(tmp_path: Path, option: str, value: object) -> None:
    with pytest.raises(ValidationError) as info:
        SQLiteBackend(tmp_path / "x.db", **{option: value})  # type: ignore[arg-type]
    assert info.value.parameter == option
    assert option in str(info.value)


def test_choice_options_name_valid_values(tmp_path: Path) -> None:
    with pytest.raises(ValidationError) as info:
        SQLiteBackend(tmp_path / "x.db", synchronous="sometimes")
    assert "NORMAL" in str(info.value) and "FULL" in str(info.value)
    assert SQLiteBackend(tmp_path / "x.db", synchronous="normal").synchronous == "NORMAL"


@pytest.mark.asyncio
async def test_bad_input_loses_nothing(tmp_path: Path) -> None:
    path = tmp_path / "keep.db"
    async with SQLiteBackend(path) as backend:
        task = new_task()
        await backend.enqueue(task)
        with pytest.raises(ValidationError):
            await backend.enqueue_many([new_task(), task])
        with pytest.raises(ValidationError):
            await backend.enqueue_many(["not a task"])  # type: ignore[list-item]
    with pytest.raises(ValidationError):
        SQLiteBackend(path, synchronous="bogus")
    async with SQLiteBackend(path) as again:
        assert await again.get_task(task.id) == task
        assert (await again.counts())["queued"] == 1


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("sqlite:///rel.db", "REL"),
        ("sqlite:////abs/dir/tasks.db", "/abs/dir/tasks.db"),
        ("sqlite://", ":memory:"),
        ("sqlite:///:memory:", ":memory:"),
        ("sqlite+aiosqlite:///rel.db", "REL"),
    ],
)
def test_url_forms(url: str, expected: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    backend = SQLiteBackend.from_url(parse_backend_url(url))
    assert backend.path == (str(tmp_path / "rel.db") if expected == "REL" else expected)


@pytest.mark.parametrize("url", ["sqlite:///", "sqlite:///?synchronous=full", "sqlite+aiosqlite:///"])
def test_a_url_with_no_file_after_three_slashes_is_refused(url: str) -> None:
    """'sqlite:///$UNSET' opened an in-memory database: a producer's tasks vanished with its process."""
    with pytest.raises(ValidationError, match="names no file") as info:
        SQLiteBackend.from_url(parse_backend_url(url))
    assert info.value.parameter == "path"
    with pytest.raises(ValidationError, match="sqlite://"):
        TaskQueue(url)


def test_a_path_percent_encoding_bytes_that_are_not_utf8_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="not UTF-8") as info:
        parse_backend_url("sqlite:///%FF.db")
    assert info.value.parameter == "url"
    assert parse_backend_url("sqlite:///caf%C3%A9.db").database == "café.db"


def test_url_options_are_coerced(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    url = "sqlite:///t.db?synchronous=normal&busy_timeout=2.5&cache_size_kib=1024&journal_mode=wal"
    backend = SQLiteBackend.from_url(parse_backend_url(url))
    assert (backend.synchronous, backend.busy_timeout, backend.cache_size_kib) == ("NORMAL", 2.5, 1024)
    assert backend.journal_mode == "WAL"


@pytest.mark.parametrize(
    ("url", "parameter"),
    [
        ("sqlite://localhost/tasks.db", "url"),
        ("sqlite://:5432/tasks.db", "url"),
        ("sqlite://user@/tasks.db", "url"),
        ("sqlite:///t.db?colour=blue", "colour"),
        ("sqlite:///t.db?path=x.db", "path"),
    ],
)
def test_bad_urls(url: str, parameter: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        SQLiteBackend.from_url(parse_backend_url(url))
    assert info.value.parameter == parameter
    if parameter == "url":
        assert "sqlite:////absolute/path.db" in str(info.value)
    if parameter == "colour":
        assert "synchronous" in str(info.value)  # lists the accepted options


@pytest.mark.parametrize(
    ("url", "parameter"),
    [
        ("sqlite:///t.db?busy_timeout=soon", "busy_timeout"),
        ("sqlite:///t.db?busy_timeout=-1", "busy_timeout"),
        ("sqlite:///t.db?cache_size_kib=1.5", "cache_size_kib"),
        ("sqlite:///t.db?synchronous=BOGUS", "synchronous"),
    ],
)
def test_bad_option_values_are_validation_errors(url: str, parameter: str) -> None:
    with pytest.raises(ValidationError) as info:  # one type for a bad value, whether typed or from text
        SQLiteBackend.from_url(parse_backend_url(url))
    assert info.value.parameter == parameter


def test_from_config(tmp_path: Path) -> None:
    backend = SQLiteBackend.from_config({"path": str(tmp_path / "c.db"), "synchronous": "NORMAL"})
    assert backend.synchronous == "NORMAL"
    with pytest.raises(ConfigurationError):
        SQLiteBackend.from_config({"path": "x.db", "nope": 1})


@pytest.mark.asyncio
async def test_the_bare_name_means_the_default_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert SQLiteBackend.from_config({"synchronous": "NORMAL"}).path == str(tmp_path / "sitq.db")
    monkeypatch.setenv("SITQ_BACKEND", "sqlite")
    async with sitq.connect() as queue:
        await queue.enqueue(print, "stored")
    async with sitq.connect({"backend": "sqlite"}) as queue:
        assert (await queue.counts())["queued"] == 1
    assert (tmp_path / "sitq.db").exists()


def test_memory_capabilities(tmp_path: Path) -> None:
    assert SQLiteBackend(":memory:").capabilities == frozenset({Capability.CANCEL_RUNNING, Capability.STREAMED_BATCHES})
    assert Capability.PERSISTENT in SQLiteBackend(tmp_path / "x.db").capabilities
    assert SQLiteBackend.name == "sqlite"


@pytest.mark.asyncio
async def test_memory_database_is_shared_by_users_of_one_object() -> None:
    backend = SQLiteBackend(":memory:")
    task = new_task()
    await backend.enqueue(task)  # no connect() yet
    assert (await backend.reserve(worker_id="w", limit=1, lease_seconds=5))[0].id == task.id
    await backend.close()
    assert await backend.get_task(task.id) is None  # reconnect: a new, empty memory database


@pytest.mark.asyncio
async def test_reconnect_after_close_keeps_data(tmp_path: Path) -> None:
    backend = SQLiteBackend(tmp_path / "r.db")
    task = new_task()
    async with backend:
        await backend.enqueue(task)
    async with backend:
        stored = await backend.get_task(task.id)
        assert stored is not None and stored.status == TaskStatus.QUEUED
    assert await backend.get_task(task.id) == stored  # lazy reconnect


@pytest.mark.asyncio
async def test_close_checkpoints_so_the_db_file_alone_is_a_backup(tmp_path: Path) -> None:
    path = tmp_path / "live.db"
    backend = SQLiteBackend(path)
    tasks = [new_task() for _ in range(50)]
    await backend.enqueue_many(tasks)
    leases = await backend.reserve(worker_id="w", limit=10, lease_seconds=30)
    for lease in leases:
        await backend.complete(lease, b"ok")
    await backend.close()
    copy = tmp_path / "backup" / "copy.db"
    copy.parent.mkdir()
    shutil.copyfile(path, copy)  # only the main file: no -wal, no -shm
    assert not (copy.parent / "copy.db-wal").exists()
    with sqlite3.connect(copy) as conn:
        assert conn.execute("SELECT count(*) FROM tasks").fetchone()[0] == 50
        assert conn.execute("SELECT count(*) FROM results").fetchone()[0] == 10
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


@pytest.mark.asyncio
async def test_plain_sqlite_tools_keep_working(tmp_path: Path) -> None:
    path = tmp_path / "tools.db"
    async with SQLiteBackend(path) as backend:
        await backend.enqueue_many([new_task() for _ in range(10)])
        conn = sqlite3.connect(path, isolation_level=None)
        conn.execute("ANALYZE")
        conn.execute("VACUUM")
        dump = "\n".join(conn.iterdump())
        conn.close()
        assert "CREATE TABLE" in dump and "tasks_claim" in dump
        assert len(await backend.reserve(worker_id="w", limit=20, lease_seconds=5)) == 10


@pytest.mark.asyncio
async def test_not_a_database(tmp_path: Path) -> None:
    path = tmp_path / "notes.db"
    path.write_bytes(b"this is not a database, just some text " * 100)
    backend = SQLiteBackend(path)
    with pytest.raises(ConnectionError) as info:
        await backend.enqueue(new_task())
    assert str(path) in str(info.value)
    assert isinstance(info.value, BackendError)
    assert path.read_bytes().startswith(b"this is not a database")  # untouched


@pytest.mark.asyncio
async def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "future.db"
    async with SQLiteBackend(path):
        pass
    with sqlite3.connect(path) as conn:
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(ConnectionError) as info:
        await SQLiteBackend(path).connect()
    assert "schema version" in str(info.value) and "upgrade sitq-sqlite" in str(info.value)


@pytest.mark.parametrize(
    ("script", "said"),
    [
        ("CREATE TABLE users(id INTEGER PRIMARY KEY, name TEXT); INSERT INTO users VALUES (1, 'alice');", "another"),
        ("CREATE TABLE users(id INTEGER PRIMARY KEY); PRAGMA user_version = 7;", "user_version 7"),
        ("CREATE TABLE tasks(id INTEGER PRIMARY KEY, title TEXT); PRAGMA user_version = 1;", "did not create"),
        ("PRAGMA user_version = 1;", "user_version 1"),
    ],
)
@pytest.mark.asyncio
async def test_another_applications_database_is_refused_and_left_as_it_was(
    tmp_path: Path, script: str, said: str
) -> None:
    """A path mistyped onto another application's file: before, sitq added its tables, set user_version and
    switched the file to WAL for good (or looped on 'no such index' for a foreign tasks table)."""
    path = tmp_path / "their.db"
    with sqlite3.connect(path) as conn:
        conn.executescript(script)
    before = _snapshot(path)
    with pytest.raises(ConnectionError) as info:
        await SQLiteBackend(path).connect()
    assert said in str(info.value) and "nothing in this one was changed" in str(info.value)
    assert _snapshot(path) == before


@pytest.mark.asyncio
@pytest.mark.parametrize("restored_from_a_dump", [False, True])
async def test_columns_added_to_sitqs_tables_that_may_be_null_or_have_a_default_are_accepted(
    tmp_path: Path, restored_from_a_dump: bool
) -> None:
    """ALTER TABLE tasks ADD COLUMN note TEXT on a sitq file: every open then failed with "already holds table(s)
    results, tasks that sitq did not create". sitq names every column it reads and writes, so such columns are
    kept, never filled or read by sitq."""
    path = tmp_path / "annotated.db"
    async with TaskQueue(SQLiteBackend(path)) as queue:
        first = await queue.enqueue(tasks.add, 1, 2)
    with closing(sqlite3.connect(path)) as conn:
        conn.execute("ALTER TABLE tasks ADD COLUMN note TEXT")
        conn.execute("ALTER TABLE tasks ADD COLUMN Owner TEXT NOT NULL DEFAULT 'ops'")
        conn.execute("ALTER TABLE results ADD COLUMN reviewed INTEGER DEFAULT 0")
        conn.execute("UPDATE tasks SET note = 'keep me' WHERE id = ?", (first,))
        conn.commit()
    if restored_from_a_dump:  # a dump carries no user_version: the file is recognised by its tables
        dumped = tmp_path / "restored.db"
        with closing(sqlite3.connect(path)) as source, closing(sqlite3.connect(dumped)) as target:
            target.executescript("\n".join(source.iterdump()))
        path = dumped
    backend = SQLiteBackend(path)
    assert await backend.exists() is True
    async with TaskQueue(backend) as queue:
        worker = Worker(backend, max_concurrency=4)
        await worker.start()
        try:
            ids = [await queue.enqueue(tasks.add, 3, 4)]
            ids += await queue.enqueue_many([(tasks.add, (i, i)) for i in range(3)])
            ids += await queue.enqueue_many([(tasks.add, (i, 1)) for i in range(300)])  # streamed
            for task_id in [first, *ids]:
                assert await queue.get_result(task_id, timeout=10) is not None
        finally:
            await worker.stop()
        later = await queue.enqueue(tasks.add, 5, 6, eta=datetime.now(UTC) + timedelta(hours=1))
        assert await queue.cancel(later)
        assert (await queue.counts())["success"] == len(ids) + 1
        assert len(await queue.list_tasks(status="success", limit=1000)) == len(ids) + 1
        assert await queue.purge() == len(ids) + 2
    with closing(sqlite3.connect(path)) as conn:
        assert conn.execute("SELECT user_version FROM pragma_user_version").fetchone()[0] == SCHEMA_VERSION
        columns = [row[1] for row in conn.execute("PRAGMA table_info(tasks)")]
        assert columns[-2:] == ["note", "Owner"]


def _with_required_column(conn: sqlite3.Connection, declared: str = "NOT NULL") -> None:
    """tasks made again with one more column that every insert must fill (ALTER TABLE cannot add such a one)."""
    sql = conn.execute("SELECT sql FROM sqlite_master WHERE name = 'tasks'").fetchone()[0]
    conn.execute("ALTER TABLE tasks RENAME TO old_tasks")
    conn.execute(sql.rstrip().rstrip(")") + f", note TEXT {declared})")
    conn.execute("DROP TABLE old_tasks")


@pytest.mark.parametrize(
    ("change", "said"),
    [
        (
            lambda c: c.execute("ALTER TABLE tasks DROP COLUMN lease_token"),
            "table tasks lacks column(s) sitq needs: lease_token",
        ),
        (
            lambda c: c.execute("ALTER TABLE results RENAME COLUMN traceback TO tb"),
            "table results lacks column(s) sitq needs: traceback (it has column(s) sitq does not know: tb)",
        ),
        (
            _with_required_column,
            "table tasks has column(s) sitq does not know that every insert would have to "
            "fill: note (NOT NULL without a DEFAULT",
        ),
        # a default of NULL is no default: the insert still fails (NOT NULL constraint failed: tasks.note)
        *(
            (
                lambda c, declared=declared: _with_required_column(c, declared),
                "table tasks has column(s) sitq does not know that every insert would have to "
                "fill: note (NOT NULL without a DEFAULT",
            )
            for declared in ("NOT NULL DEFAULT NULL", "NOT NULL DEFAULT (null)", "DEFAULT (NULL) NOT NULL")
        ),
        (lambda c: c.execute("DROP TABLE results"), "table results is missing"),
    ],
)
@pytest.mark.asyncio
async def test_a_sitq_table_changed_so_sitq_cannot_use_it_is_refused_naming_table_and_columns(
    tmp_path: Path, change: Any, said: str
) -> None:
    """Refused precisely (not "tables that sitq did not create; use a file of its own"), with nothing changed."""
    path = tmp_path / "changed.db"
    async with TaskQueue(SQLiteBackend(path)) as queue:
        await queue.enqueue(tasks.add, 1, 2)
    with closing(sqlite3.connect(path)) as conn:
        change(conn)
        conn.commit()
    before = _snapshot(path)
    backend = SQLiteBackend(path)
    with pytest.raises(ConnectionError) as info:
        await backend.connect()
    message = str(info.value)
    assert said in message and "nothing in this one was changed" in message
    assert "did not create" not in message and "file of its own" not in message
    assert _snapshot(path) == before


def test_a_file_is_checked_against_the_columns_of_its_own_schema_version(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A later version that adds a column to tasks must not refuse every file of the version before it as
    "lacks column(s) sitq needs" before its migration (which adds the column) could run: the file's tables
    are compared with those of its own version. Simulated: version 2 adds app_v2_flag."""
    from sitq_sqlite import schema

    path = tmp_path / "v1.db"
    with closing(sqlite3.connect(path)) as conn:
        assert schema.create_schema(conn) == 0
        conn.commit()
        version_1 = {t: [row[1] for row in conn.execute(f"PRAGMA table_info({t})")] for t in ("tasks", "results")}
        assert schema.check_not_foreign(conn) == SCHEMA_VERSION == 1
    # what the author of version 2 does: the DDL gets the column, the version goes up, and the columns of
    # version 1 are kept as they were
    ddl = list(schema._DDL)
    ddl[0] = ddl[0].rstrip().rstrip(")") + ", app_v2_flag INTEGER NOT NULL DEFAULT 0)"
    monkeypatch.setattr(schema, "_DDL", tuple(ddl))
    monkeypatch.setattr(schema, "SCHEMA_VERSION", 2)
    monkeypatch.setattr(schema, "_EARLIER_COLUMNS", {1: version_1}, raising=False)
    monkeypatch.setattr(schema, "_OWN_COLUMNS", {})  # read again from the changed DDL
    with closing(sqlite3.connect(path)) as conn:
        assert schema.check_not_foreign(conn) == 1  # a version-1 file, to be migrated
        conn.execute("ALTER TABLE tasks DROP COLUMN lease_token")
        with pytest.raises(schema.ForeignSchemaError) as info:  # still checked, against version 1
            schema.check_not_foreign(conn)
        assert info.value.changes == ["table tasks lacks column(s) sitq needs: lease_token"]
    fresh = tmp_path / "v2.db"
    with closing(sqlite3.connect(fresh)) as conn:
        schema.create_schema(conn)
        conn.commit()
        assert schema.check_not_foreign(conn) == 2
        conn.execute("ALTER TABLE tasks DROP COLUMN app_v2_flag")  # a version-2 file lacking version 2's column
        with pytest.raises(schema.ForeignSchemaError) as info:
            schema.check_not_foreign(conn)
        assert info.value.changes == ["table tasks lacks column(s) sitq needs: app_v2_flag"]


def test_every_earlier_schema_version_keeps_its_columns() -> None:
    """The next migration's author is stopped here until the columns of the version it leaves are frozen
    (files of that version are checked against them before they are migrated)."""
    from sitq_sqlite import schema

    assert set(schema._EARLIER_COLUMNS) == set(range(1, schema.SCHEMA_VERSION))


def _snapshot(path: Path) -> tuple[Any, ...]:
    with sqlite3.connect(path) as conn:
        return (
            conn.execute("PRAGMA journal_mode").fetchone()[0],
            conn.execute("PRAGMA user_version").fetchone()[0],
            conn.execute("SELECT type, name, sql FROM sqlite_master ORDER BY name").fetchall(),
        )


@pytest.mark.asyncio
async def test_connecting_to_a_set_up_file_needs_no_write_lock(tmp_path: Path) -> None:
    """sitq stats (a health check) must not fail while another process holds a long write transaction."""
    path = tmp_path / "busy.db"
    async with SQLiteBackend(path) as backend:
        await backend.counts()
    locker = sqlite3.connect(path, isolation_level=None)
    locker.execute("BEGIN IMMEDIATE")  # a purge, a large enqueue_many, a migration
    try:
        async with SQLiteBackend(path, busy_timeout=0.2) as reader:
            assert (await reader.counts())["queued"] == 0
    finally:
        locker.execute("ROLLBACK")
        locker.close()


@pytest.mark.asyncio
async def test_sqlite_errors_become_backend_errors(tmp_path: Path) -> None:
    path = tmp_path / "broken.db"
    async with SQLiteBackend(path) as backend:
        with sqlite3.connect(path) as conn:
            conn.execute("DROP TABLE results")
        await backend.enqueue(new_task())
        with pytest.raises(BackendError) as info:
            await backend.get_result("x")
        assert info.value.backend_type == "sqlite" and info.value.operation == "get_result"


@pytest.mark.asyncio
async def test_claim_query_uses_the_claim_index(tmp_path: Path) -> None:
    path = tmp_path / "plan.db"
    async with SQLiteBackend(path) as backend:
        await backend.enqueue(new_task())
    from sitq_sqlite.backend import _CLAIM_SQL

    with sqlite3.connect(path) as conn:
        plan = " ".join(str(row[3]) for row in conn.execute("EXPLAIN QUERY PLAN " + _CLAIM_SQL, ("q", 0, 0, 1)))
    assert "tasks_claim" in plan and "TEMP B-TREE" not in plan


def test_file_mode_is_wal(tmp_path: Path) -> None:
    import asyncio

    path = tmp_path / "wal.db"
    asyncio.run(SQLiteBackend(path).connect())
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert os.path.getsize(path) > 0


@pytest.mark.asyncio
async def test_a_file_with_someone_elses_tasks_table_is_refused_untouched(tmp_path: Path) -> None:
    path = tmp_path / "app.db"
    with closing(sqlite3.connect(path)) as conn:
        conn.execute("CREATE TABLE tasks (title TEXT)")
        conn.execute("INSERT INTO tasks VALUES ('buy milk')")
        conn.commit()
    with pytest.raises(ConnectionError) as info:
        async with SQLiteBackend(path):
            pass
    assert "already holds table(s) tasks" in str(info.value)
    with closing(sqlite3.connect(path)) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
        assert conn.execute("SELECT title FROM tasks").fetchall() == [("buy milk",)]


@pytest.mark.asyncio
async def test_a_file_restored_from_a_dump_is_opened_as_sitqs_own(tmp_path: Path) -> None:
    original, restored = tmp_path / "tasks.db", tmp_path / "restored.db"
    async with sitq.TaskQueue(SQLiteBackend(original)) as queue:
        task_id = await queue.enqueue(print, 1)
    with closing(sqlite3.connect(original)) as source, closing(sqlite3.connect(restored)) as target:
        target.executescript("\n".join(source.iterdump()))  # a dump does not carry PRAGMA user_version
        assert target.execute("PRAGMA user_version").fetchone()[0] == 0
    backend = SQLiteBackend(restored)
    assert await backend.exists() is True
    async with sitq.TaskQueue(backend) as queue:
        stored = await queue.get_task(task_id)
        assert stored is not None and stored.status == TaskStatus.QUEUED
    with closing(sqlite3.connect(restored)) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


def _open_handles(path: Path) -> list[str]:
    handles = []
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            target = os.readlink(f"/proc/self/fd/{fd}")
            if target.startswith(str(path)):
                handles.append(target)
    return handles


def _refused_file(path: Path, kind: str) -> None:
    """A WAL file sitq must refuse: written by a newer sitq-sqlite, or another application's."""
    if kind == "future":
        with closing(sqlite3.connect(path)) as conn:
            conn.execute("PRAGMA journal_mode = WAL")
            conn.executescript("\n".join(_own_schema_dump()))
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    else:
        with closing(sqlite3.connect(path)) as conn:
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT)")
            conn.commit()
    assert not Path(f"{path}-wal").exists() and not Path(f"{path}-shm").exists()


def _own_schema_dump() -> list[str]:
    with closing(sqlite3.connect(":memory:")) as conn:
        from sitq_sqlite.schema import create_schema

        create_schema(conn)
        return [line for line in conn.iterdump() if line.startswith("CREATE")]


def _threads_named(name: str) -> list[str]:
    return [thread.name for thread in threading.enumerate() if thread.name == f"sitq-sqlite:{name}"]


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc/self/fd (Linux) to list open files")
@pytest.mark.parametrize("kind", ["future", "foreign"])
@pytest.mark.asyncio
async def test_a_refused_connect_closes_what_it_opened(tmp_path: Path, kind: str) -> None:
    """A refused file kept its connection and the connection thread (close() did not know them) and, when the
    process ended first, -wal and -shm files beside a file sitq promises to leave as it was."""
    path = tmp_path / f"refused-{kind}.db"
    _refused_file(path, kind)
    backend = SQLiteBackend(path)
    with pytest.raises(ConnectionError):
        await backend.connect()
    assert _open_handles(path) == []  # closed before the error was raised
    assert sorted(os.listdir(tmp_path)) == [path.name]
    await backend.close()

    async def thread_ended() -> bool:  # it ends right after closing the connection
        return _threads_named(path.name) == []

    await wait_until(thread_ended, timeout=5)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["future", "foreign"])
def test_a_worker_refused_its_file_leaves_no_wal_or_shm(tmp_path: Path, kind: str) -> None:
    path = tmp_path / f"refused-{kind}.db"
    _refused_file(path, kind)
    done = subprocess.run(
        [sys.executable, "-m", "sitq", "worker", "-b", f"sqlite:///{path}"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2, done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc/self/fd (Linux) to list open files")
@pytest.mark.asyncio
async def test_close_returns_once_the_files_are_closed(tmp_path: Path) -> None:
    for round_ in range(5):  # the connection thread used to close its connection after close() returned
        path = tmp_path / f"closing-{round_}.db"
        backend = SQLiteBackend(path)
        await TaskQueue(backend).enqueue(tasks.add, 1)
        await backend.close()
        assert _open_handles(path) == [], f"round {round_}: files still open after close()"


@pytest.mark.asyncio
async def test_a_swollen_wal_shrinks_back_while_the_file_stays_open(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After a huge write the WAL kept its peak size (272 MiB beside a 276 MiB database) for as long as workers ran."""
    import sitq_sqlite.connections as connections

    monkeypatch.setattr(connections, "_WAL_SIZE_LIMIT", 256 * 1024)
    path = tmp_path / "swollen.db"
    wal = Path(f"{path}-wal")
    async with SQLiteBackend(path) as backend:
        big = [Task(id=new_id(), payload=b"x" * 20_000) for _ in range(300)]  # about 6 MB in one transaction
        await backend.enqueue_many(big)
        assert _size(wal) > 4 * 1024 * 1024

        async def shrunk() -> bool:
            await backend.enqueue(Task(id=new_id(), payload=b"small"))  # commits checkpoint, then restart the WAL
            return _size(wal) <= 1024 * 1024

        await wait_until(shrunk)


def _size(path: Path) -> int:
    return os.path.getsize(path)


@pytest.mark.asyncio
@pytest.mark.parametrize("status", ["bogus", 5])
async def test_an_unknown_status_filter_lists_the_valid_ones_and_keeps_the_value_given(
    tmp_path: Path, status: object
) -> None:
    async with SQLiteBackend(tmp_path / "status.db") as backend:
        with pytest.raises(ValidationError) as info:
            await backend.list_tasks(status=status)  # type: ignore[arg-type]
    assert info.value.parameter == "status" and info.value.value == status and type(info.value.value) is type(status)
    assert info.value.valid_options == ["queued", "running", "success", "failed", "cancelled"]


@pytest.mark.asyncio
@pytest.mark.parametrize("case", ["dangling", "loop", "long", "device"])
async def test_a_path_sqlite_cannot_open_says_what_is_wrong_with_it(tmp_path: Path, case: str) -> None:
    """A dangling symlink, a loop and a 300-character name all said only 'unable to open database file'."""
    if case == "dangling":
        path, says = tmp_path / "dangling.db", "does not exist"
        path.symlink_to(tmp_path / "gone" / "target.db")
    elif case == "loop":
        path, says = tmp_path / "loop1.db", "a loop of symlinks"
        (tmp_path / "loop2.db").symlink_to(path)
        path.symlink_to(tmp_path / "loop2.db")
    elif case == "long":
        path, says = tmp_path / ("x" * 300 + ".db"), "longer than the file system allows"
    else:
        path, says = Path("/dev/null"), "not a regular file"
    with pytest.raises(ConnectionError) as info:
        async with SQLiteBackend(path) as backend:
            await backend.counts()
    assert says in str(info.value), str(info.value)
    assert not (tmp_path / "gone").exists()  # nothing created on the way
