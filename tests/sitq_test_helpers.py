"""Test helpers: bounded waits instead of sleeps, time zones whose offset is broken, what an error shows."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import logging
import os
import re
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
import urllib.parse
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime, timedelta, tzinfo
from pathlib import Path
from typing import Any

import pytest

_plain_urlsplit = urllib.parse.urlsplit  # the interpreter's own, before any test patches it


async def wait_until(predicate: Callable[[], Awaitable[bool]], timeout: float = 10.0, interval: float = 0.01) -> None:
    """Poll an async predicate until it is true; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not await predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        await asyncio.sleep(interval)


def wait_until_sync(predicate: Callable[[], bool], timeout: float = 10.0, interval: float = 0.005) -> None:
    """``wait_until`` for plain threads: poll ``predicate`` until true; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(interval)


class RaisingZone(tzinfo):
    """A zone whose ``utcoffset`` raises (user code a datetime calls into)."""

    def utcoffset(self, dt: datetime | None) -> timedelta | None:
        raise RuntimeError("this zone cannot tell its offset")


class NotATimedeltaZone(tzinfo):
    """A zone whose ``utcoffset`` returns something other than a timedelta."""

    def utcoffset(self, dt: datetime | None) -> Any:
        return "+05:00"


class DayLongZone(tzinfo):
    """A zone whose offset is a day or more (``datetime`` allows less than 24 hours)."""

    def utcoffset(self, dt: datetime | None) -> timedelta | None:
        return timedelta(hours=30)


BROKEN_ZONES = [RaisingZone(), NotATimedeltaZone(), DayLongZone()]


def strict_urlsplit(url: str, scheme: str = "", allow_fragments: bool = True) -> urllib.parse.SplitResult:
    """``urlsplit`` as Python builds with the CVE-2024-11168 fix behave (3.12.8+, 3.13.1+, Debian's 3.11.2).

    They refuse anything before a ``[`` in a netloc's host part ("Invalid
    IPv6 URL"); the interpreter running the tests may predate the fix.
    """
    parts = _plain_urlsplit(url, scheme, allow_fragments)
    before, bracket, _rest = parts.netloc.rpartition("@")[2].partition("[")
    if bracket and before:
        raise ValueError("Invalid IPv6 URL")
    return parts


def shown_by(error: BaseException) -> str:
    """``str``, ``repr``, ``args`` and ``context`` of ``error`` and of every ``__cause__``/``__context__`` it keeps.

    Suppressed contexts (``raise ... from None``) are walked too: code that
    walks the chain, or a debugger, still reads them.
    """
    texts: list[str] = []
    seen: set[int] = set()
    pending: list[BaseException] = [error]
    while pending:
        current = pending.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        texts += [str(current), repr(current), repr(current.args)]
        context = getattr(current, "context", None)
        if isinstance(context, dict):
            texts += [repr(value) for value in context.values()]
        pending += [linked for linked in (current.__cause__, current.__context__) if linked is not None]
    return "\n".join(texts)


def in_child(work: Callable[[], Any], timeout: float = 30.0, *, on_new_thread: bool = False) -> int:
    """Run ``work`` in a forked child; its exit code (0: it returned, 1: it raised, -SIGALRM: it hung).

    ``on_new_thread``: run it on a new thread of the child (the forking thread
    may have had a running event loop, which ``asyncio.run`` refuses).
    """
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        signal.alarm(int(timeout))
        failed: list[BaseException] = []

        def run() -> None:
            try:
                work()
            except BaseException as exc:
                failed.append(exc)

        if on_new_thread:
            thread = threading.Thread(target=run)
            thread.start()
            thread.join()
        else:
            run()
        os._exit(1 if failed else 0)
    deadline = time.monotonic() + timeout + 10
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        if time.monotonic() > deadline:  # pragma: no cover - a hung child
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            return -signal.SIGKILL
        time.sleep(0.02)


class InThread:
    """Runs ``fn`` in a daemon thread, keeping what it returned or raised; ``result`` waits at most ``timeout``."""

    def __init__(self, fn: Callable[[], Any], name: str) -> None:
        self.value: Any = None
        self.error: BaseException | None = None
        self.done = threading.Event()
        self._fn = fn
        self.thread = threading.Thread(target=self._main, name=name, daemon=True)
        self.thread.start()

    def _main(self) -> None:
        try:
            self.value = self._fn()
        except BaseException as exc:  # handed to the test
            self.error = exc
        finally:
            self.done.set()

    def result(self, timeout: float = 10.0) -> Any:
        assert self.done.wait(timeout), f"{self.thread.name} did not end within {timeout} s"
        if self.error is not None:
            raise self.error
        return self.value


def run_sitq(capsys: Any, *args: str) -> tuple[int, str, str]:
    """Run the ``sitq ARGS`` command line in this process: its exit code, stdout and stderr."""
    import io

    from sitq_core.cli import main

    out = io.StringIO()
    code = main(list(args), stdout=out)
    return code, out.getvalue(), capsys.readouterr().err


class SQLiteWriteLock:
    """A write transaction another process would hold on the file (a ``sitq cancel``, a backup): sitq's writes wait."""

    def __init__(self, path: Path) -> None:
        self.connection = sqlite3.connect(path, isolation_level=None)
        self.connection.execute("BEGIN IMMEDIATE")

    def release(self) -> None:
        if self.connection.in_transaction:
            self.connection.execute("COMMIT")
        self.connection.close()


def count_calls(backend: Any) -> list[str]:
    """The operations a PostgreSQL ``backend`` runs on a pooled connection from now on (a spy on ``_call``)."""
    seen: list[str] = []
    real = backend._call

    async def spy(operation: str, body: Callable[[Any], Awaitable[Any]], **options: Any) -> Any:
        seen.append(operation)
        return await real(operation, body, **options)

    backend._call = spy
    return seen


async def warnings_at_start(worker: Any, caplog: Any) -> list[str]:
    """The "others can run code" warnings a worker logs as it starts (started and stopped once)."""
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="sitq.worker"):
        await worker.start()
        await worker.stop()
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and "run code" in r.getMessage()]


