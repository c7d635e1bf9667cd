"""``TaskQueue``: the producer side — enqueue calls, read their results."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import inspect
import logging
import math
import pickle
import threading
import warnings
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime, timedelta
from types import FunctionType, TracebackType
from typing import Any, ParamSpec, Self, TypeVar, Unpack, overload

from . import checks, forks
from .backend import Backend, Capability
from .batch import TaskBatch
from .checks import Seconds
from .config import BackendSpec, SerializerSpec, resolve_backend, resolve_serializer, split_config
from .errors import (
    BackendError,
    SerializationError,
    SitqError,
    TaskQueueError,
    ValidationError,
    describe_exception,
    safe_repr,
)
from .holders import holders
from .memo import CallableMemo
from .models import Result, Task, TaskStatus, TaskStatusName, new_id, new_ids
from .options import TaskOptionArgs, TaskOptions, normalize_eta, validate_timeout
from .plugins import get_plugin_manager
from .serializers import PAYLOAD_ERRORS, Serializer, checked_bytes, function_path
from .task import TaskFunction, is_task_function, task, task_of
from .waiters import ResultWaiters

P = ParamSpec("P")
R = TypeVar("R")
__all__ = ["Call", "TaskQueue", "TaskQueueView"]

_DEFAULT_OPTIONS = TaskOptions()
_LATE_ANSWER = 0.5  # seconds get_result waits past its timeout for an answer already on its way

logger = logging.getLogger("sitq.queue")

# enqueue's keywords that are task options, and other queues' names for them, by the option that sets them
_OPTION_KEYWORDS = {f.name: f.name for f in fields(TaskOptions) if f.name != "explicit"} | {
    "countdown": "delay",  # Celery
    "queue": "queue_name",  # Celery, procrastinate
    "retries": "max_retries",  # huey
    "retry_delay": "retry_backoff",  # huey
    "time_limit": "timeout",  # Celery
    "job_timeout": "timeout",  # RQ
    "schedule_at": "eta",  # procrastinate
    "schedule_in": "delay",  # procrastinate
    "_defer_until": "eta",  # arq
    "_defer_by": "delay",  # arq
    "_queue_name": "queue_name",  # arq
}
# other queues' enqueue options that sitq has no option for
_FOREIGN_OPTIONS = frozenset(
    {
        "expires", "soft_time_limit", "ignore_result", "routing_key", "retry", "retry_policy", "link",  # Celery
        "link_error", "task_id", "result_ttl", "ttl", "failure_ttl", "job_id", "depends_on", "at_front",  # RQ
        "on_success", "on_failure", "description", "meta", "lock", "queueing_lock", "_job_id", "_expires",
    }
)  # fmt: skip
_SITQ_OPTIONS = ", ".join(f.name for f in fields(TaskOptions) if f.name != "explicit")


@dataclass(frozen=True, slots=True)
class _Keywords:
    """The keywords a callable takes: ``names`` None means any (a ``**kwargs``, or no signature to read)."""

    names: frozenset[str] | None
    listed: tuple[str, ...] = ()  # the same names in the signature's order, for the error


_ANY_KEYWORD = _Keywords(None)
# per function, and per method by its function (a bound method is a new object at every access, and binds
# one parameter fewer than the function): the keywords it takes, read at its first enqueue with keywords
_function_keywords: CallableMemo[_Keywords] = CallableMemo()
_method_keywords: CallableMemo[_Keywords] = CallableMemo()


def _keywords_taken_by(func: Any) -> _Keywords:
    """The keywords ``func`` itself can be called with; read once per function.

    The callable enqueued is what the worker calls, so its own signature
    decides, not that of a function it wraps (``functools.wraps`` sets
    ``__wrapped__``, which ``inspect.signature`` follows by default): a
    decorator's wrapper may take such a keyword itself (a deadline it
    enforces). A sitq task is read through to its function, which gets every
    argument, and so is a wrapper with no signature of its own
    (``functools.lru_cache``). A callable whose signature cannot be read
    (some builtins) takes any keyword, as far as enqueue can tell.
    """
    if type(func) is not FunctionType and is_task_function(func):
        func = func.__wrapped__
    memo, key = _function_keywords, func
    if type(func) is not FunctionType and inspect.ismethod(func):
        memo, key = _method_keywords, func.__func__  # every binding of a method takes the same keywords
    known = memo.get(key)
    if known is not None:
        return known
    try:
        try:
            signature = inspect.signature(func, follow_wrapped=False)
        except ValueError:  # no signature of its own (a C wrapper such as lru_cache's): the function it wraps
            signature = inspect.signature(func)
        parameters = signature.parameters.values()
    except Exception:  # no signature to read (some builtins): not checked
        taken = _ANY_KEYWORD
    else:
        if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
            taken = _ANY_KEYWORD
        else:
            listed = tuple(p.name for p in parameters if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY))
            taken = _Keywords(frozenset(listed), listed)
    memo.remember(key, taken)
    return taken


def _refuse_untakeable_keywords(func: Any, kwargs: Mapping[str, Any], where: str = "") -> None:
    """``enqueue(f, queue="mail")`` passes ``queue`` to ``f``: refuse it now when ``f`` cannot take it.

    Otherwise the task is stored and fails in the worker with TypeError on
    the unexpected keyword. Any keyword the function's signature has no
    parameter (and no ``**kwargs``) for is refused; a task option's name, or
    another queue's (``countdown``, ``queue``, ``retries``), points to
    ``with_options``. Called with keywords only (enqueue without them reads
    no signature). Positional arguments are not counted: a call with too
    many or too few still fails in the worker.
    """
    taken = _keywords_taken_by(func).names
    if taken is None or taken.issuperset(kwargs):
        return
    name = next(name for name in kwargs if name not in taken)
    said = f"{where}{function_path(func)} takes no argument {name!r}, and enqueue passes its keywords to the function"
    option = _OPTION_KEYWORDS.get(name)
    if option is not None:
        message = f"{said}; to set the task's {option}, use queue.with_options({option}=...).enqueue(...)"
    elif name in _FOREIGN_OPTIONS:
        message = (
            f"{said}; {name!r} is an option of other task queues, and sitq has no such task option (its options, "
            f"set with queue.with_options(...).enqueue(...): {_SITQ_OPTIONS})"
        )
    else:
        listed = _keywords_taken_by(func).listed
        takes = f"its keyword parameters: {', '.join(listed)}" if listed else "it takes no keyword arguments"
        message = f"{said} ({takes}); the worker's call would fail with TypeError"
    raise ValidationError(message, parameter=name, value=kwargs[name])


def _is_generator_coroutine(func: Any) -> bool:
    """A ``@types.coroutine`` generator: its call returns an awaitable, which the worker awaits."""
    while isinstance(func, functools.partial):
        func = func.func
    code = getattr(getattr(func, "__func__", func), "__code__", None)  # a bound method's function
    return code is not None and bool(code.co_flags & inspect.CO_ITERABLE_COROUTINE)


def _refuse_generator_function(func: Any, where: str = "", parameter: str = "func", value: Any = None) -> None:
    """Refuse a generator function: calling it returns a generator and runs none of its body.

    As a task it would do nothing, then fail in the worker on a return value
    no serializer stores. A sitq task is checked through to its function; a
    ``functools.wraps`` wrapper is not (it may well run the generator).
    """
    target = func.__wrapped__ if is_task_function(func) else func
    try:
        while isinstance(target, functools.partial):
            target = target.func
        # a callable object runs its class's __call__ (a partial of one too): that is what is checked
        by_call = not inspect.isroutine(target) and not isinstance(target, type)
        if by_call:
            target = type(target).__call__  # callable() was checked: it has one
        kind = "an async generator" if inspect.isasyncgenfunction(target) else None
        if kind is None and inspect.isgeneratorfunction(target) and not _is_generator_coroutine(target):
            kind = "a generator"
    except Exception:  # a user's object whose attribute lookup raises: not a generator function
        return
    if kind is not None:
        what = f"a callable object whose __call__ is {kind} function" if by_call else f"{kind} function"
        raise ValidationError(
            f"{where}{function_path(func)} is {what}: calling it runs none of its body, so as a task it "
            "would do nothing; enqueue a function that consumes it (for example one returning list(...))",
            parameter=parameter,
            value=func if value is None else value,
        )


@dataclass(frozen=True, slots=True)
class _FunctionFacts:
    """What ``enqueue`` works out about a function that passed its checks: its stored name, its sitq task."""

    name: str
    is_task: bool  # the function is a sitq task itself (not kept in ``task``: a value must not hold its key)
    task: TaskFunction[Any, Any] | None  # the sitq task a functools.wraps wrapper wraps

    def task_of(self, func: Any) -> TaskFunction[Any, Any] | None:
        """The sitq task ``func`` (whose facts these are) is or wraps."""
        return func if self.is_task else self.task


# per plain function or sitq task: its facts, worked out at its first enqueue rather than at every one
# (a bound method or a partial is a new object per call: remembering those would only cost)
_function_facts: CallableMemo[_FunctionFacts] = CallableMemo()


def _checked_function(func: Any) -> _FunctionFacts:
    """Refuse what cannot be a task (not callable, a generator function); return ``func``'s facts."""
    memoable = type(func) is FunctionType or is_task_function(func)
    if memoable:
        facts = _function_facts.get(func)
        if facts is not None:
            return facts
    if not callable(func):
        raise ValidationError(f"func must be callable, got {type(func).__name__}", parameter="func", value=func)
    _refuse_generator_function(func)
    # the task itself, or one under a functools.wraps decorator put outside it
    decorated = task_of(func)
    facts = _FunctionFacts(function_path(func), decorated is func, None if decorated is func else decorated)
    if memoable:
        _function_facts.remember(func, facts)
    return facts


