"""Serializers: how a call and its result become bytes.

Two ship with sitq and register through the same plugin hook as third-party
ones: ``cloudpickle`` (the default; ships lambdas and closures, and so runs
whatever code the payload holds) and ``msgpack`` (no code in the payload: the
function travels as its import path ``module:qualname``).
"""

from __future__ import annotations

import abc
import asyncio
import importlib
import inspect
import pickle
import sys
import unicodedata
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, ClassVar

from .checks import escaped_for_store
from .errors import SerializationError, ValidationError, describe_exception, exception_text, safe_repr
from .memo import CallableMemo
from .task import WRAPPED_DEPTH, is_importable_task, is_task_function, pickled_by_value
from .task_paths import PathRefused, dunder_refusal, not_a_function, walk, with_article

__all__ = [
    "PAYLOAD_ERRORS",
    "CallSpec",
    "CloudpickleSerializer",
    "MsgpackSerializer",
    "Serializer",
    "function_path",
]

CallSpec = tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any]]


#: What loading a payload may raise because of the payload itself: unpickling runs code chosen by its
#: writer, which may raise anything (GeneratorExit, CancelledError and SystemExit included), none of
#: which may escape as if it were the reader's own (KeyboardInterrupt stays the user's Ctrl-C).
PAYLOAD_ERRORS: tuple[type[BaseException], ...] = (Exception, SystemExit, GeneratorExit, asyncio.CancelledError)


def function_path(func: Callable[..., Any]) -> str:
    """``module:qualname`` of a callable, the name shown in listings and logs (escaped where a store needs it)."""
    for _ in range(WRAPPED_DEPTH):  # a task is named as what it wraps: a callable object after its class
        if not is_task_function(func):
            break
        func = getattr(func, "__wrapped__", func)
    module = _attribute(func, "__module__") or "?"
    qualname = _attribute(func, "__qualname__") or type(func).__qualname__
    return escaped_for_store(f"{module}:{qualname}")


def _attribute(obj: object, name: str) -> str | None:
    """``obj.name`` when it is a str, else None: a proxy's ``__getattr__`` may raise anything (a lookup on a
    remote service), and a callable object's name then comes from its class."""
    try:
        value = getattr(obj, name, None)
    except Exception:
        return None
    return value if isinstance(value, str) else None


