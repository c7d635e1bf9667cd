"""Per-task options (``TaskQueue.with_options``) and their validation."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields, replace
from datetime import UTC, datetime, timedelta
from typing import Any, TypedDict

from . import checks
from .checks import INT64_MAX, INT64_MIN, Seconds
from .errors import ValidationError, safe_repr
from .models import DEFAULT_QUEUE

__all__ = ["TaskOptionArgs", "TaskOptions", "normalize_eta", "validate_timeout"]

_UNSET: Any = object()


class TaskOptionArgs(TypedDict, total=False):
    """The keyword arguments that set task options, for type checkers (``**options: Unpack[TaskOptionArgs]``).

    Taken by ``with_options`` (queues, views, sync queues) and ``@sitq.task`` /
    ``@queue.task``: a misspelt name or a wrong type is flagged before the code
    runs. Each is a field of :class:`TaskOptions`; None leaves the option as it is.
    """

    eta: datetime | None
    delay: Seconds | None
    priority: int | None
    max_retries: int | None
    retry_backoff: Seconds | None
    timeout: Seconds | None
    queue_name: str | None
    max_lease_expiries: int | None


def normalize_eta(eta: datetime | None, *, parameter: str = "eta") -> datetime | None:
    """An aware datetime in any zone -> UTC; naive, non-datetime or a broken tzinfo -> ValidationError."""
    if eta is None:
        return None
    if not isinstance(eta, datetime):
        raise ValidationError(
            f"{parameter} must be a timezone-aware datetime, got {type(eta).__name__}",
            parameter=parameter,
            value=eta,
        )
    if checks._utc_offset(eta, parameter) is None:  # a tzinfo that cannot give one: ValidationError too
        raise ValidationError(
            f"{parameter} must be timezone-aware (e.g. datetime.now(timezone.utc)); got naive {safe_repr(eta)}",
            parameter=parameter,
            value=eta,
        )
    try:
        return eta.astimezone(UTC)
    except OverflowError as exc:  # year 9999 at -05:00 or year 1 at +05:00 has no UTC datetime
        if eta.year < 5000:  # before the first datetime UTC can express: a past eta, which means now
            return datetime.min.replace(tzinfo=UTC)
        raise ValidationError(
            f"{parameter} {eta.isoformat()} is outside the datetimes UTC can express (years 1 to 9999)",
            parameter=parameter,
            value=eta,
            cause=exc,
        ) from exc


def validate_timeout(timeout: object, *, parameter: str = "timeout") -> float | None:
    """None or a number >= 0 as float seconds, else ValidationError.

    Any real number is taken (``checks.as_seconds``). ``math.inf``, and an
    int too large for a float, mean wait without end (``math.inf``): a wait
    that long is the same wait, not an overflow error.
    """
    if timeout is None:
        return None
    seconds = checks.as_seconds(timeout)
    if seconds is None or math.isnan(seconds):
        raise ValidationError(
            f"{parameter} must be a number of seconds, a timedelta or None, got {safe_repr(timeout)}",
            parameter=parameter,
            value=timeout,
        )
    if seconds < 0:
        raise ValidationError(f"{parameter} must be >= 0, got {safe_repr(timeout)}", parameter=parameter, value=timeout)
    return seconds


def _non_negative_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= INT64_MAX:
        raise ValidationError(
            f"{name} must be an integer from 0 to 2**63-1, got {safe_repr(value)}", parameter=name, value=value
        )
    return value


def _finite(name: str, value: Any, hint: str = "") -> None:
    """NaN, infinity and a number past a float's range get one message: a task option's seconds must be finite.

    Other types and negative numbers are left to the checks that follow (``validate_timeout``).
    """
    seconds = checks.as_seconds(value)
    if seconds is not None and not math.isfinite(seconds) and not seconds < 0:
        raise ValidationError(
            f"{name} must be a finite number of seconds, got {safe_repr(value)}{hint}", parameter=name, value=value
        )


#: the options that hold seconds: a real number that is not an int or float is stored as float
_SECONDS_OPTIONS = ("delay", "retry_backoff", "timeout")


@dataclass(frozen=True, slots=True)
class TaskOptions:
    """Options applied to each task a queue (or a ``with_options`` view) enqueues.

    ``eta`` (aware datetime) and ``delay`` (seconds) schedule the task; give at
    most one. ``priority``: higher runs first. ``max_retries``: an exception is
    retried while the task's attempts (lease expiries count too) are at most
    this, after ``retry_backoff * 2**(attempt-1)`` seconds.
    ``timeout``: seconds the function may run. ``queue_name``: the named queue.
    ``max_lease_expiries``: how many lost leases (killed workers) are tolerated.
    """

    eta: datetime | None = None
    delay: float | None = None
    priority: int = 0
    max_retries: int = 0
    retry_backoff: float = 1.0
    timeout: float | None = None
    queue_name: str = DEFAULT_QUEUE
    max_lease_expiries: int = 3
    #: the options set on purpose (``with_options``), which win over a decorated task's defaults even
    #: when they equal sitq's own defaults; None (built directly): those that differ from the defaults
    explicit: frozenset[str] | None = field(default=None, compare=False, repr=False)

    def explicit_names(self) -> frozenset[str]:
        """The options that override a decorated task's defaults."""
        if self.explicit is not None:
            return self.explicit
        return frozenset(f.name for f in fields(self) if f.name != "explicit" and getattr(self, f.name) != f.default)

    def merged(self, **changes: Any) -> TaskOptions:
        """A validated copy with ``changes`` applied (unknown names -> ValidationError)."""
        known = {f.name for f in fields(self)} - {"explicit"}
        for name in changes:
            if name not in known:
                raise ValidationError(
                    f"unknown task option {name!r}; expected one of: {', '.join(sorted(known))}",
                    parameter=name,
                    value=changes[name],
                )
        for name in _SECONDS_OPTIONS:
            if name not in changes:
                continue
            seconds = checks.as_seconds(changes[name])
            if name == "timeout" and seconds == math.inf:
                # no time limit: what None means on a task, and the one way for a view to lift a decorated
                # task's timeout (with_options(timeout=None) leaves an option as it is)
                changes[name] = None
            elif seconds is not None and not isinstance(changes[name], int | float):
                changes[name] = seconds  # a Fraction, Decimal, numpy scalar or timedelta; checked below
        if changes.get("eta") is not None:
            changes.setdefault("delay", None)
        elif changes.get("delay") is not None:
            changes.setdefault("eta", None)
        return replace(self, **changes, explicit=self.explicit_names() | frozenset(changes)).validated()

    def given(self, options: dict[str, Any]) -> TaskOptions:
        """A validated copy with the options of a ``with_options`` call: None leaves an option as it is.

        An unknown name raises ``ValidationError`` naming it, also given as None:
        the signatures tell type checkers the known names, and this tells callers
        that are not checked.
        """
        unknown = {name: value for name, value in options.items() if name not in _OPTION_NAMES}
        if unknown:
            self.merged(**unknown)  # raises ValidationError naming the option and the known ones
        changes = {name: value for name, value in options.items() if value is not None}
        if "eta" in changes:
            changes["eta"] = normalize_eta(changes["eta"])
        return self.merged(**changes)

    def validated(self) -> TaskOptions:
        normalize_eta(self.eta)
        if self.eta is not None and self.delay is not None:
            raise ValidationError("give eta or delay, not both", parameter="delay", value=self.delay)
        _finite("delay", self.delay)
        validate_timeout(self.delay, parameter="delay")
        if self.delay:  # past year 9999 from now: as far past it at any later enqueue (refused there anyway)
            self.due_at(datetime.now(UTC))
        if (
            isinstance(self.priority, bool)
            or not isinstance(self.priority, int)
            or not INT64_MIN <= self.priority <= INT64_MAX
        ):
            raise ValidationError(
                f"priority must be an integer from -2**63 to 2**63-1, got {safe_repr(self.priority)}",
                parameter="priority",
                value=self.priority,
            )
        _non_negative_int("max_retries", self.max_retries)
        expiries = self.max_lease_expiries
        if isinstance(expiries, bool) or not isinstance(expiries, int) or not 1 <= expiries <= INT64_MAX:
            raise ValidationError(
                f"max_lease_expiries must be an integer from 1 to 2**63-1, got {safe_repr(expiries)}",
                parameter="max_lease_expiries",
                value=expiries,
            )
        _finite("retry_backoff", self.retry_backoff)
        validate_timeout(self.retry_backoff, parameter="retry_backoff")
        if self.retry_backoff is None:
            raise ValidationError("retry_backoff must be a number >= 0", parameter="retry_backoff", value=None)
        timeout = self.timeout
        _finite("timeout", timeout, hint="; math.inf means no time limit")  # NaN: as the other two say it
        if timeout is not None and (
            isinstance(timeout, bool) or not isinstance(timeout, int | float) or not timeout > 0  # NaN fails too
        ):
            raise ValidationError(
                f"timeout must be a number of seconds > 0, or None, got {safe_repr(timeout)}",
                parameter="timeout",
                value=timeout,
            )
        checks.new_queue_name(self.queue_name, "queue_name")
        return self

    def due_at(self, now: datetime) -> datetime:
        """When a task with these options becomes due (a past eta means now)."""
        eta = normalize_eta(self.eta)
        if eta is not None:
            return max(eta, now)
        if self.delay:
            try:
                return now + timedelta(seconds=self.delay)
            except OverflowError:
                raise ValidationError(
                    f"delay of {safe_repr(self.delay)} seconds is past the last date a task can be stored with",
                    parameter="delay",
                    value=self.delay,
                ) from None
        return now


_OPTION_NAMES = frozenset(f.name for f in fields(TaskOptions)) - {"explicit"}
