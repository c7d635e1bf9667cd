"""@sitq.task and @queue.task: default options, typed enqueue, both serializers."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import pytest

from sitq import SQLiteBackend, TaskFunction, TaskQueue, ValidationError, Worker, task

import sitq_test_tasks as tasks


def test_direct_call_runs_the_function() -> None:
    assert isinstance(tasks.decorated_flaky, TaskFunction)
    assert tasks.decorated_flaky.__name__ == "decorated_flaky"
    assert tasks.decorated_flaky.options.max_retries == 2


def test_unknown_option_is_named() -> None:
    with pytest.raises(ValidationError) as info:
        task(max_retrys=3)
    assert info.value.parameter == "max_retrys"


def test_importable_task_pickles_by_name() -> None:
    assert pickle.loads(pickle.dumps(tasks.decorated_async)) is tasks.decorated_async


@pytest.mark.asyncio
@pytest.mark.parametrize("serializer", ["cloudpickle", "msgpack"])
async def test_decorator_options_apply_and_retries_run(tmp_path: Path, serializer: str) -> None:
    async with TaskQueue(SQLiteBackend(tmp_path / "d.db"), serializer=serializer) as queue:
        task_id = await queue.enqueue(tasks.decorated_flaky, str(tmp_path / "count"), 2)
        stored = await queue.get_task(task_id)
        assert stored is not None
        assert (stored.max_retries, stored.priority, stored.queue) == (2, 4, "decorated")
        worker = Worker(queue.backend)
        await worker.start()
        result = await queue.get_result(task_id, timeout=10)
        await worker.stop()
        assert result is not None and result.status == "success" and result.attempts == 3


@pytest.mark.asyncio
async def test_with_options_overrides_the_decorator(tmp_path: Path) -> None:
    async with TaskQueue(SQLiteBackend(tmp_path / "o.db")) as queue:
        task_id = await queue.with_options(priority=9).enqueue(tasks.decorated_flaky, "x", 0)
        stored = await queue.get_task(task_id)
        assert stored is not None and (stored.priority, stored.max_retries) == (9, 2)


@pytest.mark.asyncio
async def test_bound_task_enqueue_keeps_every_keyword_for_the_function(tmp_path: Path) -> None:
    async with TaskQueue(SQLiteBackend(tmp_path / "b.db"), serializer="msgpack") as queue:
        bound = tasks.decorated_async.bind(queue)
        task_id = await bound.enqueue(7, eta="not a schedule")
        worker = Worker(queue.backend)
        await worker.start()
        result = await queue.get_result(task_id, timeout=10)
        await worker.stop()
        assert result is not None and queue.deserialize_result(result) == "7 not a schedule"


@pytest.mark.asyncio
async def test_queue_task_decorator_and_unbound_error(tmp_path: Path) -> None:
    async with TaskQueue(SQLiteBackend(tmp_path / "q.db")) as queue:

        @queue.task(priority=2)
        def local_double(x: int) -> int:
            return 2 * x

        assert local_double(4) == 8
        task_id = await local_double.enqueue(21)
        worker = Worker(queue.backend)
        await worker.start()
        result = await queue.get_result(task_id, timeout=10)
        await worker.stop()
        assert result is not None and queue.deserialize_result(result) == 42
        with pytest.raises(ValidationError, match="not bound to a queue"):
            await task(local_double.__wrapped__).enqueue(1)


@pytest.mark.asyncio
async def test_with_options_can_set_a_decorated_option_back_to_the_default(tmp_path: Path) -> None:
    async with TaskQueue(SQLiteBackend(tmp_path / "o.db")) as queue:
        back = await queue.with_options(priority=0, queue_name="default").enqueue(tasks.decorated_flaky, "x", 0)
        fewer = await queue.with_options(priority=1, max_retries=0).enqueue(tasks.decorated_flaky, "x", 0)
        kept = await queue.enqueue(tasks.decorated_flaky, "x", 0)
        many = await queue.with_options(max_retries=0).enqueue_many([(tasks.decorated_flaky, ("x", 0))])
        stored = [await queue.get_task(task_id) for task_id in (back, fewer, kept, *many)]
        assert [(t.priority, t.queue, t.max_retries) for t in stored if t is not None] == [
            (0, "default", 2),
            (1, "decorated", 0),
            (4, "decorated", 2),
            (4, "decorated", 0),
        ]


@pytest.mark.asyncio
async def test_options_built_directly_still_override_a_decorated_task(tmp_path: Path) -> None:
    from sitq_core.options import TaskOptions
    from sitq_core.queue import TaskQueueView

    async with TaskQueue(SQLiteBackend(tmp_path / "v.db")) as queue:
        view = TaskQueueView(queue, TaskOptions(priority=3))
        stored = await queue.get_task(await view.enqueue(tasks.decorated_flaky, "x", 0))
        assert stored is not None and (stored.priority, stored.queue) == (3, "decorated")


@pytest.mark.asyncio
async def test_stacked_decorators_keep_both_options_and_the_outer_queue(tmp_path: Path) -> None:
    """functools.update_wrapper copied the inner task's options and (unbound) queue over the outer ones."""
    queue = TaskQueue(SQLiteBackend(tmp_path / "stacked.db"))

    @queue.task(priority=7, queue_name="urgent")
    @task(max_retries=2, priority=1)
    def job(x: int) -> int:
        return x

    assert job.queue is queue
    assert (job.options.priority, job.options.queue_name, job.options.max_retries) == (7, "urgent", 2)
    assert job(5) == 5 and job.__wrapped__.__name__ == "job"  # one layer: the plain function
    async with queue:
        stored = await queue.get_task(await job.enqueue(1))
    assert stored is not None and (stored.priority, stored.queue, stored.max_retries) == (7, "urgent", 2)


