"""sitq core: the queue, the worker, the Backend spec and the plugin host."""

from __future__ import annotations

from .backend import SPEC_VERSION, Backend, Capability
from .errors import (
    BackendError,
    BackendNotInstalledError,
    BrokenPluginError,
    ConfigurationError,
    ConnectionError,
    LeaseLostError,
    MissingPluginError,
    PluginConflictError,
    PluginError,
    ResourceExhaustionError,
    SerializationError,
    SitqError,
    SyncTaskQueueError,
    TaskCancelledError,
    TaskExecutionError,
    TaskQueueError,
    TimeoutError,
    UnknownBackendError,
    ValidationError,
    WorkerError,
)
from .hookspecs import hookimpl
from .models import LeaseState, Outcome, ReservedTask, Result, Task, TaskStatus
from .serializers import CloudpickleSerializer, MsgpackSerializer, Serializer
from .urls import BackendURL, parse_backend_url

__version__ = "0.1.0"

__all__ = [
    "SPEC_VERSION",
    "Backend",
    "BackendError",
    "BackendNotInstalledError",
    "BackendURL",
    "BrokenPluginError",
    "Capability",
    "CloudpickleSerializer",
    "ConfigurationError",
    "ConnectionError",
    "LeaseLostError",
    "LeaseState",
    "MissingPluginError",
    "MsgpackSerializer",
    "Outcome",
    "PluginConflictError",
    "PluginError",
    "ReservedTask",
    "ResourceExhaustionError",
    "Result",
    "SerializationError",
    "Serializer",
    "SitqError",
    "SyncTaskQueueError",
    "Task",
    "TaskCancelledError",
    "TaskExecutionError",
    "TaskQueueError",
    "TaskStatus",
    "TimeoutError",
    "UnknownBackendError",
    "ValidationError",
    "WorkerError",
    "__version__",
    "hookimpl",
    "parse_backend_url",
]
