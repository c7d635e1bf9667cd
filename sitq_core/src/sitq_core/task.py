"""``@sitq.task``: attach default options to a function and keep its signature for type checkers.

The decorated object still calls the function directly (``send(to)`` runs it
here and now), carries its task options, and, when bound to a queue
(``@queue.task(...)``), enqueues with ``await send.enqueue(to)`` — arguments
checked against the function's own signature by mypy and IDEs (ParamSpec).
Any queue's ``enqueue(send, ...)`` applies the decorator's options too.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import pickle
import sys
from collections.abc import Callable
from types import CodeType
from typing import TYPE_CHECKING, Any, Concatenate, Generic, ParamSpec, Self, TypeVar, Unpack, overload

from .errors import ValidationError
from .options import TaskOptionArgs, TaskOptions

if TYPE_CHECKING:
    from .queue import TaskQueue, TaskQueueView

__all__ = ["TaskFunction", "is_importable_task", "is_task_function", "pickled_by_value", "task", "task_of"]

#: the names ``task(...)`` takes as options (an unknown one given as None is still refused, naming it)
_OPTION_NAMES = frozenset(field.name for field in dataclasses.fields(TaskOptions)) - {"explicit"}

P = ParamSpec("P")
R = TypeVar("R")
Q = ParamSpec("Q")
S = TypeVar("S")


class TaskFunction(Generic[P, R]):
    """A function plus its default task options (see :func:`task`)."""

    __sitq_task__ = True
    #: set on a task read through an instance (or a classmethod's class): (the class's task, instance, owner)
    _binding: tuple[TaskFunction[Any, Any], object, type[Any] | None] | None = None
    _returns_coroutine = False  # set per task: its function is a coroutine function

    def __init__(
        self, func: Callable[P, R], options: TaskOptions, queue: TaskQueue | TaskQueueView | None = None
    ) -> None:
        if not callable(func):
            raise ValidationError(f"task needs a callable, got {type(func).__name__}", parameter="func", value=func)
        _check_queue(queue)
        functools.update_wrapper(self, func)  # __name__, __qualname__, __module__, __doc__ (and func's __dict__)
        self.__wrapped__ = func
        # after update_wrapper: a function's own ``options`` or ``queue`` attribute must not replace these
        self.options = options
        self.queue: TaskQueue | TaskQueueView | None = queue
        # calling it returns a coroutine: frameworks asking inspect/asyncio.iscoroutinefunction must await it
        self._returns_coroutine = _is_coroutine_function(func)
        if sys.version_info >= (3, 12) and self._returns_coroutine:
            inspect.markcoroutinefunction(self)

    if sys.version_info < (3, 12):
        # Python 3.11 has no inspect.markcoroutinefunction: its inspect.iscoroutinefunction (which
        # asyncio.iscoroutinefunction asks first) reads the CO_COROUTINE flag of ``__code__`` on any object
        # that looks like a function (``__code__``, ``__name__``, ``__defaults__``, ``__kwdefaults__``).
        # A task of a coroutine function looks like one; a task of a sync function does not, as before.
        # Tools that read ``__code__``, ``__defaults__`` or ``__kwdefaults__`` directly see a stub
        # ``(*args, **kwargs)`` with no defaults: ``inspect.signature`` (``__signature__`` below) is the
        # source of the function's real parameters.

        @property
        def __code__(self) -> CodeType:
            if not self._returns_coroutine:
                raise AttributeError("__code__")
            return _any_arguments.__code__  # an async function's (*args, **kwargs)

        @property
        def __defaults__(self) -> None:
            if not self._returns_coroutine:
                raise AttributeError("__defaults__")

        @property
        def __kwdefaults__(self) -> None:
            if not self._returns_coroutine:
                raise AttributeError("__kwdefaults__")

        @property
        def __signature__(self) -> inspect.Signature:
            """The function's signature: ``inspect.signature`` would otherwise read the ``__code__`` above."""
            if self._returns_coroutine:
                try:
                    return inspect.signature(self.__wrapped__)
                except (TypeError, ValueError):
                    pass
            raise AttributeError("__signature__")

    @overload
    def __get__(self, instance: None, owner: type[Any] | None = None, /) -> Self: ...

    @overload
    def __get__(
        self: TaskFunction[Concatenate[S, Q], R], instance: S, owner: type[Any] | None = None, /
    ) -> TaskFunction[Q, R]: ...

    def __get__(self, instance: object, owner: type[Any] | None = None, /) -> TaskFunction[Any, R]:
        """A task in a class body binds as its function would: ``obj.method`` is a task of the bound method.

        The bound task keeps this task's options and queue, so ``obj.method(x)`` runs it,
        ``queue.enqueue(obj.method, x)`` applies the options and ships ``obj`` with the call
        (cloudpickle), and ``await obj.method.enqueue(x)`` enqueues that call on the task's queue.
        Read from the class (``Cls.method``) it is this task itself, as a function would be.
        """
        get = getattr(type(self.__wrapped__), "__get__", None)  # a function, classmethod, staticmethod ...
        if get is None:
            return self  # a callable object or a partial: not bound, as undecorated
        bound = get(self.__wrapped__, instance, owner)
        if bound is self.__wrapped__:
            return self  # a function read from its class
        made: TaskFunction[Any, R] = TaskFunction(bound, self.options, self.queue)
        made._binding = (self, instance, owner if instance is None else None)
        return made

    def __call__(self, /, *args: P.args, **kwargs: P.kwargs) -> R:
        """Run the function here and now (not through a queue)."""
        return self.__wrapped__(*args, **kwargs)

    async def enqueue(self, /, *args: P.args, **kwargs: P.kwargs) -> str:
        """Enqueue a call on the bound queue; returns the task id."""
        if self.queue is None:
            from .serializers import function_path  # here: sitq_core.serializers imports this module

            raise ValidationError(
                f"{function_path(self)} is not bound to a queue: decorate it with @queue.task(...), "
                "or call await queue.enqueue(func, ...)",
                parameter="queue",
                value=None,
            )
        return await self.queue.enqueue_call(self, args, kwargs)

    def bind(self, queue: TaskQueue | TaskQueueView | None) -> TaskFunction[P, R]:
        """The same task bound to another queue (a :class:`TaskQueue`, a view of one, or None: unbound).

        Anything else (a URL, a ``SyncTaskQueue``) raises ``ValidationError``.
        """
        rebound = TaskFunction(self.__wrapped__, self.options, queue)
        rebound._binding = self._binding  # a bound method's task stays one: it pickles with its instance
        return rebound

    def __reduce__(self) -> str | tuple[Any, ...]:
        # Importable: pickled by name, like a function. Otherwise (``__main__``, local) cloudpickle ships
        # the function by value, with its options (a follow-up ``queue.enqueue(f)`` inside another task
        # keeps them) and its queue when that travels as its configuration (``f.enqueue`` works there too;
        # an in-memory store's queue cannot: the copy is unbound, and says so when asked to enqueue).
        # A module registered with cloudpickle.register_pickle_by_value ships its code, as cloudpickle
        # does for its plain functions: a worker without that module can still run the task.
        # A method's task (``obj.method``) travels as the class's task (by name when importable) and
        # its instance, bound again on load: the method's own function is not importable by its name.
        if self._binding is not None:
            unbound, instance, owner = self._binding
            return (_bound_again, (unbound, instance, owner, self.options, _travelling(self.queue)))
        if is_importable_task(self) and not pickled_by_value(self.__module__):
            return str(getattr(self, "__qualname__", ""))
        return (TaskFunction, (self.__wrapped__, self.options, _travelling(self.queue)))

    def __repr__(self) -> str:
        from .serializers import function_path  # named as the undecorated callable: 'mytasks:CallObj'

        return f"<sitq task {function_path(self)}>"