def test_a_function_with_its_own_options_attribute_keeps_the_decorators() -> None:
    def job() -> None:
        pass

    job.options = "the function's own"  # type: ignore[attr-defined]
    decorated = task(priority=3)(job)
    assert decorated.options.priority == 3


@pytest.mark.asyncio
async def test_a_parameter_named_self_can_be_passed_by_keyword(tmp_path: Path) -> None:
    def describe(self: str, other: str = "") -> str:  # a plain function whose first parameter is named self
        return f"{self}/{other}"

    async with TaskQueue(SQLiteBackend(tmp_path / "self.db")) as queue:
        bound = queue.task(describe)
        assert bound(self="a", other="b") == "a/b"
        task_id = await bound.enqueue(self="c", other="d")
        worker = Worker(queue.backend)
        await worker.start()
        try:
            result = await queue.get_result(task_id, timeout=10)
        finally:
            await worker.stop()
    assert result is not None and queue.deserialize_result(result) == "c/d"


DECORATED_SCRIPT = """
from sitq import TaskQueue

queue = TaskQueue(URL)


@queue.task(max_retries=3, priority=7, queue_name="mail")
async def resize(image: str, width: int = 800) -> str:
    return f"{image} at {width}px"


@queue.task()
async def upload(image: str) -> str:
    return await resize.enqueue(image, width=640)  # a follow-up from inside a task


@queue.task()
async def upload_plain(image: str) -> str:
    return await queue.enqueue(resize, image)  # through the queue: the decorator's options still apply
"""


