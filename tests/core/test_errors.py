"""The exception hierarchy of the public API contract."""

from __future__ import annotations

import builtins
import copy as copy_module
import pickle
from typing import Any

import pytest

import sitq
from sitq import (
    BackendError,
    ConfigurationError,
    ConnectionError,
    ResourceExhaustionError,
    SerializationError,
    SitqError,
    SyncTaskQueueError,
    TaskExecutionError,
    TaskQueueError,
    TimeoutError,
    ValidationError,
    WorkerError,
)
from sitq_core.errors import safe_repr


@pytest.mark.parametrize(
    ("cls", "parent"),
    [
        (TaskQueueError, SitqError),
        (TimeoutError, TaskQueueError),
        (SyncTaskQueueError, TaskQueueError),
        (BackendError, SitqError),
        (ConnectionError, BackendError),
        (WorkerError, SitqError),
        (TaskExecutionError, WorkerError),
        (ValidationError, SitqError),
        (SerializationError, SitqError),
        (ResourceExhaustionError, SitqError),
        (ConfigurationError, SitqError),
    ],
)
def test_hierarchy(cls: type[Exception], parent: type[Exception]) -> None:
    assert issubclass(cls, parent)


def test_builtin_bases() -> None:
    assert issubclass(TimeoutError, builtins.TimeoutError)
    assert issubclass(ConnectionError, builtins.ConnectionError)
    assert issubclass(ValidationError, ValueError)
    with pytest.raises(ValueError):
        raise ValidationError("bad", parameter="x", value=1)


def test_context_attributes_and_str() -> None:
    cause = OSError("disk full")
    error = TimeoutError("too slow", task_id="t1", timeout_seconds=2.5, operation="get_result", cause=cause)
    assert error.task_id == "t1"
    assert error.timeout_seconds == 2.5
    assert error.operation == "get_result"
    assert error.context == {"task_id": "t1", "timeout_seconds": 2.5, "operation": "get_result"}
    assert error.cause is cause and error.__cause__ is cause
    assert str(error) == "too slow (context: task_id='t1', timeout_seconds=2.5, operation='get_result')"
    assert str(SitqError("plain")) == "plain"


def test_a_bad_value_of_none_is_in_the_context_but_an_absent_one_is_not() -> None:
    given = ValidationError("backend is None", parameter="backend", value=None)
    assert given.context == {"parameter": "backend", "value": None} and given.value is None
    assert str(given) == "backend is None (context: parameter='backend', value=None)"
    absent = ValidationError("bad", parameter="p")
    assert absent.context == {"parameter": "p"} and absent.value is None
    assert ConfigurationError("c", parameter="x", value=None).context == {"parameter": "x", "value": None}
    assert pickle.loads(pickle.dumps(given)).context == given.context


def test_keyword_only_context() -> None:
    with pytest.raises(TypeError):
        ValidationError("bad", "parameter")  # type: ignore[misc]


def test_every_error_names_its_context() -> None:
    assert ConnectionError("x", backend_type="sqlite", connection_details="a.db").context == {
        "backend_type": "sqlite",
        "connection_details": "a.db",
    }
    assert TaskExecutionError("boom", task_id="t", function_name="m:f", execution_time=0.5).function_name == "m:f"
    assert ConfigurationError("c", parameter="p", value=1, valid_options=("a", "b")).valid_options == ["a", "b"]
    assert ResourceExhaustionError("r", resource_type="slots", current_usage=3, limit=3).limit == 3
    assert SyncTaskQueueError("s", task_id="t", operation="enqueue").operation == "enqueue"
    assert WorkerError("w", worker_id="w1").worker_id == "w1"


def test_errors_pickle_across_processes() -> None:
    error = ValidationError("bad eta", parameter="eta", value="x")
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is ValidationError
    assert copy.parameter == "eta" and str(copy) == str(error)


def test_a_copied_error_keeps_its_cause_as_dunder_cause() -> None:
    cause = OSError("disk")
    error = TimeoutError("slow", task_id="t", timeout_seconds=1.0, cause=cause)
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy.cause) is OSError and copy.__cause__ is copy.cause


def test_cause_follows_raise_from_as_the_contract_says_cause_is_dunder_cause() -> None:
    """``raise SitqError(...) from exc`` left ``cause`` None while ``__cause__`` was exc."""
    underlying = KeyError("k")
    with pytest.raises(ValidationError) as info:
        raise ValidationError("bad", parameter="p") from underlying
    assert info.value.cause is underlying is info.value.__cause__
    with pytest.raises(SitqError) as both:
        raise SitqError("x", cause=KeyError("given")) from OSError("chained")
    assert both.value.cause is both.value.__cause__ and isinstance(both.value.cause, OSError)
    plain = SitqError("no cause")
    assert plain.cause is None and plain.__cause__ is None