def _bound_again(
    unbound: TaskFunction[Any, Any],
    instance: object,
    owner: type[Any] | None,
    options: TaskOptions,
    queue: TaskQueue | TaskQueueView | None,
) -> TaskFunction[Any, Any]:
    """A pickled method's task: the class's task bound to the instance again, with the options it had."""
    bound: TaskFunction[Any, Any] = unbound.__get__(instance, owner)
    if bound.options is not options or bound.queue is not queue:
        rebound = TaskFunction(bound.__wrapped__, options, queue)
        rebound._binding = bound._binding
        return rebound
    return bound


def _is_coroutine_function(func: Callable[..., Any]) -> bool:
    """True when ``func`` is a coroutine function (a bound async method, a partial of one), as inspect says."""
    try:
        return inspect.iscoroutinefunction(func)
    except Exception:  # a user's object whose attribute lookup raises: not one
        return False


async def _any_arguments(*args: Any, **kwargs: Any) -> Any:
    """Lends its code object to a task of a coroutine function on Python 3.11 (see ``TaskFunction``)."""


def _check_queue(queue: object) -> None:
    """``queue`` must be None or an async queue (a TaskQueue, or a view of one): refused here, not at enqueue."""
    if queue is None:
        return
    from .queue import _Producer  # here: sitq_core.queue imports this module

    if isinstance(queue, _Producer):
        return
    kind = type(queue).__name__
    hint = (
        ": its enqueue is not awaitable; enqueue on it with sync_queue.enqueue(f, ...), or bind a TaskQueue"
        if kind.startswith("SyncTaskQueue")
        else ": make one with sitq.TaskQueue(url) first"
        if isinstance(queue, str)
        else ""
    )
    shown = f" {queue!r}" if isinstance(queue, str | bytes | int | float) else ""
    raise ValidationError(
        f"queue must be a TaskQueue (or None), got {kind}{shown}{hint}", parameter="queue", value=queue
    )