@pytest.mark.asyncio
async def test_decorated_tasks_of_a_script_chain_with_their_options(tmp_path: Path) -> None:
    """Shipped by value, a __main__ task function arrived as its plain function: no .enqueue, no options."""
    import warnings

    script: dict[str, object] = {"__name__": "__main__", "URL": f"sqlite:///{tmp_path / 'chain.db'}"}
    exec(DECORATED_SCRIPT, script)  # as a script run with python: cloudpickle ships these by value
    queue: TaskQueue = script["queue"]  # type: ignore[assignment]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)  # each task's copy of the queue is let go unclosed
        async with queue:
            worker = Worker(queue.backend)
            await worker.start()
            try:
                followups = []
                for name in ("upload", "upload_plain"):
                    done = await queue.get_result(await script[name].enqueue("cat.png"), timeout=20)  # type: ignore[attr-defined]
                    assert done is not None and done.status == "success", done
                    followups.append(queue.deserialize_result(done))
                for task_id in followups:
                    stored = await queue.get_task(task_id)
                    assert stored is not None and (stored.queue, stored.priority, stored.max_retries) == ("mail", 7, 3)
                    assert await queue.get_result(task_id, timeout=20) is not None
            finally:
                await worker.stop()


@pytest.mark.asyncio
async def test_a_script_task_bound_to_an_in_memory_queue_still_enqueues(tmp_path: Path) -> None:
    """An in-memory store's queue cannot travel: the task goes without it, and says so if asked to enqueue."""
    script: dict[str, object] = {"__name__": "__main__", "URL": "sqlite://"}
    exec(DECORATED_SCRIPT, script)
    queue: TaskQueue = script["queue"]  # type: ignore[assignment]
    async with queue:
        worker = Worker(queue.backend)
        await worker.start()
        try:
            done = await queue.get_result(await script["upload"].enqueue("cat.png"), timeout=20)  # type: ignore[attr-defined]
        finally:
            await worker.stop()
    assert done is not None and done.status == "failed" and "is not bound to a queue" in (done.error or ""), done


def _bad_queues(tmp_path: Path) -> list[object]:
    from sitq import SyncTaskQueue

    return [f"sqlite:///{tmp_path / 'url.db'}", 42, SyncTaskQueue(SQLiteBackend(tmp_path / "sync.db"))]


def test_bind_and_the_decorator_refuse_what_is_not_a_queue_at_once(tmp_path: Path) -> None:
    bad_queue: Any
    for bad_queue in _bad_queues(tmp_path):
        for make in (
            lambda: tasks.decorated_async.bind(bad_queue),  # noqa: B023 - called within this iteration
            lambda: task(queue=bad_queue),  # noqa: B023
        ):
            with pytest.raises(ValidationError, match="queue must be a TaskQueue") as info:
                make()
            assert info.value.parameter == "queue"
    unbound: Any = None
    assert tasks.decorated_async.bind(unbound).queue is None  # None unbinds, as before


@pytest.mark.asyncio
async def test_a_view_of_a_queue_can_still_be_bound(tmp_path: Path) -> None:
    async with TaskQueue(SQLiteBackend(tmp_path / "view.db")) as queue:
        view: Any = queue.with_options(priority=7)
        task_id = await tasks.decorated_async.bind(view).enqueue(1)
        stored = await queue.get_task(task_id)
        assert stored is not None and stored.priority == 7


def test_an_option_given_as_none_is_left_as_it_is_in_the_decorators(tmp_path: Path) -> None:
    queue = TaskQueue(SQLiteBackend(tmp_path / "none.db"))

    def f(x: int) -> int:
        return x

    assert task(max_retries=None)(f).options == task(f).options
    assert queue.task(priority=None, queue_name=None)(f).options == task(f).options
    stacked = queue.task(priority=None)(task(priority=5, max_retries=None)(f))
    assert (stacked.options.priority, stacked.options.max_retries) == (5, 0)  # the inner 5 stays
    with pytest.raises(ValidationError) as info:
        task(max_retrys=None)  # an unknown option is still named, whatever its value
    assert info.value.parameter == "max_retrys"


# ------------------------------------------------------------------ methods, outer wrappers, callable objects


async def _run_one(queue: TaskQueue, task_id: str, queues: list[str] | None = None) -> Any:
    worker = Worker(queue.backend, queues=queues) if queues else Worker(queue.backend)
    await worker.start()
    try:
        result = await queue.get_result(task_id, timeout=10)
    finally:
        await worker.stop()
    assert result is not None and result.status == "success", result
    return queue.deserialize_result(result)