def mypy_or_skip() -> list[str]:
    """The command that runs mypy with this interpreter; skips without mypy (fails under CI=true, where it must run)."""
    if importlib.util.find_spec("mypy") is None:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail("CI needs mypy for the type-checking tests (pip install -e '.[dev]')")
        pytest.skip("mypy is not installed (pip install -e '.[dev]')")
    return [sys.executable, "-m", "mypy"]


def assert_mypy_flags_marked_lines(code: str, folder: Path, module: str) -> None:
    """``mypy --strict`` on ``code``, saved as ``<module>.py`` in ``folder``, flags exactly its ``# error`` lines."""
    path = folder / f"{module}.py"
    path.write_text(code, encoding="utf-8")
    expected = {n for n, line in enumerate(code.splitlines(), 1) if line.rstrip().endswith("# error")}
    done = subprocess.run(
        [*mypy_or_skip(), "--strict", "--cache-dir", str(folder / "mypy-cache"), str(path)],
        capture_output=True,
        text=True,
        cwd=folder,
    )
    found = {int(m[1]) for m in re.finditer(rf"^{re.escape(module)}\.py:(\d+): error:", done.stdout, re.MULTILINE)}
    assert found == expected, f"errors on lines {sorted(found)}, expected {sorted(expected)}:\n{done.stdout}"


def make_dist(site: Path, dist: str, entry_name: str, module: str, source: str, version: str = "1.0") -> None:
    """Write a minimal installed distribution (dist-info + one ``sitq`` entry point and its module) into ``site``."""
    info = site / f"{dist.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
    (info / "entry_points.txt").write_text(f"[sitq]\n{entry_name} = {module}\n")
    (site / f"{module}.py").write_text(textwrap.dedent(source))


@contextlib.asynccontextmanager
async def store_of_kind(kind: str, folder: Path) -> AsyncIterator[Any]:
    """An unconnected backend of ``kind``: a SQLite file in ``folder``, or PostgreSQL in a fresh schema dropped after.

    For tests parametrised over ``["sqlite", "postgres"]``; PostgreSQL skips
    (fails under ``CI=true``) when no server answers.
    """
    from sitq import SQLiteBackend

    if kind == "sqlite":
        yield SQLiteBackend(folder / "store.db")
        return
    from sitq_test_postgres import DSN, drop_schema, require_postgres

    require_postgres()
    from sitq_postgres import PostgresBackend

    schema = f"t_{uuid.uuid4().hex[:16]}"
    try:
        yield PostgresBackend(DSN, schema=schema)
    finally:
        drop_schema(schema)