@dataclass(frozen=True, slots=True)
class Call:
    """One call for ``enqueue_many``: ``Call(func, args, kwargs)``."""

    func: Callable[..., Any]
    args: tuple[Any, ...] | list[Any] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)


def _as_call(item: Any, index: int) -> Call:
    if isinstance(item, Call):
        if type(item.args) is tuple and type(item.kwargs) is dict and all(type(key) is str for key in item.kwargs):
            return item
        # a Call built by hand with a string, a number or None as its args: checked as a tuple item is
        args, kwargs = _arguments(item.args, item.kwargs, where=f"calls[{index}]: ", value=item)
        return Call(item.func, args, kwargs)
    if callable(item):
        return Call(item)
    if isinstance(item, tuple) and 1 <= len(item) <= 3:
        args, kwargs = _arguments(
            item[1] if len(item) > 1 else (), item[2] if len(item) > 2 else {}, where=f"calls[{index}]: ", value=item
        )
        return Call(item[0], args, kwargs)
    raise ValidationError(
        f"calls[{index}] must be a Call, a callable, or a (func[, args[, kwargs]]) tuple; got {safe_repr(item)}",
        parameter="calls",
        value=item,
    )


def _arguments(args: Any, kwargs: Any, *, where: str = "", value: Any = None) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """Positional and keyword arguments of a call, checked: a tuple or list, and a dict with string keys."""
    parameter = "calls" if where else "args"
    if isinstance(args, str | bytes | Mapping) or not isinstance(args, Iterable):
        raise ValidationError(
            f"{where}args must be a tuple or list of arguments, got {safe_repr(args)}",
            parameter=parameter,
            value=args if value is None else value,
        )
    if kwargs is None:
        kwargs = {}
    if not isinstance(kwargs, Mapping) or not all(isinstance(key, str) for key in kwargs):
        raise ValidationError(
            f"{where}kwargs must be a dict of keyword arguments, got {safe_repr(kwargs)}",
            parameter="calls" if where else "kwargs",
            value=kwargs if value is None else value,
        )
    return tuple(args), dict(kwargs)


_connected: weakref.WeakSet[Any] = weakref.WeakSet()  # backends a queue has connected before enqueueing


