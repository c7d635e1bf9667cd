"""The contracts of the backend conformance suite, one class per area of the spec."""

from __future__ import annotations

from .bad_input import BadInputContract
from .cancel import CancelContract
from .concurrency import ConcurrencyContract
from .enqueue import EnqueueContract
from .exchange import ExchangeContract
from .leases import LeaseContract
from .lifecycle import LifecycleContract
from .notify import NotifyContract
from .reserve import ReserveContract
from .results import ResultContract
from .retries import RetryContract
from .stats import StatsContract

__all__ = [
    "CONTRACTS",
    "BackendSuite",
    "BadInputContract",
    "CancelContract",
    "ConcurrencyContract",
    "EnqueueContract",
    "ExchangeContract",
    "LeaseContract",
    "LifecycleContract",
    "NotifyContract",
    "ReserveContract",
    "ResultContract",
    "RetryContract",
    "StatsContract",
]


class BackendSuite(
    LifecycleContract,
    EnqueueContract,
    ReserveContract,
    LeaseContract,
    RetryContract,
    ResultContract,
    ExchangeContract,
    CancelContract,
    StatsContract,
    ConcurrencyContract,
    NotifyContract,
    BadInputContract,
):
    """Every contract: subclass it as ``class TestMyBackend(BackendSuite)`` and override ``backend_factory``."""


CONTRACTS = (
    LifecycleContract,
    EnqueueContract,
    ReserveContract,
    LeaseContract,
    RetryContract,
    ResultContract,
    ExchangeContract,
    CancelContract,
    StatsContract,
    ConcurrencyContract,
    NotifyContract,
    BadInputContract,
)
