"""A msgpack worker resolves a task's path as the producer writes it, and nothing else.

The producer sends a function's own ``module:qualname``: a module-level
function, or one in a class body reached through its classes. A row written
around sitq (anyone with write access to the SQLite file) could name more:
``sys:modules.clear`` reached a dict's bound method, and running it broke
every later task ("cannot import name 'open' from 'builtins'");
``total.__globals__.get`` walked out of a function into its module's
namespace. Those tasks now fail, naming the path and why, and the worker goes on.
"""

from __future__ import annotations

import asyncio
import json
import math
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from types import ModuleType
from typing import Any

import msgpack
import pytest

from sitq import MsgpackSerializer, SerializationError, SQLiteBackend, TaskQueue, Worker

_MODULE = "sitq_crafted_paths"

_SOURCE = """
import functools
import types

import sitq

SEEN = []  # the names this module's __getattr__ was asked for


def __getattr__(name):
    SEEN.append(name)
    raise AttributeError(name)


REGISTRY = {"kept": 1}


def total(prices):
    return round(sum(prices), 2)


def other(x):
    return x


total.helper = other
HOLDER = types.SimpleNamespace(f=other)


class Box:
    def __init__(self):
        self.x = 1

    def method(self, x):
        return x

    @staticmethod
    def static(x):
        return x

    @sitq.task
    def task_method(self, x):
        return x

    class Inner:
        @staticmethod
        def deep(x):
            return x


@sitq.task(max_retries=0)
def decorated(x):
    return x


def _logged(fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        return fn(*args, **kwargs)

    return wrapper


@_logged
def wrapped(x):
    return x
"""


@pytest.fixture
def crafted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    """The module the crafted rows name, importable by the worker (its own copy per test)."""
    (tmp_path / f"{_MODULE}.py").write_text(_SOURCE)
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop(_MODULE, None)
    module = __import__(_MODULE)
    yield module
    sys.modules.pop(_MODULE, None)


def _loads(path: str) -> Any:
    serializer = MsgpackSerializer()
    return serializer.loads_call(serializer.dumps([path, [], {}]))[0]


@pytest.mark.parametrize(
    ("path", "says"),
    [
        ("sys:modules.clear", "'modules' is a dict, not a class"),
        (f"{_MODULE}:REGISTRY.clear", "'REGISTRY' is a dict, not a class"),
        (f"{_MODULE}:HOLDER.f", "'HOLDER' is a SimpleNamespace, not a class"),
        (f"{_MODULE}:total.helper", "'total' is a function, not a class"),
        (f"{_MODULE}:total.__globals__.get", "'__globals__' is a dunder name"),
        (f"{_MODULE}:Box.__init__", "'__init__' is a dunder name"),
        ("builtins:dict.fromkeys", "it names a method (of a type)"),
        ("os:sep", "it names a str"),
    ],
)
def test_a_path_the_producer_never_writes_is_refused_naming_it_and_why(
    path: str, says: str, crafted: ModuleType
) -> None:
    with pytest.raises(SerializationError) as info:
        _loads(path)
    message = info.value.message
    assert f"{path!r} is not a module-level function" in message and says in message, message
    assert crafted.REGISTRY == {"kept": 1}


def test_a_dunder_name_is_never_looked_up(crafted: ModuleType) -> None:
    """The module's __getattr__ sees every missing name asked of it: a dunder one is refused before the lookup."""
    for path in (f"{_MODULE}:__secret__", f"{_MODULE}:__secret__.get", f"{_MODULE}:Box.__secret__"):
        with pytest.raises(SerializationError, match="dunder name"):
            _loads(path)
    assert crafted.SEEN == []


def test_every_function_the_producer_sends_loads_back(crafted: ModuleType) -> None:
    """The loader accepts exactly what enqueue writes: functions, by their qualname in classes, tasks, wrappers."""
    serializer = MsgpackSerializer()
    sendable: list[tuple[Any, Any]] = [
        (crafted.total, crafted.total),
        (crafted.Box.method, crafted.Box.method),
        (crafted.Box.static, crafted.Box.static),
        (crafted.Box.Inner.deep, crafted.Box.Inner.deep),
        (crafted.Box.task_method, crafted.Box.task_method.__wrapped__),
        (crafted.decorated, crafted.decorated.__wrapped__),
        (crafted.wrapped, crafted.wrapped),
        (math.sqrt, math.sqrt),
        (json.loads, json.loads),
    ]
    for func, runs in sendable:
        assert serializer.loads_call(serializer.dumps_call(func, (), {}))[0] is runs, func


