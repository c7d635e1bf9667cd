"""Plugin hook specifications (pluggy project ``"sitq"``).

A plugin is a module (named by an entry point in the ``sitq`` group) holding
functions decorated with :data:`hookimpl` whose names match the specs below.
Hooks are synchronous. Registration hooks run once, lazily, the first time a
name is resolved or plugins are listed. Observation hooks run in the process
where the event happens, on its event loop thread (``sitq_task_enqueued`` may
also run on a ``SyncTaskQueue`` caller's own thread): they must be quick and
must not block; an exception they raise is logged and never fails a task.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

import pluggy

if TYPE_CHECKING:
    from datetime import datetime

    from .backend import Backend
    from .models import Result, Task
    from .serializers import Serializer

__all__ = ["BackendRegistrar", "SerializerRegistrar", "hookimpl", "hookspec"]

hookspec = pluggy.HookspecMarker("sitq")
hookimpl = pluggy.HookimplMarker("sitq")


class BackendRegistrar(Protocol):
    """The ``register`` callable handed to :func:`sitq_register_backends`."""

    def __call__(
        self,
        name: str,
        backend: type[Backend] | str,
        *,
        url_schemes: tuple[str, ...] = (),
        description: str = "",
    ) -> None: ...


class SerializerRegistrar(Protocol):
    """The ``register`` callable handed to :func:`sitq_register_serializers`."""

    def __call__(
        self,
        name: str,
        serializer: type[Serializer] | str,
        *,
        description: str = "",
    ) -> None: ...


@hookspec
def sitq_register_backends(register: BackendRegistrar) -> None:
    """Register backends by name.

    Call ``register(name, backend, url_schemes=(), description="")`` once per
    backend. ``backend`` is a :class:`~sitq_core.backend.Backend` subclass or,
    better, an import string ``"package.module:ClassName"`` so that the
    backend's dependencies load only when it is used. ``name`` is lower case
    (``[a-z][a-z0-9_-]*``) and is also the URL scheme; ``url_schemes`` adds
    more schemes (``postgresql``, ``postgres+asyncpg``).

    Called once per process, the first time a backend is resolved or listed.

    Example::

        @hookimpl
        def sitq_register_backends(register):
            register("acme", "sitq_acme.backend:AcmeBackend", description="Acme store")
    """


@hookspec
def sitq_register_serializers(register: SerializerRegistrar) -> None:
    """Register serializers by name.

    Call ``register(name, serializer, description="")``; ``serializer`` is a
    :class:`~sitq_core.serializers.Serializer` subclass (constructed with no
    arguments when chosen by name) or an import string to one. The name is
    stored with every task the serializer writes, so keep it stable.

    Called once per process, the first time a serializer is resolved or listed.
    """


@hookspec
def sitq_task_enqueued(task: Task) -> None:
    """A task was committed to the backend (called in the producer's process).

    Called once per task, also for each task of ``enqueue_many``.
    """


@hookspec
def sitq_task_started(task: Task, attempt: int, worker_id: str) -> None:
    """A worker reserved ``task`` and starts running it (worker process).

    ``attempt`` counts from 1 and includes this attempt. Short sync tasks that
    share one thread hop report their start as the call begins, so this may
    arrive while the task runs; it always comes before the outcome hooks.
    """


@hookspec
def sitq_task_succeeded(task: Task, result: Result, duration: float) -> None:
    """A task's success was accepted by the backend (worker process).

    ``duration`` is the function's run time in seconds. Not called when the
    outcome was fenced off because the worker had lost its lease.
    """


@hookspec
def sitq_task_failed(task: Task, error: BaseException | str, will_retry: bool) -> None:
    """An attempt failed (worker process).

    ``error`` is the exception the function raised or, for a payload the
    worker cannot read, the one reading it raised (a ``SerializationError``,
    usually; its text may differ from the stored result's error, which starts
    "cannot load task ..."); a task stopped at its timeout gets a
    ``TimeoutError`` saying so. ``will_retry=False``
    means the task is now final with status ``failed``. A task that ends
    ``cancelled`` comes to :func:`sitq_task_cancelled` instead. A poison
    pill (its lease expired once too often) is ended by the store inside
    ``reserve``: the process that reserved calls this with the stored error
    text (``sitq_core.store_endings``).
    """


@hookspec
def sitq_task_cancelled(task: Task, duration: float) -> None:
    """A task a worker held ended ``cancelled`` at a cancel request (worker process).

    ``duration`` is how long it ran, in seconds (0 for one the worker had
    reserved ahead and dropped before it started). A task cancelled while
    still queued never reaches a worker, so no worker calls this for it.
    """


@hookspec
def sitq_task_retried(task: Task, attempt: int, eta: datetime) -> None:
    """A retry of ``task`` was scheduled for ``eta`` (an aware UTC datetime).

    ``attempt`` is the attempt that failed; the next one is ``attempt + 1``.
    """