def test_a_decorated_method_binds_like_a_function() -> None:
    """TaskFunction had no __get__: ``Scaler(3).scale(2)`` passed 2 as self ("missing ... argument: 'x'")."""
    import asyncio

    scaler = tasks.Scaler(3)
    assert scaler.scale(2) == 6
    assert asyncio.run(scaler.scale_later(2)) == 6
    assert tasks.Scaler.scale(scaler, 2) == 6  # read from the class: the task itself, self passed by hand
    assert isinstance(tasks.Scaler.__dict__["scale"], TaskFunction)
    assert tasks.Scaler.scale is tasks.Scaler.__dict__["scale"]
    bound = scaler.scale
    assert isinstance(bound, TaskFunction) and bound.options.priority == 6
    assert bound.__wrapped__.__self__ is scaler  # type: ignore[attr-defined]
    assert bound.__qualname__ == "Scaler.scale"


@pytest.mark.asyncio
async def test_a_decorated_method_enqueues_with_its_instance_and_options(tmp_path: Path) -> None:
    async with TaskQueue(SQLiteBackend(tmp_path / "m.db")) as queue:
        task_id = await queue.enqueue(tasks.Scaler(3).scale, 5)
        stored = await queue.get_task(task_id)
        assert stored is not None
        assert (stored.priority, stored.queue, stored.max_retries) == (6, "methods", 1)
        assert stored.function_name == "sitq_test_tasks:Scaler.scale"
        assert await _run_one(queue, task_id, ["methods"]) == 15
        many = await queue.enqueue_many([(tasks.Scaler(4).scale_later, (5,))])
        stored = await queue.get_task(many[0])
        assert stored is not None and stored.queue == "methods"
        assert await _run_one(queue, many[0], ["methods"]) == 20
        # f.enqueue on a bound method: the call with its instance, on the task's queue
        task_id = await tasks.Scaler(7).scale.bind(queue).enqueue(2)
        assert await _run_one(queue, task_id, ["methods"]) == 14


@pytest.mark.asyncio
async def test_a_method_of_a_class_bound_to_a_queue_enqueues_itself(tmp_path: Path) -> None:
    async with TaskQueue(SQLiteBackend(tmp_path / "qm.db")) as queue:

        class Greeter:
            def __init__(self, greeting: str) -> None:
                self.greeting = greeting

            @queue.task(priority=2)
            async def greet(self, name: str) -> str:
                return f"{self.greeting}, {name}"

        greeter = Greeter("hello")
        assert await greeter.greet("direct") == "hello, direct"
        task_id = await greeter.greet.enqueue("queued")
        stored = await queue.get_task(task_id)
        assert stored is not None and stored.priority == 2
        assert await _run_one(queue, task_id) == "hello, queued"


def test_a_bound_decorated_method_pickles_with_its_instance() -> None:
    import inspect

    import cloudpickle

    bound = tasks.Scaler(3).scale.bind(None)
    for dumps in (pickle.dumps, cloudpickle.dumps):
        loaded = pickle.loads(dumps(bound))
        assert isinstance(loaded, TaskFunction) and loaded(4) == 12
        assert loaded.options == bound.options and loaded.__wrapped__.__self__.factor == 3  # type: ignore[attr-defined]
        assert not isinstance(loaded.__wrapped__.__func__, TaskFunction)  # type: ignore[attr-defined]
    assert pickle.loads(pickle.dumps(tasks.Scaler.scale)) is tasks.Scaler.scale  # the class's: by name
    redecorated = task(priority=1)(tasks.Scaler(5).scale)  # stacked over a bound one: still a bound one
    for dumps in (pickle.dumps, cloudpickle.dumps):
        loaded = pickle.loads(dumps(redecorated))
        assert loaded(2) == 10 and (loaded.options.priority, loaded.options.queue_name) == (1, "methods")
        assert inspect.ismethod(loaded.__wrapped__)  # the method itself, not a task in a task


