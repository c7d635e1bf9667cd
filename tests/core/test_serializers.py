"""Both built-in serializers round-trip calls and values; msgpack refuses code."""

from __future__ import annotations

import functools
import logging
import os
import pickle
import re
from pathlib import Path
from typing import Any

import pytest

from sitq import (
    CloudpickleSerializer,
    MsgpackSerializer,
    Result,
    SerializationError,
    Serializer,
    SQLiteBackend,
    TaskQueue,
    ValidationError,
)
from sitq_core.config import resolve_serializer

import sitq_test_tasks as tasks


def add(a: int, b: int = 0) -> int:
    return a + b


class Point:
    def __init__(self, x: int) -> None:
        self.x = x


@pytest.mark.parametrize("name", ["cloudpickle", "msgpack"])
def test_round_trip_call_and_value(name: str) -> None:
    serializer = resolve_serializer(name)
    assert serializer.name == name
    func, args, kwargs = serializer.loads_call(serializer.dumps_call(add, (1,), {"b": 2}))
    assert func(*args, **kwargs) == 3
    value = {"items": [1, 2.5, "three", None, True, b"\x00"], "n": 10**12}
    assert serializer.loads(serializer.dumps(value)) == value


def test_cloudpickle_ships_lambdas_and_closures() -> None:
    serializer = CloudpickleSerializer()
    offset = 40
    func, args, kwargs = serializer.loads_call(serializer.dumps_call(lambda x: x + offset, (2,), {}))
    assert func(*args, **kwargs) == 42
    assert serializer.loads(serializer.dumps(Point(3))).x == 3


def test_cloudpickle_ships_a_callable_whose_hash_raises() -> None:
    """cloudpickle pickles it; sitq's own lookup cache raised 'cannot serialise a call ... RuntimeError: no hash'."""
    serializer = CloudpickleSerializer()
    for _ in range(2):  # the second call meets the cache, too
        func, args, kwargs = serializer.loads_call(serializer.dumps_call(tasks.HashRaises(), (21,), {}))
        assert func(*args, **kwargs) == 42


def test_cloudpickle_bad_bytes() -> None:
    with pytest.raises(SerializationError) as info:
        CloudpickleSerializer().loads(b"not a pickle")
    assert info.value.operation == "loads"


def test_msgpack_refuses_a_lambda_naming_it() -> None:
    with pytest.raises(SerializationError, match="lambda"):
        MsgpackSerializer().dumps_call(lambda: 1, (), {})


def test_msgpack_refuses_closures_and_partials() -> None:
    def local() -> None:
        return None

    with pytest.raises(SerializationError, match="local function or closure"):
        MsgpackSerializer().dumps_call(local, (), {})
    with pytest.raises(SerializationError, match="module-level function"):
        MsgpackSerializer().dumps_call(functools.partial(add, 1), (), {})


def test_msgpack_names_the_bad_argument() -> None:
    with pytest.raises(SerializationError, match=r"argument 1 of .*add \(Point\)"):
        MsgpackSerializer().dumps_call(add, (1, Point(2)), {})
    with pytest.raises(SerializationError, match="keyword argument 'b'"):
        MsgpackSerializer().dumps_call(add, (1,), {"b": Point(2)})


def test_msgpack_says_the_int_range_when_an_argument_is_too_large() -> None:
    with pytest.raises(SerializationError, match=r"argument 0 of .*add \(int\).*-2\*\*63 to 2\*\*64-1"):
        MsgpackSerializer().dumps_call(add, (2**64,), {})
    MsgpackSerializer().dumps_call(add, (2**64 - 1, -(2**63)), {})  # the ends of the range pass


def test_msgpack_payload_holds_no_code() -> None:
    data = MsgpackSerializer().dumps_call(add, (1,), {})
    assert MsgpackSerializer().loads(data) == [f"{__name__}:add", [1], {}]


def test_msgpack_worker_side_refuses_unimportable_and_unlisted() -> None:
    serializer = MsgpackSerializer()
    with pytest.raises(SerializationError, match="cannot import"):
        serializer.loads_call(serializer.dumps(["no_such_module_xyz:f", [], {}]))
    with pytest.raises(SerializationError, match="not a module-level function"):
        serializer.loads_call(serializer.dumps(["os:sep", [], {}]))
    only = MsgpackSerializer(allowed_tasks=[add])
    assert only.loads_call(only.dumps_call(add, (1, 1), {}))[0] is add
    with pytest.raises(SerializationError, match="allowed_tasks"):
        only.loads_call(only.dumps(["os.path:join", ["a"], {}]))


