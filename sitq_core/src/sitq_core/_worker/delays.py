"""How long the worker waits before trying again: a failing store, a failed lease renewal, a task's retry.

Pure functions of counts and settings, so tests and other modules can compute the same waits.
"""

from __future__ import annotations

import math


def store_retry_delay(failures: int, poll_interval: float) -> float:
    """Seconds before calling a failing store again: 0.1 s doubling per failure, at most ``max(poll_interval, 0.05)``.

    The exponent is capped: ``2**failures`` as a float overflows at 1024 failures in a row (17 minutes of a
    store failing at once, at the default poll interval), and that OverflowError stopped the worker.
    """
    return float(min(0.05 * 2 ** min(failures, 32), max(poll_interval, 0.05)))


def heartbeat_retry_delay(lease_timeout: float, failures: int) -> float:
    """Seconds before a failed lease renewal is tried again: a 40th of the lease, doubling, at most a tenth.

    A renewal runs every third of the lease; retried only at the next one, as
    before, three failures in a row (a server at its connection limit, a
    brief outage) let the leases of a live worker's tasks expire, and other
    workers ran them again. Retried this way, a 30 s lease gets about ten
    tries before it runs out.
    """
    return float(min(lease_timeout / 10, lease_timeout / 40 * 2.0 ** min(max(failures - 1, 0), 8)))


_MAX_RETRY_DELAY = 86_400.0  # one day: the longest wait before a retry


def retry_delay(retry_backoff: float, attempt: int) -> float:
    """Seconds before retry number ``attempt`` (1-based): ``backoff * 2**(attempt-1)``, capped at one day.

    A backoff that is not a number (NaN, which a PostgreSQL ``double precision``
    column holds when written by hand) means no wait: ``timedelta(seconds=nan)``
    raised in the run's own task, and the task stayed held for good.
    """
    if not retry_backoff > 0:
        return 0.0
    doublings = max(attempt - 1, 0)
    if retry_backoff >= _MAX_RETRY_DELAY or doublings >= math.log2(_MAX_RETRY_DELAY) - math.log2(retry_backoff):
        return _MAX_RETRY_DELAY
    return math.ldexp(retry_backoff, doublings)  # exact, and below the cap: no overflow for any backoff
