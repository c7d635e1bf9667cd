"""TaskBatch: enqueue_many's lazily built tasks behave like a list."""

from __future__ import annotations


def test_task_batch_slices_like_a_list() -> None:
    from sitq_core.batch import TaskBatch
    from sitq_core.models import Task

    tasks = [Task(id=f"{n:032x}", payload=b"p") for n in range(10)]
    for pattern in (slice(-8, -5), slice(-5, None, -1), slice(None, None, 3), slice(7, 2, -2), slice(4, 4)):
        assert TaskBatch(iter(tasks), 10)[pattern] == tasks[pattern], pattern
    assert TaskBatch(iter(tasks), 10)[-1] == tasks[-1]
