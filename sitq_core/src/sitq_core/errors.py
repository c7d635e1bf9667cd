"""The sitq exception hierarchy.

Every error carries a human message plus keyword-only context (task id,
operation, parameter, ...). Each context item is an attribute and an entry of
``error.context``; ``str(error)`` shows the message followed by the context so
logs are useful without a debugger.
"""

from __future__ import annotations

import builtins
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

__all__ = [
    "BackendError",
    "BackendNotInstalledError",
    "BrokenPluginError",
    "ConfigurationError",
    "ConnectionError",
    "LeaseLostError",
    "MissingPluginError",
    "PluginConflictError",
    "PluginError",
    "ResourceExhaustionError",
    "SerializationError",
    "SitqError",
    "StoreFullError",
    "StoreGoneError",
    "SyncTaskQueueError",
    "TaskCancelledError",
    "TaskExecutionError",
    "TaskQueueError",
    "TimeoutError",
    "UnknownBackendError",
    "UnknownSerializerError",
    "ValidationError",
    "WorkerError",
]


class _NotGiven:
    """The default of every context keyword: tells "not given" (attribute None, no context entry) from None given."""

    def __repr__(self) -> str:
        return "None"  # what the attribute reads when the keyword is left out


_NOT_GIVEN: Any = _NotGiven()


def describe_exception(exc: BaseException, when_empty: str | None = None) -> str:
    """``"TypeName: text"`` for an error shown inside a message; never a dangling colon.

    An exception whose text is empty (``msgpack``'s ``FormatError``) reads as
    ``when_empty (TypeName)`` when a description is given, else as its type name.
    A ``__str__`` that raises counts as empty text.
    """
    name = type(exc).__name__
    text = exception_text(exc)
    if text != name:
        return f"{name}: {text}"
    return f"{when_empty} ({name})" if when_empty else name


def exception_text(exc: BaseException) -> str:
    """``str(exc)``, or the type name when that is empty or raises: for ``"...: {text}"`` after a message."""
    try:
        text = str(exc)
    except Exception:
        text = ""
    return text if text.strip() else type(exc).__name__


#: reprs longer than this are shortened in the middle in error messages (the value itself stays whole on the error)
REPR_LIMIT = 200


def safe_repr(value: Any) -> str:
    """``repr(value)``, or a stand-in naming its type when that repr raises: an error message always builds.

    A repr longer than ``REPR_LIMIT`` keeps its start and end around
    ``...[N characters]...``: a 10 MB argument or a 300-digit int named in an
    error must not make the message (and every log line) that long.
    """
    try:
        text = repr(value)
    except Exception as exc:
        return f"<{type(value).__name__} object (repr failed: {describe_exception(exc)})>"
    if len(text) > REPR_LIMIT:
        return f"{text[:120]}...[{len(text)} characters]...{text[-40:]}"
    return text