@pytest.mark.asyncio
async def test_msgpack_refuses_a_decorated_method_at_enqueue(tmp_path: Path) -> None:
    from sitq import SerializationError

    async with TaskQueue(SQLiteBackend(tmp_path / "mm.db"), serializer="msgpack") as queue:
        with pytest.raises(SerializationError, match=r"sitq_test_tasks:Scaler\.scale is a method \(of a Scaler\)"):
            await queue.enqueue(tasks.Scaler(3).scale, 5)
        assert await queue.list_tasks() == []


@pytest.mark.asyncio
@pytest.mark.parametrize("serializer", ["cloudpickle", "msgpack"])
async def test_a_wraps_decorator_outside_the_task_keeps_its_options(tmp_path: Path, serializer: str) -> None:
    """``@logged @sitq.task(...)``: the options were dropped (priority 0, queue 'default'), the wrapper kept."""
    async with TaskQueue(SQLiteBackend(tmp_path / "w.db"), serializer=serializer) as queue:
        task_id = await queue.enqueue(tasks.wrapped_outside, 1)
        stored = await queue.get_task(task_id)
        assert stored is not None
        assert (stored.priority, stored.queue, stored.max_retries) == (4, "wrapped", 2)
        assert stored.function_name == "sitq_test_tasks:wrapped_outside"
        assert list(await _run_one(queue, task_id, ["wrapped"])) == ["logged", 10]  # the outer wrapper ran
        (many,) = await queue.enqueue_many([(tasks.wrapped_outside, (2,))])
        viewed = await queue.with_options(priority=9).enqueue(tasks.wrapped_outside, 3)
        stored_many, stored_viewed = await queue.get_task(many), await queue.get_task(viewed)
        assert stored_many is not None and (stored_many.priority, stored_many.queue) == (4, "wrapped")
        assert stored_viewed is not None and (stored_viewed.priority, stored_viewed.queue) == (9, "wrapped")


def test_the_task_under_wrappers_is_found_within_a_bound() -> None:
    import functools

    from sitq_core.task import WRAPPED_DEPTH, task_of

    def layered(depth: int) -> Any:
        func: Any = tasks.decorated_flaky
        for _ in range(depth):
            func = functools.wraps(func)(lambda *a, _f=func: _f(*a))
        return func

    assert task_of(tasks.decorated_flaky) is tasks.decorated_flaky
    assert task_of(tasks.wrapped_outside) is tasks.wrapped_outside.__wrapped__
    assert task_of(layered(WRAPPED_DEPTH)) is tasks.decorated_flaky
    assert task_of(layered(WRAPPED_DEPTH + 1)) is None
    assert task_of(tasks.add) is None

    class Loop:
        def __call__(self) -> None: ...

    looped: Any = Loop()
    looped.__wrapped__ = looped  # a cycle ends at the bound

    class Raising:
        def __getattr__(self, name: str) -> Any:
            raise RuntimeError(name)

        def __call__(self) -> None: ...

    assert task_of(looped) is None and task_of(Raising()) is None


@pytest.mark.asyncio
async def test_a_decorated_callable_object_or_partial_is_named_as_undecorated(tmp_path: Path) -> None:
    import functools

    from sitq_core.serializers import function_path

    partial_task = task(functools.partial(tasks.add, 1))
    assert function_path(tasks.decorated_call_obj) == "sitq_test_tasks:CallObj" == function_path(tasks.CallObj())
    assert function_path(partial_task) == "functools:partial" == function_path(functools.partial(tasks.add, 1))
    assert repr(tasks.decorated_call_obj) == "<sitq task sitq_test_tasks:CallObj>"
    assert repr(partial_task) == "<sitq task functools:partial>"
    assert repr(tasks.decorated_flaky) == "<sitq task sitq_test_tasks:decorated_flaky>"
    with pytest.raises(ValidationError, match=r"functools:partial is not bound to a queue"):
        await partial_task.enqueue()  # it said AttributeError: no attribute '__qualname__'
    async with TaskQueue(SQLiteBackend(tmp_path / "n.db")) as queue:
        stored = await queue.get_task(await queue.enqueue(tasks.decorated_call_obj, 1))
        assert stored is not None and stored.function_name == "sitq_test_tasks:CallObj"
    from sitq import SerializationError

    async with TaskQueue(SQLiteBackend(tmp_path / "nm.db"), serializer="msgpack") as queue:
        with pytest.raises(SerializationError, match=r"sitq_test_tasks:CallObj is a CallObj, not a module-level"):
            await queue.enqueue(tasks.decorated_call_obj, 1)


