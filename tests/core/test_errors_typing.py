"""The exceptions' keywords as users' type checkers and ``help()`` see them.

Every subclass took ``**kwargs: Any`` for the keywords of its parents, so mypy
accepted ``ValidationError("m", bogus=1)``, ``cause="text"`` and ``context=[1, 2]``,
each a TypeError (or worse) at run time, and ``help()`` showed ``**kwargs``
instead of ``cause`` and ``context``.
"""

from __future__ import annotations

import inspect
import textwrap
from pathlib import Path

import pytest

import sitq
from sitq_core import errors

from sitq_test_helpers import assert_mypy_flags_marked_lines

USER_CODE = textwrap.dedent(
    """
    import sitq

    sitq.ValidationError("m", parameter="p", value=1, valid_options=["a"], cause=ValueError("x"), context={"k": 1})
    sitq.TaskExecutionError("m", task_id="t", worker_id="w", function_name="f", execution_time=1.0, cause=None)
    sitq.ConnectionError("m", operation="connect", backend_type="sqlite", connection_details="x.db", context=None)
    sitq.TimeoutError("m", task_id="t", timeout_seconds=1.5, operation="get_result")
    sitq.SyncTaskQueueError("m", task_id="t", operation="get_result", cause=OSError())
    sitq.StoreGoneError("m", backend_type="sqlite", operation="reserve")
    sitq.ValidationError("m", bogus=1)  # error
    sitq.ValidationError("m", cause="notexc")  # error
    sitq.ValidationError("m", context=[1, 2])  # error
    sitq.TaskExecutionError("m", task_id=1)  # error
    sitq.SitqError("m", bogus=1)  # error
    sitq.TimeoutError("m", timeout_seconds="x")  # error
    sitq.SerializationError("m", operaton="dumps")  # error
    sitq.ConfigurationError("m", valid_options=3)  # error
    """
)


@pytest.mark.slow
def test_mypy_flags_a_wrong_or_misspelt_keyword(tmp_path: Path) -> None:
    assert_mypy_flags_marked_lines(USER_CODE, tmp_path, "user_errors")


ERRORS = [cls for cls in vars(errors).values() if isinstance(cls, type) and issubclass(cls, sitq.SitqError)]


@pytest.mark.parametrize("cls", ERRORS, ids=[cls.__name__ for cls in ERRORS])
def test_the_signature_names_every_keyword(cls: type[sitq.SitqError]) -> None:
    """help() and IDEs show ``cause`` and ``context`` (and the parents' keywords), never ``**kwargs``."""
    parameters = inspect.signature(cls).parameters
    assert all(p.kind is not inspect.Parameter.VAR_KEYWORD for p in parameters.values()), parameters
    assert {"cause", "context"} <= set(parameters)
    assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for name, p in parameters.items() if name != "message")


def test_a_misspelt_keyword_still_fails_at_run_time() -> None:
    with pytest.raises(TypeError, match="bogus"):
        sitq.ValidationError("m", bogus=1)  # type: ignore[call-arg]