class SitqError(Exception):
    """Root of every error sitq raises on purpose."""

    def __init__(
        self,
        message: str,
        *,
        cause: BaseException | None = None,
        context: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message  # as given, like ``args[0]``; ``str(error)`` reads it through ``str()``
        self.context: dict[str, Any] = dict(context or {})
        self._keywords: set[str] = set()  # the context entries given as keywords, not in ``context=``
        if cause is not None:
            self.__cause__ = cause

    @property
    def cause(self) -> BaseException | None:
        """The underlying error: always ``__cause__``, also after ``raise ... from other``."""
        return self.__cause__

    @cause.setter
    def cause(self, value: BaseException | None) -> None:
        self.__cause__ = value

    def _add_context(self, **items: Any) -> None:
        """Store each keyword given as an attribute and in ``context`` (None too, when it was given).

        A keyword left out is an attribute that reads None and no entry of
        ``context`` (an optional detail nobody gave), unless ``context=`` holds
        that key: the attribute then reads that entry. A key given both ways is
        a TypeError, as a keyword argument given twice is.
        """
        for key, value in items.items():
            if value is _NOT_GIVEN:
                setattr(self, key, self.context.get(key))
            elif key in self.context and key not in self._keywords:
                raise TypeError(f"{type(self).__name__}() got {key!r} both as a keyword and in context=; give it once")
            else:
                setattr(self, key, value)
                self.context[key] = value
                self._keywords.add(key)

    def _add_parameter_context(self, parameter: str | None, value: Any, valid_options: Iterable[str] | None) -> None:
        """``parameter``, ``value`` and ``valid_options`` (a list; a single str is one option, not its letters)."""
        options: Any = valid_options
        if isinstance(valid_options, str):
            options = [valid_options]
        elif valid_options is not None and valid_options is not _NOT_GIVEN:
            options = list(valid_options)
        self._add_context(parameter=parameter, value=value, valid_options=options)

    def __str__(self) -> str:
        # ``str()`` as a builtin exception does: a message that is not a str (None, another error) still prints
        if not self.context:
            return str(self.message)
        details = ", ".join(f"{key}={safe_repr(value)}" for key, value in self.context.items())
        return f"{self.message} (context: {details})"

    def __repr__(self) -> str:
        # the keyword context too (``ValidationError('m', parameter='p')``): logs and debuggers show it
        keywords: set[str] = getattr(self, "_keywords", set())  # none in a copy from before it was kept
        parts = [safe_repr(self.message)]
        parts += [f"{key}={safe_repr(value)}" for key, value in self.context.items() if key in keywords]
        extra = [f"{safe_repr(key)}: {safe_repr(value)}" for key, value in self.context.items() if key not in keywords]
        if extra:
            parts.append(f"context={{{', '.join(extra)}}}")
        return f"{type(self).__name__}({', '.join(parts)})"

    def __reduce__(self) -> tuple[Any, ...]:
        # Keep errors picklable across processes (keyword-only arguments).
        return (_rebuild_error, (type(self), self.message, self.cause, self.__dict__))


def _rebuild_error(cls: type[SitqError], message: str, cause: BaseException | None, state: dict[str, Any]) -> SitqError:
    error = cls.__new__(cls)
    Exception.__init__(error, message)
    error.__dict__.update(state)
    error.__cause__ = cause  # the contract: ``cause`` is ``__cause__``, in a copy as in the original
    return error


class TaskQueueError(SitqError):
    """An operation of the task queue failed."""

    task_id: str | None

    def __init__(
        self,
        message: str,
        *,
        task_id: str | None = _NOT_GIVEN,
        cause: BaseException | None = None,
        context: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(message, cause=cause, context=context)
        self._add_context(task_id=task_id)


class TimeoutError(TaskQueueError, builtins.TimeoutError):
    """An operation did not finish within its time limit."""

    timeout_seconds: float | None
    operation: str | None

    def __init__(
        self,
        message: str,
        *,
        task_id: str | None = _NOT_GIVEN,
        timeout_seconds: float | None = _NOT_GIVEN,
        operation: str | None = _NOT_GIVEN,
        cause: BaseException | None = None,
        context: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(message, task_id=task_id, cause=cause, context=context)
        self._add_context(timeout_seconds=timeout_seconds, operation=operation)


class SyncTaskQueueError(TaskQueueError):
    """The synchronous wrapper could not complete an operation."""

    operation: str | None

    def __init__(
        self,
        message: str,
        *,
        task_id: str | None = _NOT_GIVEN,
        operation: str | None = _NOT_GIVEN,
        cause: BaseException | None = None,
        context: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(message, task_id=task_id, cause=cause, context=context)
        self._add_context(operation=operation)


class BackendError(SitqError):
    """The storage backend failed."""

    operation: str | None
    backend_type: str | None

    def __init__(
        self,
        message: str,
        *,
        operation: str | None = _NOT_GIVEN,
        backend_type: str | None = _NOT_GIVEN,
        cause: BaseException | None = None,
        context: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(message, cause=cause, context=context)
        self._add_context(operation=operation, backend_type=backend_type)


class ConnectionError(BackendError, builtins.ConnectionError):
    """The backend could not connect to its store."""

    connection_details: str | None

    def __init__(
        self,
        message: str,
        *,
        operation: str | None = _NOT_GIVEN,
        backend_type: str | None = _NOT_GIVEN,
        connection_details: str | None = _NOT_GIVEN,
        cause: BaseException | None = None,
        context: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(message, operation=operation, backend_type=backend_type, cause=cause, context=context)
        self._add_context(connection_details=connection_details)


class StoreGoneError(ConnectionError):
    """The store this backend connected to is gone for good for this process; no retry reaches it again.

    Raised, for example, by the SQLite backend once its database file was
    deleted or replaced under the process. Only a new connect (a restarted
    process) reaches what is at that place now, so a worker does not retry
    it: it stops, and ``Worker.run()`` raises (``sitq worker`` exits with 2).
    """


class StoreFullError(BackendError):
    """A write failed because the store has no room left: the disk holding it is full (or a size cap is reached).

    Raised, for example, by the SQLite backend for SQLite's "database or disk
    is full". Nothing of the call was stored, reads go on working, and a
    smaller write may still fit: a worker whose report of a large result is
    refused so reports that task failed with this reason (retried as its
    retry policy allows) instead of retrying the report until the task's
    lease expires and it runs again. ``cause`` is the store's own error.
    """


class LeaseLostError(BackendError):
    """A call used a lease token that no longer owns the task (fenced off)."""


class WorkerError(SitqError):
    """The worker failed outside of a task's own code."""

    task_id: str | None
    worker_id: str | None

    def __init__(
        self,
        message: str,
        *,
        task_id: str | None = _NOT_GIVEN,
        worker_id: str | None = _NOT_GIVEN,
        cause: BaseException | None = None,
        context: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(message, cause=cause, context=context)
        self._add_context(task_id=task_id, worker_id=worker_id)


class TaskExecutionError(WorkerError):
    """A task ended failed; carries the task's own error message (and ``traceback`` when known)."""

    traceback: str | None = None
    function_name: str | None
    execution_time: float | None

    def __init__(
        self,
        message: str,
        *,
        task_id: str | None = _NOT_GIVEN,
        worker_id: str | None = _NOT_GIVEN,
        function_name: str | None = _NOT_GIVEN,
        execution_time: float | None = _NOT_GIVEN,
        cause: BaseException | None = None,
        context: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(message, task_id=task_id, worker_id=worker_id, cause=cause, context=context)
        self._add_context(function_name=function_name, execution_time=execution_time)


class TaskCancelledError(TaskExecutionError):
    """A task ended cancelled instead of producing a value."""


class ValidationError(SitqError, ValueError):
    """An argument is invalid; names the parameter and what was expected.

    ``valid_options``: the accepted values, when the parameter takes one of a few.
    """

    parameter: str | None
    value: Any
    valid_options: list[str] | None

    def __init__(
        self,
        message: str,
        *,
        parameter: str | None = _NOT_GIVEN,
        value: Any = _NOT_GIVEN,
        valid_options: Iterable[str] | None = _NOT_GIVEN,
        cause: BaseException | None = None,
        context: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(message, cause=cause, context=context)
        self._add_parameter_context(parameter, value, valid_options)


class SerializationError(SitqError):
    """A value could not be serialised or deserialised."""

    operation: str | None
    data_type: str | None

    def __init__(
        self,
        message: str,
        *,
        operation: str | None = _NOT_GIVEN,
        data_type: str | None = _NOT_GIVEN,
        cause: BaseException | None = None,
        context: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(message, cause=cause, context=context)
        self._add_context(operation=operation, data_type=data_type)


class ResourceExhaustionError(SitqError):
    """A bounded resource (queue size, memory, handles) ran out."""

    resource_type: str | None
    current_usage: Any
    limit: Any

    def __init__(
        self,
        message: str,
        *,
        resource_type: str | None = _NOT_GIVEN,
        current_usage: Any = _NOT_GIVEN,
        limit: Any = _NOT_GIVEN,
        cause: BaseException | None = None,
        context: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(message, cause=cause, context=context)
        self._add_context(resource_type=resource_type, current_usage=current_usage, limit=limit)


class ConfigurationError(SitqError):
    """Configuration is invalid; names the parameter and the valid options."""

    parameter: str | None
    value: Any
    valid_options: list[str] | None

    def __init__(
        self,
        message: str,
        *,
        parameter: str | None = _NOT_GIVEN,
        value: Any = _NOT_GIVEN,
        valid_options: Sequence[str] | None = _NOT_GIVEN,
        cause: BaseException | None = None,
        context: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(message, cause=cause, context=context)
        self._add_parameter_context(parameter, value, valid_options)


class PluginError(ConfigurationError):
    """A plugin could not provide what was asked of it."""


class UnknownBackendError(PluginError):
    """No installed plugin registers the requested backend or serializer name."""


class UnknownSerializerError(UnknownBackendError):
    """No installed plugin registers the requested serializer name.

    A subclass of ``UnknownBackendError``, which unknown serializer names raised
    before this type existed, so code catching that keeps working.
    """


class BackendNotInstalledError(PluginError):
    """The name is known to sitq, but the distribution providing it is not installed."""


class BrokenPluginError(PluginError):
    """The plugin providing the name failed to load or registered something invalid."""


class PluginConflictError(PluginError):
    """Two distributions register the same name."""


class MissingPluginError(SitqError, ImportError):
    """A facade name (such as ``sitq.SQLiteBackend``) needs a plugin that is not installed."""
