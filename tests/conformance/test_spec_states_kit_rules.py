"""The normative text states every input rule the kit enforces, so an author reading it alone passes the kit.

The ``Backend`` docstrings are normative and plugins.md's table is their map:
each rule ``BadInputContract`` (and the contracts beside it) checks must be
written in the docstring of the method it checks, naming the parameter a
``ValidationError`` carries and the contract that checks it.
"""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest

from sitq_core import backend as spec
from sitq_core.backend import Backend

ROOT = Path(__file__).resolve().parents[2]
GUIDE = (ROOT / "plugins.md").read_text(encoding="utf-8")

#: method -> (parameters its bad input must name, contracts its docstring must name), as the kit checks them
RULES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "enqueue_many": (("tasks",), ("EnqueueContract", "BadInputContract")),
    "reserve": (("limit", "lease_seconds", "queues"), ("ReserveContract", "BadInputContract")),
    "heartbeat": (("lease_seconds", "leases"), ("LeaseContract", "CancelContract", "BadInputContract")),
    "finish_many": (
        ("outcomes",),
        ("ResultContract", "LeaseContract", "RetryContract", "CancelContract", "BadInputContract"),
    ),
    "cancel": ((), ("CancelContract", "BadInputContract")),
    "requeue": (("eta",), ("CancelContract", "BadInputContract")),
    "requeue_many": (("task_ids", "eta"), ("CancelContract", "BadInputContract")),
    "get_task": ((), ("EnqueueContract", "BadInputContract")),
    "get_result": ((), ("ResultContract", "BadInputContract")),
    "wait_for_result": ((), ("ResultContract", "BadInputContract")),
    "list_tasks": (("status", "limit", "offset"), ("StatsContract", "BadInputContract")),
    "purge": (("older_than",), ("StatsContract", "BadInputContract")),
}


def _docstring(method: str) -> str:
    return " ".join((inspect.getdoc(getattr(Backend, method)) or "").split())


@pytest.mark.parametrize("method", sorted(RULES))
def test_each_docstring_names_the_parameters_and_contracts_the_kit_checks(method: str) -> None:
    text = _docstring(method)
    parameters, contracts = RULES[method]
    unnamed = [p for p in parameters if f'parameter="{p}"' not in text]
    assert not unnamed, f"Backend.{method}'s docstring must say which ValidationError(parameter=...): {unnamed}"
    missing = [c for c in contracts if c not in text]
    assert not missing, f"Backend.{method}'s docstring must name the contracts that check it: {missing}"


def test_the_rules_without_a_parameter_of_their_own_are_stated() -> None:
    """A bare string for ``queues``, an empty list of queues or of leases/outcomes, a check made up front."""
    reserve, heartbeat, finish = _docstring("reserve"), _docstring("heartbeat"), _docstring("finish_many")
    assert "bare string" in reserve and "``queues=[]``" in reserve, reserve
    assert "before any lease changes" in heartbeat and "``heartbeat([])``" in heartbeat, heartbeat
    assert "before any outcome of the call is applied" in finish and "``finish_many([])``" in finish, finish
    assert "any zone" in finish, "finish_many must say a retry_at in any zone comes back as aware UTC"


def test_the_module_docstring_takes_aware_datetimes_in_any_zone() -> None:
    text = " ".join((spec.__doc__ or "").split())
    assert "going in and out are timezone-aware UTC" not in text, "inputs may come in any zone"
    assert "in any zone" in text and "same instant" in text, text


@pytest.mark.parametrize(
    ("row", "rule"),
    [
        ("| `reserve(", 'ValidationError(parameter="queues")'),
        ("| `reserve(", "`BadInputContract`"),
        ("| `requeue(", 'ValidationError(parameter="eta")'),
        ("| `requeue(", "`BadInputContract`"),
        ("| `requeue_many(", 'ValidationError(parameter="task_ids")'),
        ("| `requeue_many(", "`BadInputContract`"),
        ("| `heartbeat(", "`lease_seconds`"),
    ],
)
def test_the_plugins_md_table_row_states_the_rule(row: str, rule: str) -> None:
    found = re.search(rf"^{re.escape(row)}.*$", GUIDE, re.MULTILINE)
    assert found is not None, f"plugins.md has no table row starting {row!r}"
    assert rule in found.group(), f"plugins.md's row {row!r} must state {rule}"


def test_the_plugins_md_rules_take_aware_datetimes_in_any_zone() -> None:
    assert "all datetimes in and out\nare timezone-aware UTC" not in GUIDE, "inputs may come in any zone"