class Serializer(abc.ABC):
    """Turns calls and values into bytes and back.

    ``name`` is stored with every task, so a worker decodes each task with the
    serializer that wrote it. Errors raise :class:`SerializationError`.
    """

    name: ClassVar[str] = ""
    content_type: ClassVar[str] = "application/octet-stream"

    @abc.abstractmethod
    def dumps(self, obj: Any) -> bytes:
        """Serialise a value (a task's return value or argument list)."""

    @abc.abstractmethod
    def loads(self, data: bytes) -> Any:
        """Deserialise what ``dumps`` produced."""

    def dumps_call(self, func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> bytes:
        """Serialise a call; the default stores ``(func, args, kwargs)`` with ``dumps``."""
        return self.dumps((func, args, kwargs))

    def loads_call(self, data: bytes) -> CallSpec:
        """Deserialise a call into ``(func, args, kwargs)`` ready to run."""
        loaded = self.loads(data)
        try:
            func, args, kwargs = loaded
        except (TypeError, ValueError) as exc:
            raise SerializationError(
                "payload is not a (function, args, kwargs) call",
                operation="loads_call",
                data_type=type(loaded).__name__,
                cause=exc,
            ) from exc
        if not callable(func):
            raise SerializationError(
                "payload's function is not callable", operation="loads_call", data_type=type(func).__name__
            )
        return func, tuple(args), dict(kwargs)


_LOADS_CALL_RULE = (
    "Serializer.loads_call must return (func, args, kwargs): a callable, a tuple or list of positional "
    "arguments and a mapping of keyword arguments by str name"
)


def checked_bytes(serializer: Serializer, data: object, method: str, func: Callable[..., Any] | None = None) -> bytes:
    """What ``serializer.<method>`` returned, as ``bytes``: a plugin's may return ``str`` or ``None``.

    ``bytearray`` and ``memoryview`` are copied to ``bytes``; anything else is a
    :class:`SerializationError` naming the serializer and what the method must
    return (and ``func``, for a call's payload). One check for ``enqueue``'s
    payloads and the worker's return values.
    """
    if type(data) is bytes:
        return data
    if isinstance(data, bytes | bytearray | memoryview):
        return bytes(data)
    kind = type(data).__name__
    call = "" if func is None else f", for a call of {function_path(func)}"
    raise SerializationError(
        f"serializer {serializer.name!r} returned {kind}, not bytes{call} (Serializer.{method} must return bytes)",
        operation=method,
        data_type=kind,
    )


def checked_call(serializer: Serializer, loaded: object) -> CallSpec:
    """What ``serializer.loads_call`` returned, as a ``(func, tuple, dict)`` the worker can call.

    A plugin's may hand back anything: unpacked blindly, a wrong shape raised
    inside the worker's own machinery instead of failing its task with a reason.
    Any sequence of arguments (not text) and any mapping with ``str`` keys are
    accepted and converted; anything else is a :class:`SerializationError`
    naming the serializer and what ``loads_call`` must return.
    """
    if type(loaded) is tuple and len(loaded) == 3:  # the common case, checked without conversions
        func, args, kwargs = loaded
        if type(args) is tuple and type(kwargs) is dict and callable(func) and all(type(k) is str for k in kwargs):
            return loaded
    cause: Exception | None = None
    try:
        problem = _call_problem(loaded)
        if problem is None:
            func, args, kwargs = loaded  # type: ignore[misc]
            return func, tuple(args), dict(kwargs)
    except Exception as exc:  # a sequence or mapping of the plugin's own whose reading raises
        problem, cause = f"returned a call that cannot be read ({describe_exception(exc)})", exc
    raise SerializationError(
        f"serializer {serializer.name!r} loads_call {problem} ({_LOADS_CALL_RULE})",
        operation="loads_call",
        data_type=type(loaded).__name__,
        cause=cause,
    )


def _call_problem(loaded: object) -> str | None:
    """What is wrong with a ``loads_call`` result, or None when it can be used as a call."""
    if not isinstance(loaded, Sequence) or isinstance(loaded, str | bytes | bytearray):
        return f"returned {type(loaded).__name__}, not a (func, args, kwargs) tuple"
    if len(loaded) != 3:
        return (
            f"returned {with_article(type(loaded).__name__)} of {len(loaded)} items, not a (func, args, kwargs) tuple"
        )
    func, args, kwargs = loaded
    if not callable(func):
        return f"returned a call whose func is {with_article(type(func).__name__)}, not a callable"
    if not isinstance(args, Sequence) or isinstance(args, str | bytes | bytearray):
        return f"returned a call whose args is {with_article(type(args).__name__)}, not a tuple or list"
    if not isinstance(kwargs, Mapping):
        return f"returned a call whose kwargs is {with_article(type(kwargs).__name__)}, not a mapping"
    for key in kwargs:
        if type(key) is not str:
            return f"returned a call whose kwargs has a key that is not a str ({with_article(type(key).__name__)})"
    return None


class CloudpickleSerializer(Serializer):
    """The default: any picklable value, plus lambdas, closures and local functions.

    Loading a payload runs code chosen by whoever wrote it: use it only when
    every writer of the store is trusted (see docs/explanation/serializers.md).
    """

    name = "cloudpickle"
    content_type = "application/x-python-pickle"

    def __init__(self, protocol: int | None = None) -> None:
        if protocol is not None and (type(protocol) is not int or protocol > pickle.HIGHEST_PROTOCOL):  # not bool
            raise ValidationError(
                f"protocol must be None or an int up to {pickle.HIGHEST_PROTOCOL} (negative: the highest), "
                f"got {safe_repr(protocol)}",
                parameter="protocol",
                value=protocol,
            )
        self.protocol = pickle.HIGHEST_PROTOCOL if protocol is None or protocol < 0 else protocol
        # imported here, when the queue is made, not first by a dumps() on some thread: an import in progress
        # on another thread at a fork leaves the child's first enqueue waiting on the import lock for good
        import cloudpickle  # noqa: F401

    def dumps_call(self, func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> bytes:
        """Serialise a call; plain data calls of importable functions skip cloudpickle's slow path.

        When ``func`` is importable by reference (not from ``__main__``, nor
        from a module registered with ``cloudpickle.register_pickle_by_value``)
        and the arguments are plain data, the standard C pickler writes
        exactly what cloudpickle would, several times faster.
        """
        if _importable_by_reference(func) and _plain_data(args) and _plain_data(kwargs):
            try:
                return pickle.dumps((func, args, kwargs), protocol=self.protocol)
            except Exception:  # pragma: no cover - fall back to the general path
                pass
        try:
            return self.dumps((func, args, kwargs))
        except SerializationError as exc:
            raise self._name_the_culprit(func, args, kwargs, exc) from exc.__cause__

    def _name_the_culprit(
        self, func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any], error: SerializationError
    ) -> SerializationError:
        """The error of a call that would not pickle, naming the part that fails (the function or an argument)."""
        import cloudpickle

        path = function_path(func)
        parts: list[tuple[str, Any]] = [(f"the function {path} itself", func)]
        parts += [(f"argument {index} of {path}", value) for index, value in enumerate(args)]
        parts += [(f"keyword argument {key!r} of {path}", value) for key, value in kwargs.items()]
        for what, value in parts:
            try:
                cloudpickle.dumps(value, protocol=self.protocol)
            except Exception as exc:
                hint = " (something it refers to, a global or a closure variable)" if value is func else ""
                return SerializationError(
                    f"cannot serialise {what} ({type(value).__name__}) with cloudpickle{hint}: {exception_text(exc)}",
                    operation="dumps",
                    data_type=type(value).__name__,
                    cause=exc,
                )
        return error

    def dumps(self, obj: Any) -> bytes:
        import cloudpickle  # loaded by __init__ already: a lookup in sys.modules

        if _plain_data(obj):  # the C pickler writes the same bytes, much faster
            return pickle.dumps(obj, protocol=self.protocol)
        try:
            return bytes(cloudpickle.dumps(obj, protocol=self.protocol))
        except Exception as exc:
            raise SerializationError(
                f"cannot serialise {type(obj).__name__} with cloudpickle: {exception_text(exc)}",
                operation="dumps",
                data_type=type(obj).__name__,
                cause=exc,
            ) from exc

    def loads(self, data: bytes) -> Any:
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise SerializationError(
                f"expected bytes to deserialise, got {type(data).__name__}",
                operation="loads",
                data_type=type(data).__name__,
            )
        try:
            return pickle.loads(data)
        except PAYLOAD_ERRORS as exc:  # what a payload's own code may raise as it loads
            raise SerializationError(
                f"cannot deserialise cloudpickle payload: {describe_exception(exc)}",
                operation="loads",
                data_type="bytes",
                cause=exc,
            ) from exc


def _msgpack_failure(exc: BaseException) -> str:
    """What a msgpack error without text means (``FormatError`` and ``StackError`` carry none)."""
    kind = type(exc).__name__
    if kind == "StackError":
        return "nested too deeply"
    if kind == "FormatError":
        return "not valid msgpack data"
    return "not readable msgpack data"


class MsgpackSerializer(Serializer):
    """No code in the payload: functions travel as ``module:qualname``.

    Arguments and return values must be msgpack types (None, bool, int, float,
    str, bytes, lists/tuples, dicts). Lambdas, closures, methods and
    non-importable functions are refused at enqueue time. When
    ``allowed_tasks`` is given, the worker calls only those import paths (or
    functions) and refuses the rest.
    """

    name = "msgpack"
    content_type = "application/msgpack"

    def __init__(self, allowed_tasks: Iterable[str | Callable[..., Any]] | None = None) -> None:
        try:
            import msgpack
        except ImportError as exc:  # pragma: no cover - exercised without msgpack installed
            raise SerializationError(
                "serializer 'msgpack' needs the msgpack package: pip install msgpack (or, where sitq's own "
                "release is on your package index, its extra: pip install 'sitq[msgpack]')",
                operation="init",
                data_type="msgpack",
                cause=exc,
            ) from exc
        self._msgpack = msgpack
        self.allowed_tasks: frozenset[str] | None = None
        if allowed_tasks is not None:
            self.allowed_tasks = frozenset(_allowed_paths(allowed_tasks))

    def dumps(self, obj: Any) -> bytes:
        try:
            return self._packed_and_loadable(obj)
        except (TypeError, ValueError, OverflowError) as exc:
            raise SerializationError(
                f"msgpack cannot serialise {_describe_unpackable(obj, exc)}: {exception_text(exc)}; "
                "use msgpack types (None, bool, int within 64 bits: -2**63 to 2**64-1, float, str, bytes, list, dict) "
                "or the cloudpickle serializer",
                operation="dumps",
                data_type=type(obj).__name__,
                cause=exc,
            ) from exc

    def loads(self, data: bytes) -> Any:
        try:
            return self._msgpack.unpackb(data, raw=False, strict_map_key=False)
        except Exception as exc:
            raise SerializationError(
                f"cannot deserialise msgpack payload: {describe_exception(exc, _msgpack_failure(exc))}",
                operation="loads",
                data_type="bytes",
                cause=exc,
            ) from exc

    def dumps_call(self, func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> bytes:
        path = self._importable_path(func)
        if self.allowed_tasks is not None and path not in self.allowed_tasks:
            # refused now, with nothing stored, rather than failing at a worker with the same list
            raise SerializationError(
                f"function {path!r} is not in this serializer's allowed_tasks ({self._allowed_shown()})",
                operation="dumps_call",
                data_type=path,
            )
        for index, arg in enumerate(args):
            self._check_argument(f"argument {index} of {path}", arg)
        for key, arg in kwargs.items():
            self._check_argument(f"keyword argument {key!r} of {path}", arg)
        return self.dumps([path, list(args), kwargs])

    def loads_call(self, data: bytes) -> CallSpec:
        loaded = self.loads(data)
        if not (isinstance(loaded, list) and len(loaded) == 3 and isinstance(loaded[0], str)):
            raise SerializationError(
                "msgpack payload is not a [path, args, kwargs] call",
                operation="loads_call",
                data_type=type(loaded).__name__,
            )
        path, args, kwargs = loaded
        if self.allowed_tasks is not None and path not in self.allowed_tasks:
            raise SerializationError(
                f"function {path!r} is not in this serializer's allowed_tasks ({self._allowed_shown()})",
                operation="loads_call",
                data_type=path,
            )
        func = _import_path(path)
        return func, tuple(args), dict(kwargs)

    def _allowed_shown(self) -> str:
        allowed = sorted(self.allowed_tasks or ())
        return (", ".join(allowed[:10]) + (", ..." if len(allowed) > 10 else "")) or "empty"

    def _packed_and_loadable(self, obj: Any) -> bytes:
        """``obj`` packed, after checking that it loads back (a dict keyed by tuples packs, then cannot load)."""
        packed = bytes(self._msgpack.packb(obj, use_bin_type=True))
        try:
            self._msgpack.unpackb(packed, raw=False, strict_map_key=False)
        except TypeError as exc:  # "unhashable type: 'list'": a tuple key comes back as a list
            raise TypeError(f"it would not load back ({exc}; dict keys must not be tuples or lists)") from exc
        return packed

    def _check_argument(self, what: str, value: Any) -> None:
        try:
            self._packed_and_loadable(value)
        except (TypeError, ValueError, OverflowError) as exc:
            raise SerializationError(
                f"msgpack cannot serialise {what} ({type(value).__name__}): {exception_text(exc)}; "
                "pass msgpack types (None, bool, int within 64 bits: -2**63 to 2**64-1, float, str, bytes, list, "
                "dict) or use the cloudpickle serializer",
                operation="dumps_call",
                data_type=type(value).__name__,
                cause=exc,
            ) from exc

    @staticmethod
    def importable_path(func: Callable[..., Any]) -> str:
        """``module:qualname`` of ``func``, refusing what the worker could not import back by that path."""
        return MsgpackSerializer._importable_path(func)

    @staticmethod
    def _importable_path(func: Callable[..., Any]) -> str:
        path = function_path(func)
        qualname = _attribute(func, "__qualname__") or ""
        # a task is judged by what it wraps: a method's task (obj.method) is a method, bound to its instance
        target: Any = getattr(func, "__wrapped__", func) if is_task_function(func) else func
        kind = not_a_function(func)
        if kind is not None:
            raise SerializationError(
                f"msgpack sends functions by import path; {path} is {kind}, "
                "not a module-level function (use the cloudpickle serializer)",
                operation="dumps_call",
                data_type=type(func).__name__,
            )
        if "<lambda>" in qualname or "<locals>" in qualname:
            kind = "a lambda" if "<lambda>" in qualname else "a local function or closure"
            raise SerializationError(
                f"msgpack cannot send {kind} ({path}); define it at module level or use the cloudpickle serializer",
                operation="dumps_call",
                data_type="function",
            )
        refusal = dunder_refusal(qualname)
        if refusal is not None:  # the worker never looks one up: it would refuse the task
            raise SerializationError(
                f"msgpack cannot send {path}: {refusal}; call it from a module-level function or use the "
                "cloudpickle serializer",
                operation="dumps_call",
                data_type="function",
            )
        try:
            resolved = _import_path(path)
        except SerializationError as exc:
            raise SerializationError(
                f"msgpack sends functions by import path, but {path} cannot be imported back: {exc.message}",
                operation="dumps_call",
                data_type="function",
                cause=exc,
            ) from exc
        if resolved is not target:
            raise SerializationError(
                f"{path} does not resolve to the function given (it was replaced or decorated); "
                "msgpack needs an importable module-level function",
                operation="dumps_call",
                data_type="function",
            )
        return path


_PLAIN_TYPES = frozenset({int, float, str, bytes, bool, type(None)})
_by_reference_cache: CallableMemo[bool] = CallableMemo()


def _plain_data(value: Any, depth: int = 0) -> bool:
    """True for None/bool/int/float/str/bytes and small lists, tuples and dicts of them."""
    kind = type(value)
    if kind in _PLAIN_TYPES:
        return True
    if depth >= 4:
        return False
    if not value and (kind is tuple or kind is list or kind is dict):
        return True  # the common no-argument case, without building a generator
    if kind is tuple or kind is list:
        return len(value) <= 64 and all(_plain_data(item, depth + 1) for item in value)
    if kind is dict:
        return len(value) <= 64 and all(
            type(key) in _PLAIN_TYPES and _plain_data(item, depth + 1) for key, item in value.items()
        )
    return False


def _importable_by_reference(func: Any) -> bool:
    """True when ``func`` is a module-level function another process can import by name.

    False for a function whose module cloudpickle was told to pickle by value
    (``register_pickle_by_value``, checked at each call: it may change): cloudpickle ships its code.
    """
    cached = _by_reference_cache.get(func)
    if cached is not None:
        return cached and not pickled_by_value(getattr(func, "__module__", None))
    found = False
    module_name: str | None = None
    if is_task_function(func):
        found = is_importable_task(func)
        module_name = getattr(func, "__module__", None)
    elif inspect.isfunction(func):  # only a function's names are looked at: a proxy object's lookups may raise
        module_name, qualname = func.__module__, func.__qualname__
        if module_name not in (None, "__main__") and "<" not in qualname:
            target: Any = sys.modules.get(module_name or "")
            for part in qualname.split("."):
                target = getattr(target, part, None)
            found = target is func
    _by_reference_cache.remember(func, found)
    return found and not pickled_by_value(module_name)


def _names_the_module(exc: ImportError, module_name: str) -> bool:
    """True when the missing module is ``module_name`` or a package above it (not a dependency it imports)."""
    missing = exc.name or ""
    return bool(missing) and (module_name == missing or module_name.startswith(missing + "."))


_MAIN_HINT = (
    " (a function defined in the script that enqueued it is not importable by another process: "
    "move it into a module both can import)"
)
#: The modules that run as ``__main__`` for ``python -m sitq`` and ``python -m sitq_core``
_SITQ_MAIN_MODULES = frozenset({"sitq.__main__", "sitq_core.__main__"})


def _main_is_sitq_command() -> bool:
    """True when this process's ``__main__`` is the sitq command itself (console script or ``python -m``).

    A worker started so has no producer script as ``__main__``: a task path
    in ``__main__`` names one of the command's own objects, never the task.
    """
    main = sys.modules.get("__main__")
    if main is None:
        return False
    spec = getattr(main, "__spec__", None)
    if getattr(spec, "name", None) in _SITQ_MAIN_MODULES:
        return True
    cli = sys.modules.get("sitq_core.cli")  # the console script: `from sitq_core.cli import main`, then main()
    entry = getattr(main, "main", None)
    return cli is not None and entry is not None and entry is getattr(cli, "main", None)


def _import_path(path: str) -> Callable[..., Any]:
    """Import ``module:qualname`` and return the module-level function it names."""
    module_name, _, qualname = path.partition(":")
    if not module_name or not qualname or "<" in qualname:
        raise SerializationError(
            f"{path!r} is not an importable 'module:function' path", operation="loads_call", data_type=path
        )
    if module_name == "__main__" and _main_is_sitq_command():
        # the sitq command's own __main__ (console script, python -m sitq): its names (main, sys) are the
        # command's, never the producer's; calling its main() started a worker inside a task
        raise SerializationError(
            f"cannot import task function {path!r}: this worker's __main__ is the sitq command, not the script "
            f"that enqueued the task{_MAIN_HINT}",
            operation="loads_call",
            data_type=path,
        )
    refusal = dunder_refusal(qualname)
    if refusal is not None:  # refused before anything is imported or looked up
        raise SerializationError(
            f"{path!r} is not a module-level function: {refusal}",
            operation="loads_call",
            data_type=path,
        )
    try:
        target: Any = walk(importlib.import_module(module_name), qualname)
    except PathRefused as exc:  # sys:modules.clear: a dict's method, no function a producer sends
        raise SerializationError(
            f"{path!r} is not a module-level function: {exc.reason}", operation="loads_call", data_type=path
        ) from exc
    except (ImportError, AttributeError) as exc:
        hint = (
            _MAIN_HINT
            if module_name == "__main__"
            else f" (is {module_name!r} importable from the worker's working directory or PYTHONPATH?)"
            if isinstance(exc, ImportError) and _names_the_module(exc, module_name)
            else ""
        )
        raise SerializationError(
            f"cannot import task function {path!r}: {describe_exception(exc)}{hint}",
            operation="loads_call",
            data_type=path,
            cause=exc,
        ) from exc
    kind = not_a_function(target)
    if kind is not None:  # os:sep, builtins:dict.fromkeys (a method of the dict class)
        raise SerializationError(
            f"{path!r} is not a module-level function: it names {kind}",
            operation="loads_call",
            data_type=type(target).__name__,
        )
    function: Callable[..., Any] = target.__wrapped__ if is_task_function(target) else target
    defined_in = getattr(function, "__module__", None)
    if module_name == "__main__" and defined_in != "__main__":
        # a name the running script imported (main from a CLI module, a helper): not a function it defines,
        # and no producer sends one under __main__ (a task is named by the function's own module)
        own_path = escaped_for_store(f"{defined_in}:{getattr(function, '__qualname__', '?')}")
        raise SerializationError(
            f"cannot import task function {path!r}: in this worker's __main__ that name refers to {own_path!r}, "
            f"not a function defined there{_MAIN_HINT}",
            operation="loads_call",
            data_type=path,
        )
    # a lambda bound to a module name or a closure a factory returned is not a module-level function, and
    # no producer sends one; a function re-exported under another module's name is (a moved function's
    # old path keeps working for the tasks stored under it)
    own_qualname = getattr(function, "__qualname__", None)
    if isinstance(own_qualname, str) and "<" in own_qualname:
        own_path = f"{getattr(function, '__module__', None)}:{own_qualname}"
        raise SerializationError(
            f"{path!r} is not a module-level function: it names {escaped_for_store(own_path)!r} (a lambda or a "
            "local function), which msgpack does not call",
            operation="loads_call",
            data_type="function",
        )
    return function


def _allowed_paths(allowed_tasks: Any) -> Iterator[str]:
    """The ``module:qualname`` paths of an ``allowed_tasks`` argument, refusing what could never match."""
    if isinstance(allowed_tasks, str | bytes) or not isinstance(allowed_tasks, Iterable):
        raise ValidationError(
            "allowed_tasks must be an iterable of 'module:function' paths or functions "
            f"(a list or set), got {type(allowed_tasks).__name__} {safe_repr(allowed_tasks)}",
            parameter="allowed_tasks",
            value=allowed_tasks,
        )
    for item in allowed_tasks:
        if isinstance(item, str):
            problem = _path_problem(item)
            if problem is not None:
                raise ValidationError(
                    f"allowed_tasks entries are import paths 'module:function', got {safe_repr(item)}: {problem}",
                    parameter="allowed_tasks",
                    value=item,
                )
            yield item
        elif callable(item):
            try:
                yield MsgpackSerializer.importable_path(item)
            except SerializationError as exc:
                raise ValidationError(
                    f"allowed_tasks: {exc.message}", parameter="allowed_tasks", value=item, cause=exc
                ) from exc
        else:
            raise ValidationError(
                "allowed_tasks entries are 'module:function' paths or functions, "
                f"got {type(item).__name__} {safe_repr(item)}",
                parameter="allowed_tasks",
                value=item,
            )


def _dotted_identifiers(text: str) -> bool:
    """True for ``name`` or ``name.name...`` (what a module path or a function's qualname can be)."""
    return all(part.isidentifier() for part in text.split("."))


def _path_problem(path: str) -> str | None:
    """What keeps ``path`` from ever naming a function as ``module:qualname`` (None when nothing does)."""
    if path != path.strip():
        return "it has surrounding whitespace"
    module, colon, qualname = path.partition(":")
    if not colon:
        head, dot, tail = path.rpartition(".")
        if dot and head and _dotted_identifiers(head) and tail.isidentifier():
            return f"did you mean {head}:{tail}?"
        return "it has no ':' between the module and the function"
    if ":" in qualname:
        return "it has more than one ':'"
    for part_name, part in (("module", module), ("function", qualname)):
        if not part:
            return f"the {part_name} part is empty"
        if not _dotted_identifiers(part):
            bad = next(piece for piece in part.split(".") if not piece.isidentifier())
            if not bad:
                return f"the {part_name} part {part!r} has an empty name between dots"
            return f"{bad!r} in the {part_name} part is not a Python identifier"
    normal = unicodedata.normalize("NFKC", path)
    if normal != path:  # Python reads identifiers NFKC-normalised: no function has this name as written
        return f"Python reads its names as {normal!r} (NFKC), so this spelling never matches a function's path"
    return None


def _describe_unpackable(obj: Any, exc: BaseException | None = None) -> str:
    if isinstance(exc, OverflowError) or (type(obj) is int and isinstance(exc, ValueError | OverflowError)):
        return (
            "an int outside the 64-bit range msgpack carries"
            if type(obj) is int
            else (f"{with_article(type(obj).__name__)} holding an int outside the 64-bit range msgpack carries")
        )
    if exc is not None and "recursion" in str(exc).lower():
        return f"{with_article(type(obj).__name__)} nested too deeply (or holding itself)"
    if isinstance(obj, (list, tuple)):
        return f"{with_article(type(obj).__name__)} holding a value msgpack does not support"
    return with_article(type(obj).__name__)