def _unwrap(func: Callable[..., Any]) -> Callable[..., Any]:
    return func  # kept: payloads stored before task functions travelled whole still load


def _travelling(queue: TaskQueue | TaskQueueView | None) -> TaskQueue | TaskQueueView | None:
    """``queue`` if it can be pickled (as its configuration), else None."""
    if queue is None:
        return None
    try:
        pickle.dumps(queue)
    except Exception:
        return None
    return queue


def is_task_function(obj: object) -> bool:
    """True for objects made by :func:`task` (duck-typed, so serializers need no import)."""
    return getattr(type(obj), "__sitq_task__", False) is True


#: how many ``__wrapped__`` layers :func:`task_of` looks through for a task under other decorators
WRAPPED_DEPTH = 16


def task_of(func: object) -> TaskFunction[Any, Any] | None:
    """``func`` if it is a task, else the task that decorators over it wrap, else None.

    ``functools.wraps`` sets ``__wrapped__``: a decorator put outside
    ``@sitq.task`` leaves the task (and its options) that many layers down.
    Followed up to :data:`WRAPPED_DEPTH` layers; an object whose
    ``__wrapped__`` cannot be read is taken as wrapping nothing.
    """
    for _ in range(WRAPPED_DEPTH + 1):
        if is_task_function(func):
            return func  # type: ignore[return-value]
        try:
            func = getattr(func, "__wrapped__", None)
        except Exception:  # a user's object whose attribute lookup raises: not a wrapper of a task
            return None
        if func is None:
            return None
    return None


def is_importable_task(obj: object) -> bool:
    """True when ``obj`` is a task function reachable by its module and qualified name."""
    module_name = getattr(obj, "__module__", None)
    qualname = getattr(obj, "__qualname__", "")
    if not is_task_function(obj) or module_name in (None, "__main__") or "<" in qualname:
        return False
    target: Any = sys.modules.get(module_name or "")
    for part in qualname.split("."):
        target = getattr(target, part, None)
    return target is obj


def pickled_by_value(module_name: str | None) -> bool:
    """True when ``cloudpickle.register_pickle_by_value`` covers ``module_name`` or a package above it.

    Cheap when nothing is registered (the usual case): one dict lookup and an empty set.
    """
    cloudpickle: Any = sys.modules.get("cloudpickle")
    if cloudpickle is None:
        return False  # not imported yet: nothing can have been registered
    registered: set[str] = cloudpickle.list_registry_pickle_by_value()  # a copy; cloudpickle >= 2.0
    return bool(registered) and any(
        module_name == name or (module_name or "").startswith(name + ".") for name in registered
    )


@overload
def task(func: Callable[P, R], /) -> TaskFunction[P, R]: ...


@overload
def task(
    func: None = None, /, *, queue: TaskQueue | TaskQueueView | None = None, **options: Unpack[TaskOptionArgs]
) -> Callable[[Callable[P, R]], TaskFunction[P, R]]: ...


def task(
    func: Callable[P, R] | None = None,
    /,
    *,
    queue: TaskQueue | TaskQueueView | None = None,
    **options: Unpack[TaskOptionArgs],
) -> TaskFunction[P, R] | Callable[[Callable[P, R]], TaskFunction[P, R]]:
    """Decorate a function with default task options (``max_retries``, ``priority``, ``queue_name`` ...).

    ``@task`` and ``@task(max_retries=3)`` both work; unknown options raise
    ``ValidationError`` naming the option. Options given later with
    ``queue.with_options(...)`` win over the decorator's.
    """
    _check_queue(queue)  # refused when the decorator is made, not first as a function is decorated
    # an option given as None is left as it is (not set here), as with_options does on a queue
    task_options = TaskOptions().merged(
        **{name: value for name, value in options.items() if value is not None or name not in _OPTION_NAMES}
    )

    def decorate(function: Callable[P, R]) -> TaskFunction[P, R]:
        if isinstance(function, TaskFunction):
            # stacked (@queue.task(...) over @sitq.task(...)): the outer decorator's options and queue win,
            # the inner one's other options stay
            given = {name: getattr(task_options, name) for name in task_options.explicit_names()}
            merged = function.options.merged(**given) if given else function.options
            outer_queue = queue if queue is not None else function.queue
            stacked: TaskFunction[P, R] = TaskFunction(function.__wrapped__, merged, outer_queue)
            stacked._binding = function._binding  # over a method's task (obj.method): still one, with obj
            return stacked
        return TaskFunction(function, task_options, queue)

    if func is not None:
        return decorate(func)
    return decorate