class _OpenState:
    """Whether a queue connected its backend and has not closed it, and holds it (read by its finalizer)."""

    __slots__ = ("held", "open", "quiet", "travelled")

    def __init__(self) -> None:
        self.open = False
        self.quiet = False  # an unpickled queue: let go without a warning (no caller made it to close it)
        self.held = False  # counted in holders (connect() or async with): the finalizer lets go for it
        # an unpickled queue's key in _travelled: it shares that backend with the other copies of this
        # process, and the last of them to go lets it go (whichever copy happened to connect it)
        self.travelled: bytes | None = None


# Backends of unpickled queues, by their configuration: the copies of one module-level queue that
# travel with each task shipped by value (a ``__main__`` task enqueueing a follow-up) share one backend
# in a process, instead of each opening its own pool and keeping it until a cyclic collection.
# Guarded by holders.lock, the lock of the hold counts it is kept beside: with a lock of its own, a copy
# unpickled on one thread (this lock, then the counts') and a copy collected on another that held the
# counts' lock (then this one) deadlocked.
_travelled: weakref.WeakValueDictionary[bytes, Backend] = weakref.WeakValueDictionary()


def _travel_key(backend: Backend) -> bytes | None:
    """The configuration an unpickled backend travelled as, or None when it is not one to share.

    Only a backend whose class says how it travels (``__reduce__``, as the
    SQLite and PostgreSQL backends do: its configuration) is shared; one
    pickled with its whole state might carry data of its own.
    """
    if type(backend).__reduce__ is object.__reduce__:
        return None
    try:
        return pickle.dumps(backend.__reduce__())
    except Exception:
        return None


def _shared_travelled(backend: Backend, state: _OpenState) -> Backend:
    """The backend this process's copies with ``backend``'s configuration share, held once more for a new copy."""
    key = _travel_key(backend)
    if key is None:
        return backend
    with holders.lock:
        shared = _travelled.get(key)
        if shared is None:
            _travelled[key] = shared = backend
        state.held = holders.hold(shared)
        if state.held:
            state.travelled = key
    return shared


def _dropped_unclosed(backend: Backend, state: _OpenState) -> None:
    """A TaskQueue that made its backend was garbage-collected while connected: warn, and let the backend go.

    Each such queue (one made per request, say) kept a thread and several
    file descriptors (SQLite) or a server connection (PostgreSQL) for the
    life of the process. This may run inside the garbage collector, on any
    thread and holding any lock: the backend lets go on a thread of its own.
    """
    held, state.held = state.held, False
    with holders.lock:
        others = holders.let_go(backend, held)  # a queue that called connect() counted itself: not any more
        if state.travelled is not None and not others:
            if _travelled.get(state.travelled) is backend:
                del _travelled[state.travelled]  # a copy unpickled from now on gets a backend of its own
            state.open = state.open or backend in _connected  # connected by whichever copy went first
    if not state.open or others:
        return  # never connected, closed properly, or still held by another queue or a worker
    state.open = False
    warn_dropped("TaskQueue", "`async with TaskQueue(...)`", quiet=state.quiet)
    with contextlib.suppress(TypeError):
        _connected.discard(backend)
    threading.Thread(target=_abandon, args=(backend,), name="sitq-abandon", daemon=True).start()


def warn_dropped(kind: str, use: str, *, quiet: bool) -> None:
    """A queue garbage-collected unclosed: a ResourceWarning, or a debug line for an unpickled copy.

    An unpickled queue (a task's module-level queue shipped by value) was made
    by no caller, so none could have closed it: it is let go quietly.
    """
    if quiet:
        logger.debug("letting go of an unpickled %s's backend", kind)
        return
    warnings.warn(
        f"a {kind} was garbage-collected without close(): use {use}, or make one queue at start-up and share it",
        ResourceWarning,
        stacklevel=2,  # inside the garbage collector: no caller's line to point at
    )


def _dropped_holder(backend: Backend, state: _OpenState) -> None:
    """A queue given its backend was dropped after ``connect()``, unclosed: its hold goes with it.

    The last queue to close would otherwise find this one still holding the
    backend and leave it open for good. When a close was asked for meanwhile
    and nobody else holds it, the backend is let go (``Backend.abandon``).
    """
    held, state.held = state.held, False
    if not held or holders.let_go(backend, True):
        return
    if holders.close_wanted(backend):
        with contextlib.suppress(TypeError):
            _connected.discard(backend)
        threading.Thread(target=_abandon, args=(backend,), name="sitq-abandon", daemon=True).start()


def _abandon(backend: Backend) -> None:
    try:
        backend.abandon()
    except Exception:
        logger.debug("letting go of a dropped queue's backend failed", exc_info=True)


def backend_not_ready(backend: Any) -> bool:
    """True until a queue has connected ``backend`` once (one set lookup per enqueue after that)."""
    try:
        return backend not in _connected
    except TypeError:  # a backend that cannot be weakly referenced: connects on first use, as before
        return False


