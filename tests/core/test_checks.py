"""sitq_core.checks: every bad argument is refused naming its parameter."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from sitq_core import checks
from sitq_core.errors import ValidationError
from sitq_core.models import Outcome, Task


@pytest.mark.parametrize(
    ("call", "parameter"),
    [
        (lambda: checks.aware(datetime(2026, 1, 1), "eta"), "eta"),
        (lambda: checks.aware("2026-01-01", "older_than"), "older_than"),
        (lambda: checks.aware(None, "eta"), "eta"),  # a required time: None is refused
        (lambda: checks.aware_or_none(datetime(2026, 1, 1), "eta"), "eta"),
        (lambda: checks.aware_or_none("2026-01-01", "older_than"), "older_than"),
        (lambda: checks.lease_seconds(0), "lease_seconds"),
        (lambda: checks.lease_seconds(True), "lease_seconds"),
        (lambda: checks.lease_seconds(1e12), "lease_seconds"),
        (lambda: checks.lease_pairs("task:token"), "leases"),
        (lambda: checks.lease_pairs([("id", 3)]), "leases"),
        (lambda: checks.queue_names("emails"), "queues"),
        (lambda: checks.queue_names([1]), "queues"),
        (lambda: checks.task_id(""), "task_id"),
        (lambda: checks.worker_id(None), "worker_id"),
        (lambda: checks.reserve_limit(0), "limit"),
        (lambda: checks.reserve_limit(2.5), "limit"),
        (lambda: checks.status_filter("done"), "status"),
        (lambda: checks.page(-1, 0), "limit"),
        (lambda: checks.page(1, -1), "offset"),
        (lambda: checks.check_outcomes(Outcome("t", "x", "success")), "outcomes"),
        (lambda: checks.check_outcomes([Outcome("t", "x", "exploded")]), "outcomes"),  # type: ignore[arg-type]
        (lambda: checks.check_outcomes([Outcome("t", "x", "retry", retry_at=datetime(2026, 1, 1))]), "outcomes"),
        (lambda: checks.check_task("not a task"), "tasks"),
        (lambda: checks.check_task(Task(id="t", payload="text")), "tasks"),  # type: ignore[arg-type]
        (lambda: checks.check_task(Task(id="t", payload=b"", priority=2**63)), "tasks"),
        (lambda: checks.check_task(Task(id="t", payload=b"", eta=datetime(2026, 1, 1))), "tasks"),
        (lambda: checks.check_task(Task(id="t", payload=b"", queue="")), "tasks"),
    ],
)
def test_bad_arguments_name_their_parameter(call: Any, parameter: str) -> None:
    with pytest.raises(ValidationError) as info:
        call()
    assert info.value.parameter == parameter
    assert isinstance(info.value, ValueError)


def test_good_arguments_pass_through() -> None:
    now = datetime.now(UTC)
    assert checks.aware(now, "eta") is now
    assert checks.aware_or_none(now, "eta") is now
    assert checks.aware_or_none(None, "eta") is None  # an optional time (requeue's eta, purge's older_than)
    assert checks.lease_seconds(30) == 30.0
    assert checks.lease_pairs([["a", "b"]]) == [("a", "b")]
    assert checks.queue_names(None) is None
    assert checks.queue_names(("b", "a", "b")) == ["b", "a"]
    assert checks.status_filter(None) is None and checks.status_filter("queued") == "queued"
    assert checks.page(0, 5) == (0, 5)
    task = Task(id="t", payload=bytearray(b"x"), eta=now + timedelta(seconds=1))
    assert checks.check_task(task) is task
    outcome = Outcome("t", "x", "retry", retry_at=now)
    assert checks.check_outcomes((outcome,)) == [outcome]


def test_a_stored_name_cannot_forge_a_log_line() -> None:
    from sitq_core.checks import one_log_line

    assert one_log_line("app.tasks:send\n2026-01-01 INFO forged") == "app.tasks:send\\x0a2026-01-01 INFO forged"
    assert one_log_line("ünïcode:côde\t") == "ünïcode:côde\\x09"