def _is_coroutine_function(obj: object) -> tuple[bool, bool]:
    """What frameworks check before awaiting a callable: ``inspect``'s answer and ``asyncio``'s."""
    import asyncio
    import inspect
    import warnings

    with warnings.catch_warnings():  # asyncio.iscoroutinefunction is deprecated from Python 3.14 on
        warnings.simplefilter("ignore", DeprecationWarning)
        return inspect.iscoroutinefunction(obj), asyncio.iscoroutinefunction(obj)


@pytest.mark.asyncio
async def test_a_task_of_an_async_function_is_a_coroutine_function(tmp_path: Path) -> None:
    """A framework checking ``iscoroutinefunction`` treated an async task as sync (called it, never awaited)."""

    async def fetch(url: str) -> str:
        return url

    def render(name: str) -> str:
        return name

    async with TaskQueue(SQLiteBackend(tmp_path / "c.db")) as queue:
        for made in (task(fetch), task(max_retries=2)(fetch), queue.task(fetch), queue.task(priority=1)(fetch)):
            assert _is_coroutine_function(made) == (True, True), made
            assert _is_coroutine_function(made.bind(None)) == (True, True)
            assert _is_coroutine_function(task(priority=3)(made)) == (True, True)  # stacked
            assert await made("u") == "u"
        for plain in (task(render), queue.task(render), task(tasks.decorated_flaky)):
            assert _is_coroutine_function(plain) == (False, False), plain
    assert _is_coroutine_function(tasks.decorated_async) == (True, True)
    assert _is_coroutine_function(pickle.loads(pickle.dumps(tasks.decorated_async))) == (True, True)
    assert _is_coroutine_function(tasks.decorated_flaky) == (False, False)


def test_a_decorated_async_method_read_on_an_instance_is_a_coroutine_function() -> None:
    import cloudpickle

    scaler = tasks.Scaler(3)
    assert _is_coroutine_function(scaler.scale_later) == (True, True)
    assert _is_coroutine_function(tasks.Scaler.scale_later) == (True, True)
    assert _is_coroutine_function(pickle.loads(cloudpickle.dumps(scaler.scale_later))) == (True, True)
    assert _is_coroutine_function(scaler.scale) == (False, False)
    assert _is_coroutine_function(tasks.Scaler.scale) == (False, False)


@pytest.mark.asyncio
async def test_marking_a_task_async_leaves_its_signature_as_it_was(tmp_path: Path) -> None:
    """What makes it a coroutine function to inspect must not stand in for the function's own signature."""
    import functools
    import inspect

    function = tasks.decorated_async.__wrapped__
    assert inspect.signature(tasks.decorated_async) == inspect.signature(function)
    try:
        unfollowed = inspect.signature(tasks.decorated_async, follow_wrapped=False)
    except ValueError:  # a task has no signature of its own to read
        pass
    else:
        assert unfollowed == inspect.signature(function)
    assert str(inspect.signature(tasks.Scaler(2).scale_later)) == "(x: 'int') -> 'int'"
    assert not inspect.isfunction(tasks.decorated_async) and not inspect.isasyncgenfunction(tasks.decorated_async)
    async with TaskQueue(SQLiteBackend(tmp_path / "s.db")) as queue:  # read through a partial: still checked
        with pytest.raises(ValidationError, match="takes no argument 'delay'"):
            await queue.enqueue(functools.partial(tasks.decorated_async, 1), delay=5)
