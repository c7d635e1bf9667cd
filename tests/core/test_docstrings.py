"""What ``help()`` and an IDE's hover show for the queue classes and records: a line on every public member.

SyncTaskQueue's get_task/cancel/requeue/counts/list_tasks/purge/..., every
SyncTaskQueueView method, ``TaskQueue.backend``, ``Result.ok`` and
``TaskStatus.is_final``, among others, showed nothing.
"""

from __future__ import annotations

import inspect

import pytest

from sitq import (
    ReservedTask,
    Result,
    SyncTaskQueue,
    SyncTaskQueueView,
    TaskQueue,
    TaskQueueView,
    TaskStatus,
)

CLASSES = [TaskQueue, TaskQueueView, SyncTaskQueue, SyncTaskQueueView, Result, ReservedTask, TaskStatus]


def _members(cls: type) -> list[str]:
    """The public methods and properties ``cls`` defines itself (not the dataclass fields, not enum members)."""
    return [
        name
        for name, value in vars(cls).items()
        if not name.startswith("_") and (inspect.isfunction(value) or isinstance(value, property))
    ]


@pytest.mark.parametrize("cls", CLASSES, ids=[cls.__name__ for cls in CLASSES])
def test_every_public_member_says_what_it_is(cls: type) -> None:
    undocumented = [name for name in _members(cls) if not inspect.getdoc(getattr(cls, name))]
    assert undocumented == [], f"{cls.__name__}: no docstring on {undocumented}"