@pytest.mark.parametrize(
    ("make", "says"),
    [
        (lambda m: m.REGISTRY.clear, "is a method (of a dict), not a module-level function"),
        (lambda m: dict.fromkeys, "is a method (of a type), not a module-level function"),
        (lambda m: m.Box.__init__, "'__init__' is a dunder name"),
    ],
)
def test_the_producer_refuses_the_same_at_enqueue(make: Any, says: str, crafted: ModuleType) -> None:
    with pytest.raises(SerializationError) as info:
        MsgpackSerializer().dumps_call(make(crafted), (), {})
    assert says in info.value.message, info.value.message


def _craft(path: Path, task_id: str, function_path: str, args: list[Any]) -> None:
    """Rewrite one stored task to call ``function_path``, as anyone who can write the file can."""
    payload = msgpack.packb([function_path, args, {}], use_bin_type=True)
    with closing(sqlite3.connect(path, isolation_level=None)) as conn:
        conn.execute("UPDATE tasks SET payload = ?, function_name = ? WHERE id = ?", (payload, function_path, task_id))


@pytest.mark.asyncio
async def test_crafted_rows_fail_alone_and_the_worker_goes_on(tmp_path: Path, crafted: ModuleType) -> None:
    path = tmp_path / "q.db"
    async with TaskQueue(SQLiteBackend(path), serializer="msgpack") as queue:
        ids = [await queue.enqueue(crafted.total, [i, 0.5]) for i in range(4)]
        _craft(path, ids[0], f"{_MODULE}:REGISTRY.clear", [])
        _craft(path, ids[1], f"{_MODULE}:total.__globals__.get", ["total"])
        worker = Worker(f"sqlite:///{path}", serializer="msgpack")
        await worker.start()
        try:
            results = await asyncio.gather(*(queue.get_result(task_id, timeout=30) for task_id in ids))
        finally:
            await worker.stop(timeout=10)
    cleared, walked, *good = results
    assert cleared is not None and cleared.status == "failed", cleared
    assert f"'{_MODULE}:REGISTRY.clear' is not a module-level function" in (cleared.error or ""), cleared.error
    assert walked is not None and walked.status == "failed", walked
    assert "'__globals__' is a dunder name" in (walked.error or ""), walked.error
    assert crafted.REGISTRY == {"kept": 1}
    assert [queue.deserialize_result(r) if r else None for r in good] == [2.5, 3.5]


_SYS_MODULES_CLEAR = """
import asyncio, sqlite3, sys

import msgpack

from sitq import TaskQueue, Worker


def add(a, b):
    return a + b


async def main(path):
    async with TaskQueue(f"sqlite:///{path}", serializer="msgpack") as queue:
        first = await queue.enqueue(add, 1, 1)
        second = await queue.enqueue(add, 2, 2)
        with sqlite3.connect(path) as conn:
            conn.execute(
                "UPDATE tasks SET payload = ? WHERE id = ?",
                (msgpack.packb(["sys:modules.clear", [], {}]), first),
            )
        conn.close()
        worker = Worker(f"sqlite:///{path}", serializer="msgpack")
        await worker.start()
        try:
            crafted = await queue.get_result(first, timeout=30)
            later = await queue.get_result(second, timeout=30)
        finally:
            await worker.stop(timeout=10)
        print(crafted.status, crafted.error)
        print(later.status, queue.deserialize_result(later), "sitq" in sys.modules)


asyncio.run(main(sys.argv[1]))
"""


def test_sys_modules_clear_is_refused_and_later_tasks_still_run(tmp_path: Path) -> None:
    """Run in a process of its own: before the fix, the crafted task emptied sys.modules there."""
    script = tmp_path / "sitq_clear_modules.py"
    script.write_text(_SYS_MODULES_CLEAR)
    done = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "q.db")], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    crafted, later = done.stdout.strip().splitlines()
    assert crafted.startswith("failed ") and "'sys:modules.clear' is not a module-level function" in crafted, crafted
    assert "'modules' is a dict, not a class" in crafted, crafted
    assert later == "success 4 True", done.stderr


@pytest.mark.parametrize(
    ("path", "says"),
    [
        ("sys:modules.clear", "'modules' is a dict, not a class"),
        (f"{_MODULE}:HOLDER.f", "'HOLDER' is a SimpleNamespace, not a class"),
        (f"{_MODULE}:total.__globals__.get", "'__globals__' is a dunder name"),
        ("builtins:dict.fromkeys", "it names a method (of a type), not a function"),
    ],
)
def test_allow_task_refuses_by_the_same_rule_at_start(path: str, says: str, crafted: ModuleType) -> None:
    from sitq import ValidationError
    from sitq_core.cli import _worker_serializer

    with pytest.raises(ValidationError) as info:
        _worker_serializer("msgpack", [path])
    assert info.value.message.startswith(f"--allow-task {path}: ") and says in info.value.message, info.value.message
    assert crafted.SEEN == []