def test_every_keyword_given_is_an_attribute_and_a_context_entry_even_none() -> None:
    """A keyword given as None was an attribute only: ``e.context["task_id"]`` raised KeyError."""
    given = TaskQueueError("m", task_id=None)
    assert given.task_id is None and given.context == {"task_id": None}
    assert str(given) == "m (context: task_id=None)"
    left_out = TaskQueueError("m")
    assert left_out.task_id is None and left_out.context == {} and str(left_out) == "m"
    timeout = TimeoutError("slow", timeout_seconds=None, operation="get_result")
    assert timeout.context == {"timeout_seconds": None, "operation": "get_result"}
    assert ConfigurationError("c", parameter="p", value=None).context == {"parameter": "p", "value": None}


def test_public_names_importable() -> None:
    for name in (
        "TaskQueue",
        "Worker",
        "SyncTaskQueue",
        "Task",
        "Result",
        "ReservedTask",
        "Backend",
        "SQLiteBackend",
        "Serializer",
        "CloudpickleSerializer",
        # types that the reference's signatures return: importable for annotations
        "SyncTaskQueueView",
        "TaskQueueView",
        "TaskOptions",
        "CurrentTask",
        "Call",
    ):
        assert getattr(sitq, name) is not None
        assert name in sitq.__all__


def test_validation_error_carries_the_valid_options() -> None:
    from sitq import SQLiteBackend

    with pytest.raises(ValidationError) as info:
        SQLiteBackend("x.db", journal_mode="wall")
    assert info.value.parameter == "journal_mode"
    assert info.value.valid_options == ["WAL", "DELETE", "TRUNCATE", "PERSIST", "MEMORY"]
    assert info.value.context["valid_options"] == info.value.valid_options
    assert ValidationError("m", parameter="p").valid_options is None


@pytest.mark.parametrize("message", [KeyError("x"), None, ValueError("inner"), 5])
def test_a_message_that_is_not_a_str_reads_as_its_str_like_a_builtin_exception(message: object) -> None:
    """``__str__`` returned the message unconverted, so ``str(error)`` raised ``TypeError``."""
    error = SitqError(message)  # type: ignore[arg-type]
    assert str(error) == str(Exception(message)) == str(message)
    assert error.message is message  # kept as given, as ``args[0]`` is
    assert str(TaskQueueError(message, task_id="t")) == f"{message} (context: task_id='t')"  # type: ignore[arg-type]
    assert str(pickle.loads(pickle.dumps(error))) == str(message)


def test_a_single_str_of_valid_options_is_one_option_not_its_letters() -> None:
    """``valid_options='fast'`` became ``['f', 'a', 's', 't']``."""
    error = ConfigurationError("bad", parameter="mode", valid_options="fast")
    assert error.valid_options == ["fast"] and error.context["valid_options"] == ["fast"]
    assert ValidationError("bad", parameter="mode", valid_options="fast").valid_options == ["fast"]
    assert ConfigurationError("bad", valid_options=iter(("a", "b"))).valid_options == ["a", "b"]  # type: ignore[arg-type]


ERRORS_WITH_CONTEXT = [
    (SitqError("m"), "SitqError('m')"),
    (ValidationError("m", parameter="p"), "ValidationError('m', parameter='p')"),
    (ValidationError("m", parameter="p", value=None), "ValidationError('m', parameter='p', value=None)"),
    (TaskQueueError("m", task_id="t"), "TaskQueueError('m', task_id='t')"),
    (
        TimeoutError("slow", task_id="t", timeout_seconds=2.5, operation="get_result"),
        "TimeoutError('slow', task_id='t', timeout_seconds=2.5, operation='get_result')",
    ),
    (SyncTaskQueueError("s", operation="enqueue"), "SyncTaskQueueError('s', operation='enqueue')"),
    (
        BackendError("b", operation="reserve", backend_type="sqlite"),
        "BackendError('b', operation='reserve', backend_type='sqlite')",
    ),
    (
        ConnectionError("c", backend_type="sqlite", connection_details="a.db"),
        "ConnectionError('c', backend_type='sqlite', connection_details='a.db')",
    ),
    (WorkerError("w", worker_id="w1"), "WorkerError('w', worker_id='w1')"),
    (
        TaskExecutionError("boom", task_id="t", function_name="m:f", execution_time=0.5),
        "TaskExecutionError('boom', task_id='t', function_name='m:f', execution_time=0.5)",
    ),
    (
        SerializationError("s", operation="dumps", data_type="set"),
        "SerializationError('s', operation='dumps', data_type='set')",
    ),
    (
        ResourceExhaustionError("r", resource_type="slots", current_usage=3, limit=3),
        "ResourceExhaustionError('r', resource_type='slots', current_usage=3, limit=3)",
    ),
    (
        ConfigurationError("c", parameter="mode", value="x", valid_options=["a", "b"]),
        "ConfigurationError('c', parameter='mode', value='x', valid_options=['a', 'b'])",
    ),
    (sitq.UnknownBackendError("u", parameter="backend"), "UnknownBackendError('u', parameter='backend')"),
    (sitq.LeaseLostError("l", operation="complete"), "LeaseLostError('l', operation='complete')"),
    # entries given as ``context=`` (not keywords of the class) are shown as that mapping
    (SitqError("m", context={"name": "x"}), "SitqError('m', context={'name': 'x'})"),
    (
        TaskQueueError("m", task_id="t", context={"extra": 1}),
        "TaskQueueError('m', task_id='t', context={'extra': 1})",
    ),
]