_NAMED_ELSEWHERE = """
import os
from json import loads
def make():
    def inner(x):
        return x
    return inner
inner = make()
lam = lambda x: x
class Box:
    def method(self, x):
        return x
def own(x):
    return x
"""


@pytest.mark.parametrize(
    ("path", "names"),
    [
        ("sitq_named_elsewhere:lam", "sitq_named_elsewhere:<lambda>"),
        ("sitq_named_elsewhere:inner", "sitq_named_elsewhere:make.<locals>.inner"),
    ],
)
def test_msgpack_worker_side_refuses_a_lambda_or_closure_bound_to_a_module_name(
    path: str, names: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not module-level functions, and no producer sends them; a re-export (a moved function's old path) still runs."""
    (tmp_path / "sitq_named_elsewhere.py").write_text(_NAMED_ELSEWHERE)
    monkeypatch.syspath_prepend(str(tmp_path))
    serializer = MsgpackSerializer()
    with pytest.raises(SerializationError, match="not a module-level function") as info:
        serializer.loads_call(serializer.dumps([path, [1], {}]))
    assert names in str(info.value)
    # the module's own functions still load, a method by its class's qualname as a producer sends it
    assert serializer.loads_call(serializer.dumps(["sitq_named_elsewhere:own", [1], {}]))[0](1) == 1
    assert serializer.loads_call(serializer.dumps(["sitq_named_elsewhere:Box.method", [None, 2], {}]))[0](None, 2) == 2
    assert serializer.loads_call(serializer.dumps(["sitq_named_elsewhere:loads", ["[1]"], {}]))[0]("[1]") == [1]
    # serializers.md: give both paths to also run tasks stored under the old one before the function moved
    both = MsgpackSerializer(allowed_tasks=["json:loads", "sitq_named_elsewhere:loads"])
    assert both.loads_call(both.dumps(["sitq_named_elsewhere:loads", ["[2]"], {}]))[0]("[2]") == [2]


@pytest.mark.parametrize(
    ("allowed", "says"),
    [
        ("json:dumps", "an iterable"),  # one string would become a set of its characters
        (42, "an iterable"),
        (["json.dumps"], "did you mean json:dumps"),  # a dotted path never matches 'module:function'
        (["json:"], "'module:function', got 'json:': the function part is empty$"),
        (["shop.tasks:"], "the function part is empty$"),  # has a colon: no "did you mean shop:tasks:"
        ([" shop.tasks:total"], "surrounding whitespace$"),
        (["shop.tasks:total\n"], "surrounding whitespace$"),
        (["my-app.tasks:send"], "'my-app' in the module part is not a Python identifier$"),
        (["my-app.tasks.send"], "no ':' between the module and the function$"),  # my-app:... would be no better
        (["shop.tasks:to tal"], "'to tal' in the function part is not a Python identifier$"),
        (["shop.tasks:<lambda>"], "'<lambda>' in the function part"),
        (["shop.tasks:total:x"], "more than one ':'$"),
        (["shop..tasks:total"], "empty name between dots$"),
        (["no module:f"], "'module:function'"),
        ([42], "got int 42"),
        ([None], "got NoneType"),
        ([lambda: 1], "lambda"),
        # a fullwidth letter: Python reads names NFKC-normalised, so no function is ever called this
        (["tasks_mod:\uff54otal"], "Python reads its names as 'tasks_mod:total' \\(NFKC\\)"),
    ],
)
def test_msgpack_allowed_tasks_that_could_never_match_are_refused_up_front(allowed: object, says: str) -> None:
    from sitq import ValidationError

    with pytest.raises(ValidationError) as info:
        MsgpackSerializer(allowed_tasks=allowed)  # type: ignore[arg-type]
    assert re.search(says, info.value.message), info.value.message
    assert info.value.parameter == "allowed_tasks"


def test_msgpack_allowed_tasks_take_paths_and_functions_and_name_them_when_refusing() -> None:
    only = MsgpackSerializer(allowed_tasks=["json:dumps", add, "os.path:join"])
    assert only.allowed_tasks == frozenset({"json:dumps", f"{__name__}:add", "os.path:join"})
    with pytest.raises(SerializationError, match=r"allowed_tasks \(.*json:dumps"):
        only.loads_call(only.dumps(["json:loads", ["1"], {}]))


@pytest.mark.parametrize("protocol", [99, "5", 2.0, True])
def test_cloudpickle_protocol_is_checked_when_the_serializer_is_made(protocol: object) -> None:
    from sitq import ValidationError

    with pytest.raises(ValidationError, match="protocol") as info:
        CloudpickleSerializer(protocol=protocol)  # type: ignore[arg-type]
    assert info.value.parameter == "protocol"
    assert CloudpickleSerializer(protocol=4).protocol == 4
    assert CloudpickleSerializer(protocol=-1).protocol == pickle.HIGHEST_PROTOCOL  # as pickle reads it


def test_unknown_serializer_lists_installed() -> None:
    from sitq import ConfigurationError

    with pytest.raises(ConfigurationError) as info:
        resolve_serializer("yaml")
    assert "cloudpickle" in str(info.value) and "msgpack" in str(info.value)


def test_serializer_instances_and_classes_accepted() -> None:
    instance = MsgpackSerializer()
    assert resolve_serializer(instance) is instance
    assert isinstance(resolve_serializer(CloudpickleSerializer), CloudpickleSerializer)
    assert isinstance(resolve_serializer(None), CloudpickleSerializer)
    assert issubclass(CloudpickleSerializer, Serializer)


class PlainJson(Serializer):
    """A plugin-style serializer that raises its library's own errors, as third-party code often does."""

    name = "plainjson"

    def dumps(self, obj: object) -> bytes:
        import json

        return json.dumps(obj).encode()

    def loads(self, data: bytes) -> object:
        import json

        return json.loads(data)


@pytest.mark.asyncio
async def test_a_plugin_serializers_own_errors_become_serialization_errors() -> None:
    from datetime import UTC, datetime

    from sitq import Result, SQLiteBackend, TaskQueue

    async with TaskQueue(SQLiteBackend(":memory:"), serializer=PlainJson()) as queue:
        with pytest.raises(SerializationError) as enqueue_error:
            await queue.enqueue(print, object())  # json cannot encode a function or an object
        assert "plainjson" in str(enqueue_error.value) and isinstance(enqueue_error.value.__cause__, TypeError)
        with pytest.raises(SerializationError) as many_error:
            await queue.enqueue_many([(print, (object(),))])
        assert isinstance(many_error.value.__cause__, TypeError)
        assert (await queue.counts())["queued"] == 0  # nothing stored
        now = datetime.now(UTC)
        bad = Result(
            id="r", task_id="t", status="success", value=b"\xff", error=None, traceback=None,
            enqueued_at=now, started_at=now, finished_at=now, attempts=1, serializer="plainjson",
        )  # fmt: skip
        with pytest.raises(SerializationError) as loads_error:
            queue.deserialize_result(bad)
        assert "task t" in str(loads_error.value) and isinstance(loads_error.value.__cause__, UnicodeDecodeError)


@pytest.mark.asyncio
async def test_msgpack_refuses_tuple_keys_it_could_not_load_back() -> None:
    from sitq import SQLiteBackend, TaskQueue

    with pytest.raises(SerializationError, match=r"argument 0 of .*add \(dict\).*would not load back"):
        MsgpackSerializer().dumps_call(add, ({(1, 2): 3}, 1), {})
    with pytest.raises(SerializationError, match="would not load back"):
        MsgpackSerializer().dumps({"nested": [{("a",): 1}]})  # a task's return value is checked the same way
    async with TaskQueue(SQLiteBackend(":memory:"), serializer="msgpack") as queue:
        with pytest.raises(SerializationError):
            await queue.enqueue(add, {(1, 2): 3}, 1)
        assert (await queue.counts())["queued"] == 0  # nothing stored
    assert MsgpackSerializer().loads(MsgpackSerializer().dumps({1: [2, 3], "k": (4,)})) == {1: [2, 3], "k": [4]}


@pytest.mark.asyncio
async def test_a_batch_item_that_cannot_be_serialised_is_named() -> None:
    from sitq import SQLiteBackend, TaskQueue

    async with TaskQueue(SQLiteBackend(":memory:"), serializer="msgpack") as queue:
        with pytest.raises(SerializationError, match=r"^calls\[2\]: msgpack cannot serialise argument 1"):
            await queue.enqueue_many([(add, (1, 2)), (add, (3, 4)), (add, (5, Point(6)))])
        assert (await queue.counts())["queued"] == 0


def test_cloudpickle_is_imported_when_the_queue_is_made_not_by_a_first_enqueue_on_some_thread(
    tmp_path: Path,
) -> None:
    """An import in progress on another thread at a fork left the child's first enqueue stuck on the import lock."""
    import subprocess
    import sys

    code = (
        "import sys, sitq\n"
        "assert 'cloudpickle' not in sys.modules, 'imported by import sitq already: this test shows nothing'\n"
        f"queue = sitq.TaskQueue('sqlite:///{tmp_path / 'q.db'}')\n"
        "print('cloudpickle' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "True", done.stderr


def test_a_queue_with_a_chosen_serializer_reads_only_its_own_results(tmp_path: Path) -> None:
    """A msgpack queue never unpickles: a result row rewritten to say cloudpickle (someone with write access to the
    store, the threat msgpack is chosen against) is refused, not loaded."""
    marker = tmp_path / "ran"
    foreign = Result(
        id="t", task_id="t", status="success", value=pickle.dumps(_Touches(str(marker))), serializer="cloudpickle"
    )
    strict = TaskQueue(SQLiteBackend(tmp_path / "strict.db"), serializer="msgpack")
    with pytest.raises(SerializationError) as info:
        strict.deserialize_result(foreign)
    assert "msgpack" in str(info.value) and "cloudpickle" in str(info.value)
    assert not marker.exists()
    own = Result(id="u", task_id="u", status="success", value=strict.serializer.dumps(5), serializer="msgpack")
    assert strict.deserialize_result(own) == 5
    default = TaskQueue(SQLiteBackend(tmp_path / "default.db"))  # no choice made: reads what any serializer wrote
    assert default.deserialize_result(own) == 5


@pytest.mark.parametrize("chosen", [None, "msgpack"], ids=["default queue", "msgpack queue"])
@pytest.mark.parametrize(
    ("stored", "says"),
    [
        (None, "it names no serializer (serializer=None)"),
        ("", "it names no serializer (serializer='')"),
        ("nope", "it was written by serializer 'nope', which is not available here: no serializer named 'nope'"),
    ],
)
def test_a_result_naming_no_or_an_unknown_serializer_says_so(
    tmp_path: Path, chosen: str | None, stored: Any, says: str
) -> None:
    """The advice was "use a queue with serializer=None" or "serializer='nope'": impossible to follow."""
    queue = TaskQueue(SQLiteBackend(tmp_path / "q.db"), serializer=chosen)
    result = Result(id="r", task_id="T1", status="success", value=b"x", serializer=stored)
    with pytest.raises(SerializationError) as info:
        queue.deserialize_result(result)
    assert f"cannot read the result of task T1: {says}" in str(info.value)
    assert "use a queue with" not in str(info.value)


class _Touches:
    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (self.path, "w"))


@pytest.mark.parametrize(
    ("path", "hint"),
    [("__main__:not_here", "not importable by another process"), ("no_such_module_xyz:work", "PYTHONPATH")],
)
def test_a_task_function_that_cannot_be_imported_says_why(path: str, hint: str) -> None:
    """A newcomer's msgpack task defined in their script failed in a worker process with no hint at the cause."""
    from sitq_core.serializers import _import_path

    with pytest.raises(SerializationError) as info:
        _import_path(path)
    assert hint in str(info.value)


def test_a_missing_dependency_is_not_blamed_on_the_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The task's module is importable; a package it imports is missing: the hint must not send the user to PATH."""
    from sitq_core.serializers import _import_path

    (tmp_path / "sitq_needs_a_dependency.py").write_text("import definitely_missing_dependency_xyz\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(SerializationError) as info:
        _import_path("sitq_needs_a_dependency:work")
    assert "definitely_missing_dependency_xyz" in str(info.value) and "PYTHONPATH" not in str(info.value)


@pytest.mark.asyncio
async def test_a_queue_with_an_allow_list_refuses_other_functions_and_stores_nothing(tmp_path: Path) -> None:
    from sitq import SQLiteBackend, TaskQueue

    only = MsgpackSerializer(allowed_tasks=[add])
    async with TaskQueue(SQLiteBackend(tmp_path / "allow.db"), serializer=only) as queue:
        kept = await queue.enqueue(add, 1, 2)
        with pytest.raises(
            SerializationError, match=r"'posix:getcwd' is not in this serializer's allowed_tasks"
        ) as info:
            await queue.enqueue(os.getcwd)
        assert info.value.operation == "dumps_call"
        assert [task.id for task in await queue.list_tasks()] == [kept]


_LOCK = __import__("threading").Lock()


def _uses_a_lock() -> None:
    with _LOCK:  # a global cloudpickle cannot carry along: shipped with a function defined in __main__
        pass


def test_cloudpickle_names_the_argument_that_cannot_be_pickled() -> None:
    import threading

    serializer = CloudpickleSerializer()
    with pytest.raises(SerializationError, match=r"keyword argument 'conn' of .*add \(lock\)") as error:
        serializer.dumps_call(add, (1,), {"conn": threading.Lock()})
    assert error.value.data_type == "lock" and error.value.__cause__ is not None
    with pytest.raises(SerializationError, match=r"argument 1 of .*add \(lock\)"):
        serializer.dumps_call(add, (1, threading.Lock()), {})


def test_cloudpickle_blames_the_function_when_what_it_refers_to_cannot_be_pickled() -> None:
    # as if defined in __main__ (a script): cloudpickle then ships the function with its globals
    shipped = type(_uses_a_lock)(_uses_a_lock.__code__, {"_LOCK": _LOCK, "__name__": "__main__"}, "job")
    shipped.__module__ = "__main__"
    with pytest.raises(SerializationError, match=r"the function __main__:_uses_a_lock itself \(function\).*refers to"):
        CloudpickleSerializer().dumps_call(shipped, (), {})


class TextJson(Serializer):
    """A mistaken plugin serializer: its dumps returns str."""

    name = "textjson"

    def dumps(self, obj: Any) -> bytes:
        import json

        return json.dumps(obj)  # type: ignore[return-value]

    def dumps_call(self, func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bytes:
        return self.dumps([f"{func.__module__}:{func.__qualname__}", list(args), kwargs])

    def loads(self, data: bytes) -> Any:
        import json

        return json.loads(data)


@pytest.mark.asyncio
async def test_a_serializer_returning_text_is_a_serialization_error_naming_it() -> None:
    async with TaskQueue(SQLiteBackend(":memory:"), serializer=TextJson()) as queue:
        with pytest.raises(SerializationError, match=r"serializer 'textjson' returned str, not bytes"):
            await queue.enqueue(add, 1, 2)
        assert (await queue.counts())["queued"] == 0


@pytest.mark.parametrize(
    ("make", "says"),
    [
        (lambda m: m.dumps(2**64), "an int outside the 64-bit range msgpack carries"),
        (lambda m: m.dumps([1, -(2**63) - 1]), "a list holding an int outside the 64-bit range"),
        (lambda m: m.dumps_call("abc".upper, (), {}), "is a method (of a str), not a module-level function"),
        (lambda m: m.dumps_call(Point, (1,), {}), "is a class, not a module-level function"),
    ],
    ids=["big-int", "big-int-inside", "builtin-method", "class"],
)
def test_msgpack_refusals_say_what_the_value_is(make: Any, says: str) -> None:
    """They said 'cannot serialise a int ... use ... int', 'is a ABCMeta', and ?:str.upper 'cannot be imported'."""
    with pytest.raises(SerializationError, match=re.escape(says)):
        make(MsgpackSerializer())


def test_msgpack_names_deep_nesting_not_an_unsupported_value() -> None:
    nested: list[Any] = []
    for _ in range(2000):
        nested = [nested]
    with pytest.raises(SerializationError, match="nested too deeply"):
        MsgpackSerializer().dumps(nested)


class _Unnamed(Serializer):  # forgot `name = "..."`: the base class's "" would be stored with every task
    def dumps(self, obj: Any) -> bytes:
        return pickle.dumps(obj)

    def loads(self, data: bytes) -> Any:
        return pickle.loads(data)


class _NumberNamed(_Unnamed):
    name = 42  # type: ignore[assignment]


@pytest.mark.parametrize("make", [_NumberNamed, lambda: _NumberNamed()])
def test_a_serializer_whose_name_is_not_a_str_is_refused_when_the_queue_or_worker_is_made(
    tmp_path: Path, make: Any
) -> None:
    from sitq import SQLiteBackend, TaskQueue, ValidationError, Worker

    backend = SQLiteBackend(tmp_path / "unnamed.db")
    for build in (lambda: TaskQueue(backend, serializer=make()), lambda: Worker(backend, serializer=make())):
        with pytest.raises(ValidationError, match="not a str") as info:
            build()
        assert info.value.parameter == "serializer"


@pytest.mark.asyncio
async def test_an_unnamed_serializer_is_warned_about_and_still_works_with_a_worker_given_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Refusing it broke queues that already worked, and left their stored tasks unrunnable (review)."""
    from sitq import SQLiteBackend, TaskQueue, Worker

    path = tmp_path / "unnamed.db"
    with caplog.at_level(logging.WARNING, logger="sitq.config"):
        queue = TaskQueue(SQLiteBackend(path), serializer=_Unnamed())
    assert any("has no name" in record.getMessage() for record in caplog.records)
    async with queue:
        ran = await queue.enqueue(tasks.add, 2, 3)
        worker = Worker(queue.backend, serializer=_Unnamed())
        await worker.start()
        result = await queue.get_result(ran, timeout=10)
        await worker.stop()
        assert result is not None and result.status == "success" and queue.deserialize_result(result) == 5
        orphan = await queue.enqueue(tasks.add, 1, 1)
    async with TaskQueue(SQLiteBackend(path)) as plain:
        worker = Worker(plain.backend)  # looks serializers up by the name each task stores
        await worker.start()
        failed = await plain.get_result(orphan, timeout=10)
        await worker.stop()
    assert failed is not None and failed.status == "failed"
    assert failed.error is not None and "serializer without a name" in failed.error


def test_without_the_msgpack_package_the_hint_installs_it_directly() -> None:
    """'pip install sitq[msgpack]' would fetch PyPI's unrelated 'sitq' (sitq is not released): name msgpack alone."""
    import subprocess
    import sys

    code = (
        "import io, sys\n"
        "sys.modules['msgpack'] = None  # as if msgpack were not installed\n"
        "from sitq import MsgpackSerializer, SerializationError\n"
        "from sitq_core.cli import main\n"
        "try:\n"
        "    MsgpackSerializer()\n"
        "except SerializationError as exc:\n"
        "    print(exc.message)\n"
        "out = io.StringIO()\n"
        "main(['backends'], stdout=out)\n"
        "print(next(line for line in out.getvalue().splitlines() if line.split()[:2] == ['serializer', 'msgpack']))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    error, listed = done.stdout.splitlines()
    assert error.startswith("serializer 'msgpack' needs the msgpack package: pip install msgpack ("), done.stdout
    assert "where sitq's own release is on your package index" in error, done.stdout  # the extra only there
    assert listed.endswith("not installed: needs the msgpack package: pip install msgpack"), done.stdout


@pytest.mark.parametrize(
    ("payload", "says"),
    [
        (b"\xc1", "cannot deserialise msgpack payload: not valid msgpack data (FormatError)"),
        (b"\x91" * 2000 + b"\x00", "cannot deserialise msgpack payload: nested too deeply (StackError)"),
        (b"\x01\x02", "cannot deserialise msgpack payload: ExtraData: unpack(b) received extra data."),
    ],
    ids=["format", "stack", "extra"],
)
def test_a_corrupt_msgpack_payload_is_described_without_a_dangling_colon(payload: bytes, says: str) -> None:
    """FormatError and StackError carry no text: the message ended in 'FormatError: ' with nothing after it."""
    with pytest.raises(SerializationError) as info:
        MsgpackSerializer().loads(payload)
    assert info.value.message == says


class _Unpicklable:
    """Refuses pickling with an exception that carries no text."""

    def __reduce__(self) -> tuple[Any, ...]:
        raise ValueError()


class _NoRepr:
    def __repr__(self) -> str:
        raise RuntimeError("no repr")


def test_a_pickling_error_without_text_is_named_by_its_type_not_a_dangling_colon() -> None:
    """``cannot serialise _Unpicklable with cloudpickle: `` ended with nothing after the colon."""
    with pytest.raises(SerializationError) as info:
        CloudpickleSerializer().dumps(_Unpicklable())
    assert info.value.message == "cannot serialise _Unpicklable with cloudpickle: ValueError"
    with pytest.raises(SerializationError) as info:
        CloudpickleSerializer().dumps_call(add, (_Unpicklable(),), {})
    assert info.value.message.endswith("with cloudpickle: ValueError")


def test_serializer_arguments_whose_repr_raises_get_a_validation_error() -> None:
    """``{value!r}`` in the checks raised the value's RuntimeError instead of the ValidationError."""
    shown = "<_NoRepr object (repr failed: RuntimeError: no repr)>"
    for make, parameter in (
        (lambda: CloudpickleSerializer(protocol=_NoRepr()), "protocol"),  # type: ignore[arg-type]
        (lambda: MsgpackSerializer(allowed_tasks=[_NoRepr()]), "allowed_tasks"),  # type: ignore[list-item]
    ):
        with pytest.raises(ValidationError) as info:
            make()
        assert info.value.parameter == parameter and shown in str(info.value)