class _Producer:
    """Enqueue logic shared by ``TaskQueue`` and its ``with_options`` views."""

    _backend: Backend
    _serializer: Serializer
    _options: TaskOptions

    def _build_task(
        self,
        func: Any,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        options: TaskOptions,
        now: datetime,
        eta: datetime,
        task_id: str | None = None,
    ) -> Task:
        facts = _checked_function(func)
        if kwargs:
            _refuse_untakeable_keywords(func, kwargs)
        decorated = facts.task_of(func)
        if decorated is not None:
            options, eta = self._with_task_defaults(decorated.options, options, now, eta)
        return Task(
            id=task_id or new_id(),
            payload=_dumps_call(self._serializer, func, args, kwargs),
            serializer=self._serializer.name,
            function_name=facts.name,
            queue=options.queue_name,
            priority=options.priority,
            eta=eta,
            max_retries=options.max_retries,
            retry_backoff=options.retry_backoff,
            timeout=options.timeout,
            max_lease_expiries=options.max_lease_expiries,
            enqueued_at=now,
        )

    def _with_task_defaults(
        self, defaults: TaskOptions, options: TaskOptions, now: datetime, eta: datetime
    ) -> tuple[TaskOptions, datetime]:
        """A decorated task's options, overridden by whatever this queue or view set explicitly."""
        explicit = {name: getattr(options, name) for name in options.explicit_names()}
        merged = defaults.merged(**explicit) if explicit else defaults
        scheduled = options.eta is not None or options.delay is not None
        return merged, eta if scheduled else merged.due_at(now)

    async def _store(self, tasks: Sequence[Task]) -> list[str]:
        if isinstance(tasks, TaskBatch) and (
            len(tasks) == 1 or Capability.STREAMED_BATCHES not in self._backend.capabilities
        ):
            tasks = tasks.built()  # building errors surface here, before the backend is involved
        if len(tasks) == 1:
            return [await self._store_one(tasks[0], "calls", 0)]
        try:
            ids = await self._backend.enqueue_many(tasks)
        except checks.TooLargeToStore as exc:
            built = tasks.built_so_far() if isinstance(tasks, TaskBatch) else tasks
            position = next((index for index, task in enumerate(built) if task.id == exc.value), None)
            raise _too_large(exc, "calls", position) from exc
        except SitqError:
            raise
        except Exception as exc:
            if isinstance(tasks, TaskBatch) and tasks.error is exc:
                raise  # building a task failed (a serializer's own error), not the backend
            raise self._enqueue_failed(exc) from exc
        self._backend.notify_work()
        manager = get_plugin_manager()
        if manager.has_observers("sitq_task_enqueued"):
            for task in tasks:
                manager.notify("sitq_task_enqueued", task=task)
        return ids

    async def _store_one(self, task: Task, parameter: str = "args", position: int | None = None) -> str:
        """``_store`` for one task (the hot path of ``enqueue``: no lists, no batch machinery)."""
        try:
            task_id = await self._backend.enqueue(task)
        except checks.TooLargeToStore as exc:
            raise _too_large(exc, parameter, position) from exc
        except SitqError:
            raise
        except Exception as exc:
            raise self._enqueue_failed(exc) from exc
        self._stored(task)
        return task_id

    def _store_blocking(self, task: Task) -> str | None:
        """``_store_one`` on the calling thread through ``Backend.enqueue_blocking``; None: not stored, await it."""
        try:
            task_id = self._backend.enqueue_blocking(task)
        except checks.TooLargeToStore as exc:
            raise _too_large(exc, "args") from exc
        except SitqError:
            raise
        except Exception as exc:
            raise self._enqueue_failed(exc) from exc
        if task_id is not None:
            self._stored(task)
        return task_id

    def _stored(self, task: Task) -> None:
        """Wake local workers and tell the lifecycle observers about a stored task."""
        self._backend.notify_work()
        manager = get_plugin_manager()
        if manager.has_observers("sitq_task_enqueued"):
            manager.notify("sitq_task_enqueued", task=task)

    def _call_task(self, func: Any, args: tuple[Any, ...], kwargs: dict[str, Any], eta: datetime | None) -> Task:
        """The task ``enqueue(func, *args, eta=eta, **kwargs)`` stores (validated and serialised)."""
        options = self._options if eta is None else self._options.merged(eta=normalize_eta(eta))
        now = self._backend.now()
        return self._build_task(func, args, kwargs, options, now, options.due_at(now))

    def _call_task_of(self, func: Any, args: tuple[Any, ...] | list[Any], kwargs: dict[str, Any] | None) -> Task:
        """The task ``enqueue_call(func, args, kwargs)`` stores."""
        call_args, call_kwargs = _arguments(args, kwargs)
        now = self._backend.now()
        return self._build_task(func, call_args, call_kwargs, self._options, now, self._options.due_at(now))

    def _enqueue_failed(self, exc: Exception) -> BackendError:
        return BackendError(
            f"backend failed to enqueue: {describe_exception(exc)}",
            operation="enqueue",
            backend_type=self._backend.name or type(self._backend).__name__,
            cause=exc,
        )

    async def _connect_first(self) -> bool:
        """Connect the backend before this queue's first enqueue; True when that connect happened now.

        Times are read after it: a backend may learn its clock as it connects
        (PostgreSQL follows the server's), and a burst of first enqueues then
        finds the store open and shares its commits instead of each opening it.
        """
        backend = self._backend
        if backend in _connected:
            return False
        try:
            await backend.connect()
        except SitqError:
            raise
        except Exception as exc:  # a plugin's own error: the type enqueue documents
            raise self._enqueue_failed(exc) from exc
        self._owner()._open_state.open = True
        _connected.add(backend)
        return True

    def _owner(self) -> TaskQueue:
        """The TaskQueue behind this producer: itself, or a view's queue."""
        raise NotImplementedError

    async def _stamped(self, build: Callable[[], Task]) -> Task:
        """``build()`` (bad input is refused before any connect), built again if the backend connected just now."""
        task = build()
        if backend_not_ready(self._backend) and await self._connect_first():
            task = build()  # its times read after connecting
        return task

    async def enqueue(self, func: Callable[..., Any], /, *args: Any, eta: datetime | None = None, **kwargs: Any) -> str:
        """Store a call of ``func(*args, **kwargs)`` and return its task id.

        ``eta`` (an aware datetime in any zone) delays it; a past ``eta`` means
        now. Raises ``ValidationError`` for a non-callable or naive ``eta`` and
        ``SerializationError`` when the call cannot be serialised.
        """
        return await self._store_one(await self._stamped(lambda: self._call_task(func, args, kwargs, eta)))

    async def enqueue_call(
        self,
        func: Callable[..., Any],
        args: tuple[Any, ...] | list[Any] = (),
        kwargs: dict[str, Any] | None = None,
    ) -> str:
        """Like ``enqueue`` with the arguments given as a tuple and a dict.

        No keyword is taken for the queue itself, so a function whose own
        parameters include ``eta`` receives it untouched.
        """
        return await self._store_one(await self._stamped(lambda: self._call_task_of(func, args, kwargs)))

    async def enqueue_many(self, calls: Iterable[Any]) -> list[str]:
        """Store many calls in one transaction and return their ids in order.

        Each item is a :class:`Call`, a bare callable, or ``(func,)`` /
        ``(func, args)`` / ``(func, args, kwargs)``. Nothing is stored when any item is invalid.
        """
        if isinstance(calls, (str, bytes)) or not isinstance(calls, Iterable):
            raise ValidationError(
                f"calls must be an iterable of calls, got {type(calls).__name__}", parameter="calls", value=calls
            )
        items = calls if isinstance(calls, list | tuple) else list(calls)
        if not items:
            return []
        if backend_not_ready(self._backend):
            await self._connect_first()
        now = self._backend.now()
        return await self._store(TaskBatch(self._iter_tasks(items, now), len(items)))

    def _iter_tasks(self, items: list[Any] | tuple[Any, ...], now: datetime) -> Iterator[Task]:
        """``_build_task`` for a batch, lazily: what depends only on the function is worked out once per function."""
        options = self._options
        eta = options.due_at(now)
        serializer = self._serializer
        name = serializer.name
        per_function: dict[int, tuple[Any, TaskOptions, datetime, str]] = {}
        no_kwargs: dict[str, Any] = {}  # shared by items without kwargs: only read (serialised), never stored
        for index, (item, task_id) in enumerate(zip(items, new_ids(len(items)), strict=True)):
            if type(item) is tuple and len(item) == 2 and type(item[1]) is tuple:  # the common (func, args) form
                func, args = item
                kwargs = no_kwargs
            else:
                call = _as_call(item, index)
                func, args, kwargs = call.func, call.args, call.kwargs
            known = per_function.get(id(func))
            if known is None or known[0] is not func:
                if not callable(func):
                    raise ValidationError(
                        f"calls[{index}]: func must be callable, got {type(func).__name__}",
                        parameter="calls",
                        value=item,
                    )
                _refuse_generator_function(func, f"calls[{index}]: ", "calls", item)
                task_options, task_eta = options, eta
                decorated = task_of(func)
                if decorated is not None:
                    task_options, task_eta = self._with_task_defaults(decorated.options, options, now, eta)
                known = per_function[id(func)] = (func, task_options, task_eta, function_path(func))
            _func, task_options, task_eta, function_name = known
            if kwargs:
                _refuse_untakeable_keywords(func, kwargs, f"calls[{index}]: ")
            try:
                payload = _dumps_call(serializer, func, args, kwargs)
            except SerializationError as exc:  # say which item of the batch, like the ValidationErrors do
                root = exc.__cause__ or exc  # keep the underlying error as the cause
                raise SerializationError(
                    f"calls[{index}]: {exc.message}", operation=exc.operation, data_type=exc.data_type, cause=root
                ) from root
            yield Task(
                id=task_id,
                payload=payload,
                serializer=name,
                function_name=function_name,
                queue=task_options.queue_name,
                priority=task_options.priority,
                eta=task_eta,
                max_retries=task_options.max_retries,
                retry_backoff=task_options.retry_backoff,
                timeout=task_options.timeout,
                max_lease_expiries=task_options.max_lease_expiries,
                enqueued_at=now,
            )