@pytest.mark.parametrize(("error", "expected"), ERRORS_WITH_CONTEXT, ids=[text for _, text in ERRORS_WITH_CONTEXT])
def test_repr_shows_the_keyword_context(error: SitqError, expected: str) -> None:
    """``repr`` was ``ValidationError('m')``: logs and debuggers using it hid parameter, task_id and the rest."""
    assert repr(error) == expected
    for copy in (pickle.loads(pickle.dumps(error)), copy_module.copy(error), copy_module.deepcopy(error)):
        assert type(copy) is type(error)
        assert repr(copy) == expected and str(copy) == str(error) and copy.context == error.context


class _BadRepr:
    """A value whose ``repr`` raises, as a caller's object may."""

    def __repr__(self) -> str:
        raise RuntimeError("no repr")


def test_a_value_whose_repr_raises_still_prints_in_str_and_repr() -> None:
    """``str(ValidationError('x', value=BadRepr()))`` raised the value's RuntimeError instead of printing."""
    error = ValidationError("x", parameter="p", value=_BadRepr(), context={"other": _BadRepr()})
    shown = "<_BadRepr object (repr failed: RuntimeError: no repr)>"
    assert str(error) == f"x (context: other={shown}, parameter='p', value={shown})"
    assert repr(error) == f"ValidationError('x', parameter='p', value={shown}, context={{'other': {shown}}})"


def test_describe_exception_never_leaves_a_dangling_colon() -> None:
    """Messages built as ``f"{type(exc).__name__}: {exc}"`` ended in ': ' for an exception without text."""
    from sitq_core.errors import describe_exception

    class Unprintable(Exception):
        def __str__(self) -> str:
            raise RuntimeError("no str")

    assert describe_exception(ValueError("bad")) == "ValueError: bad"
    assert describe_exception(ValueError()) == "ValueError"
    assert describe_exception(ValueError(""), "not valid data") == "not valid data (ValueError)"
    assert describe_exception(Unprintable()) == "Unprintable"


def test_a_context_entry_naming_a_keyword_is_that_attribute_and_given_twice_is_a_type_error() -> None:
    """``ValidationError('x', context={'parameter': 'q'})`` read ``parameter`` None while str showed q, and a
    ``parameter='p'`` given beside it dropped q without a word."""
    error = ValidationError("x", context={"parameter": "q"})
    assert error.parameter == "q" and error.context == {"parameter": "q"}
    assert str(error) == "x (context: parameter='q')"
    timeout = TimeoutError("slow", context={"task_id": "t", "timeout_seconds": 3})
    assert (timeout.task_id, timeout.timeout_seconds, timeout.operation) == ("t", 3, None)
    with pytest.raises(TypeError, match="'parameter' both as a keyword and in context="):
        ValidationError("x", parameter="p", context={"parameter": "q"})
    with pytest.raises(TypeError, match="'task_id'"):
        TimeoutError("slow", task_id="a", context={"task_id": "b"})


def test_a_long_value_is_shortened_in_the_message_and_kept_whole_on_the_error() -> None:
    """A 10 MB argument named in an error made a 20 MB message (text and context), and as long a log line."""
    huge = "x" * 10_000_000
    error = ValidationError(f"queue_name must be short, got {safe_repr(huge)}", parameter="queue_name", value=huge)
    text = str(error)
    assert len(text) < 800 and text.count("...[10000002 characters]...") == 2, text[:300]
    assert repr(error).count("...[10000002 characters]...") == 1
    assert error.value is huge and error.context["value"] is huge
    assert safe_repr("x" * 150) == repr("x" * 150)  # short ones are whole


@pytest.mark.parametrize(
    "build",
    [
        lambda: sitq.TaskQueue("sqlite:///:memory:").with_options(queue_name="a" * 1_000_000 + "\x00"),
        lambda: sitq.Worker("sqlite:///:memory:", worker_id="w" * 1_000_000 + "\x00"),
        lambda: sitq.PostgresBackend("postgresql://x@h/d", schema="S" * 1_000_000),
        lambda: sitq.SQLiteBackend(":memory:", busy_timeout="5" * 1_000_000),
    ],
    ids=["queue_name", "worker_id", "schema", "busy_timeout"],
)
def test_a_huge_bad_value_is_shortened_in_the_message_itself(build: Any) -> None:
    """The context was shortened but the message repeated 'got {value!r}' whole: a million characters."""
    with pytest.raises(ValidationError) as info:
        build()
    assert len(info.value.message) < 400 and len(str(info.value)) < 800, len(str(info.value))
