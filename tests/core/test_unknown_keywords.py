"""enqueue refuses a keyword the function cannot take, when its signature says so, before anything is stored.

``q.enqueue(echo, 1, queue="mail")`` (Celery's ``queue=``) for ``echo(value)`` was stored, then failed in
the worker with TypeError. Only sitq's own option names (``delay``, ...) were refused.
"""

from __future__ import annotations

import functools
import inspect
from pathlib import Path
from typing import Any

import pytest

import sitq
from sitq import Call, SQLiteBackend, SyncTaskQueue, TaskQueue, ValidationError, Worker

import sitq_test_tasks as tasks


@pytest.fixture
def queue(tmp_path: Path) -> Any:
    with SyncTaskQueue(SQLiteBackend(tmp_path / "q.db")) as q:
        yield q


def only_positional(a: int, /) -> int:
    return a


class Counted:
    """A callable whose signature counts how often it is read (``inspect.signature`` reads ``__signature__``)."""

    reads = 0

    @property
    def __signature__(self) -> inspect.Signature:
        type(self).reads += 1
        return inspect.Signature([inspect.Parameter("x", inspect.Parameter.POSITIONAL_OR_KEYWORD)])

    def __call__(self, x: int) -> int:
        return x


@pytest.mark.parametrize(
    ("keyword", "option"),
    [("queue", "queue_name"), ("countdown", "delay"), ("retries", "max_retries"), ("time_limit", "timeout")],
)
def test_another_queues_option_name_points_to_with_options(queue: Any, keyword: str, option: str) -> None:
    with pytest.raises(ValidationError) as info:
        queue.enqueue(tasks.echo, 1, **{keyword: 5})
    assert info.value.parameter == keyword and info.value.value == 5
    text = str(info.value)
    assert f"sitq_test_tasks:echo takes no argument {keyword!r}" in text, text
    assert f"with_options({option}=...)" in text, text
    assert queue.counts()["queued"] == 0


def test_an_option_sitq_does_not_have_says_so_and_lists_the_options(queue: Any) -> None:
    with pytest.raises(ValidationError) as info:
        queue.enqueue(tasks.echo, 1, expires=60)
    text = str(info.value)
    assert info.value.parameter == "expires" and "takes no argument 'expires'" in text, text
    assert "sitq has no such task option" in text and "with_options(" in text and "max_retries" in text, text


def test_any_other_unknown_keyword_is_refused_naming_it_and_what_the_function_takes(queue: Any) -> None:
    with pytest.raises(ValidationError) as info:
        queue.enqueue(tasks.add, 1, c=3)
    text = str(info.value)
    assert info.value.parameter == "c" and "sitq_test_tasks:add takes no argument 'c'" in text, text
    assert "a, b" in text and "with_options" not in text, text
    with pytest.raises(ValidationError, match="takes no argument 'a'"):
        queue.enqueue(only_positional, a=1)  # a positional-only parameter cannot be given by name
    assert queue.counts()["queued"] == 0


def test_every_enqueue_checks_it_and_enqueue_many_names_the_item(queue: Any) -> None:
    with pytest.raises(ValidationError, match=r"^sitq_test_tasks:add takes no argument 'c'"):
        queue.enqueue_call(tasks.add, (1,), {"c": 3})
    with pytest.raises(ValidationError, match=r"^sitq_test_tasks:add takes no argument 'c'"):
        queue.with_options(priority=1).enqueue(tasks.add, 1, c=3)
    for calls in (
        [(tasks.add, (1,)), Call(tasks.add, (1,), {"c": 3})],
        [(tasks.add, (1,)), (tasks.add, (1,), {"c": 3})],
    ):
        with pytest.raises(ValidationError) as info:
            queue.enqueue_many(calls)
        assert str(info.value).startswith("calls[1]: sitq_test_tasks:add takes no argument 'c'"), str(info.value)
        assert info.value.parameter == "c"
    decorated = sitq.task(tasks.add)
    with pytest.raises(ValidationError, match="takes no argument 'c'"):
        queue.enqueue(decorated, 1, c=3)  # read through to the function the task wraps
    with pytest.raises(ValidationError, match="takes no argument 'c'"):
        queue.enqueue(functools.partial(tasks.add, 1), c=3)
    assert queue.counts()["queued"] == 0


@pytest.mark.asyncio
async def test_what_the_function_can_take_is_stored_and_runs(tmp_path: Path) -> None:
    async with TaskQueue(SQLiteBackend(tmp_path / "q.db")) as queue:
        ids = [
            await queue.enqueue(tasks.add, a=1, b=2),  # by name
            await queue.enqueue(dict, a=1),  # a builtin without a readable signature: not checked
            await queue.enqueue(sorted, [3, 1, 2], reverse=True),
            await queue.enqueue_call(tasks.decorated_async, (1,), {"eta": "mine"}),
            await queue.enqueue(functools.partial(tasks.add, b=1), 1, b=5),  # a partial's keyword, given again
        ]
        worker = Worker(queue.backend)
        await worker.start()
        try:
            results = [await queue.get_result(task_id, timeout=30) for task_id in ids]
        finally:
            await worker.stop()
        values = [None if result is None else queue.deserialize_result(result) for result in results]
    assert values == [3, {"a": 1}, [3, 2, 1], "1 mine", 6]


def test_a_function_with_kwargs_takes_any_keyword(queue: Any) -> None:
    def anything(**kwargs: Any) -> dict[str, Any]:
        return kwargs

    assert queue.enqueue(anything, queue="mail", c=3)
    assert queue.counts()["queued"] == 1


def test_the_signature_is_read_once_per_function_and_never_without_keywords(queue: Any) -> None:
    counted = Counted()
    for n in range(3):
        queue.enqueue(counted, n)
    assert Counted.reads == 0  # no keywords: no signature work on the hot path
    for n in range(3):
        queue.enqueue(counted, x=n)
    with pytest.raises(ValidationError, match="takes no argument 'y'"):
        queue.enqueue(counted, y=1)
    queue.enqueue_many([Call(counted, (), {"x": 1}), Call(counted, (), {"x": 2})])
    assert Counted.reads == 1