class TaskQueueView(_Producer):
    """A queue whose enqueues apply fixed per-task options (see ``TaskQueue.with_options``)."""

    def __init__(self, queue: TaskQueue, options: TaskOptions) -> None:
        self._queue = queue
        self._backend = queue.backend
        self._serializer = queue.serializer
        self._options = options

    def _owner(self) -> TaskQueue:
        return self._queue

    def with_options(self, **options: Unpack[TaskOptionArgs]) -> TaskQueueView:
        """A further view with more options changed; ``None`` leaves an option as it is (as on the queue)."""
        return TaskQueueView(self._queue, self._options.given(dict(options)))

    @property
    def options(self) -> TaskOptions:
        """The per-task options this view applies to each task it enqueues."""
        return self._options


class TaskQueue(_Producer):
    """Enqueue work and read results.

    ``backend`` is a :class:`Backend`, a URL (``"sqlite:///tasks.db"``), a
    registered name, or a config mapping (``{"backend": "sqlite", "path":
    ...}``). ``serializer`` is a :class:`Serializer` or a registered name;
    default ``cloudpickle`` (or the mapping's ``serializer``).
    ``async with TaskQueue(...)`` connects and closes the backend.
    """

    def __init__(self, backend: BackendSpec, serializer: SerializerSpec = None) -> None:
        if backend is None:
            raise ValidationError(
                "backend is required: pass a Backend (e.g. SQLiteBackend('tasks.db')) or a URL",
                parameter="backend",
                value=None,
            )
        _target, _options, config_serializer = split_config(backend)
        self._backend = resolve_backend(backend)
        self._serializer = resolve_serializer(serializer if serializer is not None else config_serializer)
        # chosen on purpose (not the default): results written by another serializer are refused, as a
        # worker with an explicit serializer refuses other tasks (a msgpack queue never unpickles)
        self._only_own_results = serializer is not None or config_serializer is not None
        self._options = TaskOptions()
        self._serializers: dict[str, Serializer] = {self._serializer.name: self._serializer}
        self._holds_backend = False  # counted in holders: connect() (or async with) ran and close() has not
        # a backend this queue made (from a URL or config) is let go if the queue is dropped unclosed
        self._open_state = _OpenState()
        self._waiters = ResultWaiters()  # get_result calls that close() ends
        self._count_blocks_anew()
        self._watch_drop(made_backend=not isinstance(backend, Backend))

    def _count_blocks_anew(self) -> None:
        """No ``async with`` block open on this queue (made, copied, unpickled), in a forked child too."""
        self._users = 0  # async with blocks open on it (any task, nested too): the last one to end closes it
        # the close the last block's exit runs, done when it is over (an enter meanwhile waits for it), and
        # the task running it (which must not wait for itself)
        self._exit_close: concurrent.futures.Future[None] | None = None
        self._exit_closer: asyncio.Task[Any] | None = None
        forks.forget_in_child(self)

    def _after_fork_in_child(self) -> None:
        """The parent's blocks are not this process's: its own count from none (the block it was forked in ends last).

        A close the parent's other threads ran never ends here; one the
        forking task itself was running does, and is still waited for.
        """
        self._users = 0  # the child's only thread runs this hook: no lock (another parent thread may hold it)
        try:
            mine = self._exit_closer is not None and self._exit_closer is asyncio.current_task()
        except RuntimeError:  # no loop on the forking thread
            mine = False
        if not mine:
            self._exit_close, self._exit_closer = None, None

    def _watch_drop(self, *, made_backend: bool) -> None:
        """What happens when this queue is garbage-collected unclosed (set again by ``connect()``).

        A backend it made (from a URL or config) is let go with a warning; a
        backend given to it is never closed here, but a hold the queue took
        must not outlive it.
        """
        previous = self.__dict__.get("_drop_watch")
        if previous is not None:
            previous.detach()
        watch = weakref.finalize(
            self, _dropped_unclosed if made_backend else _dropped_holder, self._backend, self._open_state
        )
        watch.atexit = False  # a queue that lives as long as the program is not a leak
        self._drop_watch = watch

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state.pop("_drop_watch", None)  # each copy gets its own (a finalizer cannot be pickled either)
        state["_holds_backend"] = False  # a copy (or an unpickled queue) holds nothing until it connects
        state["_open_state"] = _OpenState()
        state["_waiters"] = ResultWaiters()  # closing a copy must not end this queue's waits
        # a copy is inside none of this queue's async with blocks (nor its close): it counts its own
        state["_users"], state["_exit_close"], state["_exit_closer"] = 0, None, None
        return state

    def __copy__(self) -> TaskQueue:
        """A shallow copy shares this queue's backend object, so it never lets that backend go."""
        clone = TaskQueue.__new__(TaskQueue)
        clone.__dict__.update(self.__getstate__())
        clone._count_blocks_anew()
        clone._watch_drop(made_backend=False)  # a hold the copy takes must not outlive it
        return clone

    def __setstate__(self, state: dict[str, Any]) -> None:
        """Unpickled (or deep-copied): the backend arrived as its configuration, a new object of this queue's.

        Such a queue is let go when dropped unclosed, like one made from a URL:
        a task function shipped by value (cloudpickle, from ``__main__``) brings
        the module-level queue it uses along, and each run's copy connected on
        first use and kept its thread and files (or a server connection) for good.
        The copies in one process share one backend object per configuration
        (see ``_travelled``): one pool for all the runs' follow-ups, not one each.
        """
        self.__dict__.update(state)
        self._count_blocks_anew()
        self._open_state.quiet = True
        if backend_not_ready(self._backend):  # not a backend this process already uses (one shared by reference)
            self._backend = _shared_travelled(self._backend, self._open_state)
            self._holds_backend = self._open_state.held
            self._watch_drop(made_backend=True)

    def _owner(self) -> TaskQueue:
        return self

    def _hold(self) -> None:
        if not self._holds_backend:
            self._holds_backend = self._open_state.held = holders.hold(self._backend)

    def _let_go(self, *, want_closed: bool = False) -> int:
        """Stop holding the backend open; returns how many others (queues, workers) still hold it."""
        held, self._holds_backend = self._holds_backend, False
        self._open_state.held = False
        return holders.let_go(self._backend, held, want_closed=want_closed)

    @property
    def backend(self) -> Backend:
        """The store the queue writes to: hand it to a ``Worker`` to run what is enqueued here."""
        return self._backend

    @property
    def serializer(self) -> Serializer:
        """The serializer that writes new tasks' calls (results are read with the one named on each)."""
        return self._serializer

    def with_options(self, **options: Unpack[TaskOptionArgs]) -> TaskQueueView:
        """A view whose ``enqueue``/``enqueue_many`` apply these options to each task.

        The options (``eta``, ``delay``, ``priority``, ``max_retries``,
        ``retry_backoff``, ``timeout``, ``queue_name``, ``max_lease_expiries``;
        None leaves one as it is) never collide with the task function's own
        keyword arguments: ``q.with_options(timeout=5).enqueue(f, timeout=1)``
        passes ``timeout=1`` to ``f``. An unknown option raises ``ValidationError``
        (type checkers flag it, and a wrong type, from the signature).
        """
        return TaskQueueView(self, self._options.given(dict(options)))

    @overload
    def task(self, func: Callable[P, R], /) -> TaskFunction[P, R]: ...

    @overload
    def task(
        self, func: None = None, /, **options: Unpack[TaskOptionArgs]
    ) -> Callable[[Callable[P, R]], TaskFunction[P, R]]: ...

    def task(
        self, func: Callable[P, R] | None = None, /, **options: Unpack[TaskOptionArgs]
    ) -> TaskFunction[P, R] | Callable[[Callable[P, R]], TaskFunction[P, R]]:
        """Decorator: ``@queue.task`` or ``@queue.task(max_retries=3)``; see :func:`sitq.task`.

        The decorated function gains ``await f.enqueue(*args, **kwargs)`` on this
        queue, type-checked against its own signature.
        """
        if func is not None:
            return task(queue=self, **options)(func)
        return task(queue=self, **options)

    # ---------------------------------------------------------------- lifecycle

    async def connect(self) -> None:
        """Connect the backend (optional: every call connects on first use)."""
        await self._backend.connect()
        self._open_state.open = True
        self._hold()

    async def close(self) -> None:
        """Close the backend, unless another open queue or a running worker shares it (the last one closes it).

        It closes now, whoever is still inside an ``async with`` block: a
        ``get_result`` still waiting on this queue ends with ``TaskQueueError``.
        """
        self._open_state.open = False
        self._waiters.close_begins()  # a get_result that starts now ends at once (it would reopen the store)
        try:
            # the book-keeping first: a close cancelled while its waiters unwind must not leave a hold behind
            if self._let_go(want_closed=True):  # the last holder (a worker as it stops) closes it then
                await self._waiters.end_all()
                return
            holders.close_wanted(self._backend)  # closing it now: nothing left pending
            with contextlib.suppress(TypeError):  # a backend that cannot be hashed was never recorded
                _connected.discard(self._backend)
            try:
                await self._waiters.end_all()
            finally:
                await self._backend.close()
        finally:
            self._waiters.close_ends()

    async def __aenter__(self) -> Self:
        """Connect, counted as one more block: tasks sharing the queue each use ``async with``; the last out closes.

        A close that the last block's exit has under way is waited for, then
        the queue opens again (entering during it would have the store closed
        under this block).
        """
        with holders.lock:  # the lock of the hold counts: a block count is kept beside them
            self._users += 1
            closing = self._exit_close if self._exit_closer is not asyncio.current_task() else None
        try:
            if closing is not None:
                await asyncio.wrap_future(closing)
            await self.connect()
        except BaseException:
            # no __aexit__ follows a failed __aenter__: count out again, and when no other block is open
            # close what the connect may have opened; the enter's own error is the one to raise
            with contextlib.suppress(Exception):
                await self._leave(failed=True)
            raise
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._leave()

    async def _leave(self, *, failed: bool = False) -> None:
        """The end of an ``async with`` block: ``close()`` when it was the last one open on this queue.

        The count and the start of the close are one step under the lock: a
        block entered meanwhile either keeps the queue open or finds the close
        under way and waits for it. A failed enter closes only a backend that
        this queue holds or nobody does (it must not ask to close one that
        other queues or a worker hold open), and not a second time while the
        last exit's close runs.
        """
        with holders.lock:
            self._users = max(self._users - 1, 0)  # 0 already: a forked child leaving the block it inherited
            if self._users:
                return
            if failed and (self._exit_close is not None or (not self._holds_backend and holders.count(self._backend))):
                return
            done: concurrent.futures.Future[None] = concurrent.futures.Future()
            done.set_running_or_notify_cancel()  # an enter cancelled while it waits must not cancel it
            self._exit_close, self._exit_closer = done, asyncio.current_task()
        try:
            await self.close()
        finally:
            with holders.lock:
                if self._exit_close is done:
                    self._exit_close, self._exit_closer = None, None
            done.set_result(None)

    # ------------------------------------------------------------------ results

    async def get_result(self, task_id: str, timeout: Seconds | None = None) -> Result | None:
        """The final result as soon as it exists; None when ``timeout`` seconds pass first.

        ``timeout=None`` waits until the result exists; ``0`` checks once.
        Unknown ids behave like unfinished tasks (None after the timeout).
        """
        checks.given_task_id(task_id)
        timeout = validate_timeout(timeout)
        waiter = self._waiters.enter()
        try:
            if self._waiters.closing:
                raise TaskQueueError(
                    f"get_result({task_id!r}) was called while the queue was closing (the task goes on; ask "
                    "again once it is open)",
                    task_id=task_id,
                )
            return await self._wait_for_result(task_id, timeout)
        except asyncio.CancelledError:
            if self._waiters.interrupted(waiter):
                raise TaskQueueError(
                    f"get_result({task_id!r}) was interrupted: the queue was closed while it waited "
                    "(the task goes on; ask again on an open queue)",
                    task_id=task_id,
                ) from None
            raise
        finally:
            self._waiters.leave(waiter)

    async def _wait_for_result(self, task_id: str, timeout: float | None) -> Result | None:
        if timeout is None or math.isinf(timeout):
            return await self._backend.wait_for_result(task_id, timeout)
        # The bound holds even when the store itself stalls (a lock held elsewhere, a frozen network):
        # the backend's own reads are not all bounded by ``timeout``.
        deadline = asyncio.timeout(timeout + _LATE_ANSWER)
        try:
            async with deadline:
                return await self._backend.wait_for_result(task_id, timeout)
        except TimeoutError:
            if not deadline.expired():
                raise  # the backend's own TimeoutError
            logger.warning(
                "get_result(%r): no answer from the backend within %g s (a blocked event loop delays answers too)",
                task_id,
                timeout,
            )
            return None

    def deserialize_result(self, result: Result) -> Any:
        """The Python value a successful task returned (None when ``value`` is None)."""
        if result is None:
            raise ValidationError("result is required, got None", parameter="result", value=None)
        if not isinstance(result, Result):
            raise ValidationError(
                f"result must be a Result, got {type(result).__name__}", parameter="result", value=result
            )
        if result.value is None:
            return None
        serializer = self._serializer_named(result.serializer, result.task_id)
        try:
            return serializer.loads(result.value)
        except SerializationError as exc:  # say whose result it is
            raise SerializationError(
                f"cannot read the result of task {result.task_id}: {exc.message}",
                operation="loads",
                data_type=type(result.value).__name__,
                cause=exc.__cause__ or exc,
            ) from exc
        except SitqError:
            raise
        except PAYLOAD_ERRORS as exc:  # a plugin serializer's own error: keep the documented type
            raise SerializationError(
                f"serializer {serializer.name!r} cannot deserialise the result of task {result.task_id}: "
                f"{describe_exception(exc)}",
                operation="loads",
                data_type=type(result.value).__name__,
                cause=exc,
            ) from exc

    def _serializer_named(self, name: Any, task_id: str) -> Serializer:
        """The serializer that wrote a result, found by the name stored with it.

        A result naming none (None, ""), or a serializer not installed here, says
        so: the advice to read it with a queue of that serializer would be
        impossible to follow.
        """
        serializer = self._serializers.get(name) if isinstance(name, str) else None
        if serializer is not None:
            return serializer
        if not isinstance(name, str) or not name.strip():
            raise SerializationError(
                f"cannot read the result of task {task_id}: it names no serializer (serializer="
                f"{safe_repr(name)}), so nothing can tell how its value was written",
                operation="loads",
            )
        try:
            serializer = resolve_serializer(name)
        except SitqError as exc:
            raise SerializationError(
                f"cannot read the result of task {task_id}: it was written by serializer {name!r}, "
                f"which is not available here: {exc.message}",
                operation="loads",
                data_type=name,
                cause=exc,
            ) from exc
        if self._only_own_results:
            raise SerializationError(
                f"this queue reads only results written by serializer {self._serializer.name!r}, and the "
                f"result of task {task_id} was written by {name!r}; use a queue with serializer={name!r} "
                "(or none) to read it",
                operation="loads",
                data_type=name,
            )
        self._serializers[name] = serializer
        return serializer

    # ------------------------------------------------------------- task state

    async def get_task(self, task_id: str) -> Task | None:
        """The task's current state (status, attempts, times), or None when unknown."""
        checks.given_task_id(task_id)
        return await self._backend.get_task(task_id)

    async def cancel(self, task_id: str) -> bool:
        """Cancel a queued task (at once) or a running one (its worker is told); False when final/unknown."""
        checks.given_task_id(task_id)
        cancelled = await self._backend.cancel(task_id)
        if cancelled:
            self._backend.notify_results([task_id])
        return cancelled

    async def requeue(self, task_id: str, *, eta: datetime | None = None) -> bool:
        """Run a failed or cancelled task again; False for other states or unknown ids."""
        checks.given_task_id(task_id)
        when = normalize_eta(eta)
        if when is not None:  # a past eta means now, as for enqueue (it must not jump ahead of waiting tasks)
            when = max(when, self._backend.now())
        requeued = await self._backend.requeue(task_id, eta=when)
        if requeued:
            self._backend.notify_work()
        return requeued

    async def requeue_many(self, task_ids: Sequence[str], *, eta: datetime | None = None) -> list[bool]:
        """``requeue`` of each id in one call to the store; one bool per id, in order (a repeated id: False).

        Every id and ``eta`` is checked before any task is requeued (``ValidationError`` naming
        ``task_ids`` or ``eta``); ``[]`` returns ``[]``. See ``Backend.requeue_many``.
        """
        ids = checks.task_ids(task_ids, checks.given_task_id)
        when = normalize_eta(eta)
        if not ids:
            return []
        if when is not None:  # a past eta means now, as for requeue
            when = max(when, self._backend.now())
        requeued = await self._backend.requeue_many(ids, eta=when)
        if any(requeued):
            self._backend.notify_work()
        return requeued

    async def counts(self, *, queue: str | None = None) -> dict[str, int]:
        """Number of tasks per status."""
        return await self._backend.counts(queue=None if queue is None else checks.queue_name(queue))

    async def list_tasks(
        self,
        *,
        status: TaskStatus | TaskStatusName | None = None,
        queue: str | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[Task]:
        """Tasks filtered by status and queue, oldest first."""
        if queue is not None:
            checks.queue_name(queue)
        return await self._backend.list_tasks(status=status, queue=queue, limit=limit, offset=offset)

    async def purge(self, *, older_than: datetime | timedelta | None = None) -> int:
        """Delete finished tasks (and results) finished before ``older_than`` (all when None).

        ``older_than`` is an aware datetime cut-off, or a ``timedelta``: finished
        longer ago than that (``timedelta(days=7)``), counted from now.
        """
        if older_than is not None and not isinstance(older_than, datetime | timedelta):
            raise ValidationError(
                f"older_than must be an aware datetime, a timedelta or None, got {type(older_than).__name__}",
                parameter="older_than",
                value=older_than,
            )
        if isinstance(older_than, timedelta):
            if older_than < timedelta(0):
                raise ValidationError(
                    f"older_than must be a timedelta >= 0 or an aware datetime, got {safe_repr(older_than)}",
                    parameter="older_than",
                    value=older_than,
                )
            try:
                older_than = datetime.now(UTC) - older_than
            except OverflowError:  # longer ago than year 1: nothing finished that early
                older_than = datetime.min.replace(tzinfo=UTC)
        return await self._backend.purge(older_than=normalize_eta(older_than, parameter="older_than"))


def _dumps_call(
    serializer: Serializer, func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> bytes:
    """``serializer.dumps_call``, with a plugin serializer's own errors raised as ``SerializationError``."""
    try:
        payload: object = serializer.dumps_call(func, args, kwargs)  # a plugin's may return the wrong type
    except SitqError:
        raise
    except Exception as exc:
        raise SerializationError(
            f"serializer {serializer.name!r} cannot serialise a call of {function_path(func)}: "
            f"{describe_exception(exc)}",
            operation="dumps_call",
            data_type=type(func).__name__,
            cause=exc,
        ) from exc
    return payload if type(payload) is bytes else checked_bytes(serializer, payload, "dumps_call", func)


def _too_large(exc: checks.TooLargeToStore, parameter: str, position: int | None = None) -> ValidationError:
    """The store's refusal of an oversized call, named after the argument the caller passed (and its item)."""
    where = "" if position is None else f"{parameter}[{position}]: "
    return ValidationError(where + exc.message, parameter=parameter, value=exc.value, cause=exc)


def connect(spec: BackendSpec | None = None, *, serializer: SerializerSpec = None, **options: Any) -> TaskQueue:
    """A :class:`TaskQueue` for a URL, a backend name, a config mapping or a backend.

    With no argument, ``SITQ_BACKEND`` (a URL or name) is used, then
    ``sqlite:///sitq.db``. Keyword options go to the backend. The queue
    connects on first use; ``async with sitq.connect(...) as queue:`` closes it.
    """
    _target, _options, config_serializer = split_config(spec)
    backend = resolve_backend(spec, **options)
    queue = TaskQueue(backend, serializer=serializer if serializer is not None else config_serializer)
    if not isinstance(spec, Backend):  # made here, as TaskQueue(URL) makes it: let go if dropped unclosed
        queue._watch_drop(made_backend=True)
    return queue
