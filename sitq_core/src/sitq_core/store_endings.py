"""Observers hear of tasks a store ends by itself, which no worker reports.

Inside ``reserve``, a store ends a task whose lease expired once too often
(a poison pill: ``failed``, "lease expired after N attempts") and a task
whose cancel was requested while its worker was gone (``cancelled``). The
worker that ran the task died, so no worker reports these outcomes: the
backend calls :func:`report` after its transaction, in the process that
reserved, and metrics plugins count every final failure.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING

from .errors import SitqError
from .models import Task, TaskStatus
from .plugins import get_plugin_manager

if TYPE_CHECKING:
    from .backend import Backend

__all__ = ["report", "report_ids", "wanted"]

log = logging.getLogger("sitq.plugins")


def wanted() -> bool:
    """True when an observer would hear of such endings (a backend skips reading the tasks otherwise)."""
    manager = get_plugin_manager()
    return manager.has_observers("sitq_task_failed") or manager.has_observers("sitq_task_cancelled")


def report(tasks: Iterable[Task]) -> None:
    """``sitq_task_failed`` (``will_retry=False``) or ``sitq_task_cancelled`` for each task a store ended."""
    manager = get_plugin_manager()
    for task in tasks:
        if task.status == TaskStatus.FAILED:
            manager.notify("sitq_task_failed", task=task, error=task.error or "failed", will_retry=False)
        elif task.status == TaskStatus.CANCELLED:
            manager.notify("sitq_task_cancelled", task=task, duration=0.0)


async def report_ids(backend: Backend, task_ids: list[str]) -> None:
    """:func:`report` for tasks known by id, read from ``backend`` first (only when an observer listens)."""
    if not task_ids or not wanted():
        return
    try:
        tasks = [task for task in [await backend.get_task(task_id) for task_id in task_ids] if task is not None]
    except SitqError:
        log.warning("could not read the tasks a reserve ended, to tell observers", exc_info=True)
        return
    report(tasks)
