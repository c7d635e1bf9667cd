"""sitq core: the queue, the worker, the Backend spec and the plugin host."""

from __future__ import annotations

from .backend import SPEC_VERSION, Backend, Capability
from .config import DEFAULT_BACKEND_URL, resolve_backend, resolve_serializer
from .current import CurrentTask, current_task
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
    StoreFullError,
    StoreGoneError,
    SyncTaskQueueError,
    TaskCancelledError,
    TaskExecutionError,
    TaskQueueError,
    TimeoutError,
    UnknownBackendError,
    UnknownSerializerError,
    ValidationError,
    WorkerError,
)
from .hookspecs import hookimpl
from .models import LeaseState, Outcome, ReservedTask, Result, Task, TaskStatus, TaskStatusName
from .options import TaskOptionArgs, TaskOptions
from .queue import Call, TaskQueue, TaskQueueView, connect
from .serializers import CloudpickleSerializer, MsgpackSerializer, Serializer
from .sync import SyncTaskQueue, SyncTaskQueueView
from .task import TaskFunction, task
from .urls import BackendURL, parse_backend_url
from .worker import Worker

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_BACKEND_URL",
    "SPEC_VERSION",
    "Backend",
    "BackendError",
    "BackendNotInstalledError",
    "BackendURL",
    "BrokenPluginError",
    "Call",
    "Capability",
    "CloudpickleSerializer",
    "ConfigurationError",
    "ConnectionError",
    "CurrentTask",
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
    "StoreFullError",
    "StoreGoneError",
    "SyncTaskQueue",
    "SyncTaskQueueError",
    "SyncTaskQueueView",
    "Task",
    "TaskCancelledError",
    "TaskExecutionError",
    "TaskFunction",
    "TaskOptionArgs",
    "TaskOptions",
    "TaskQueue",
    "TaskQueueError",
    "TaskQueueView",
    "TaskStatus",
    "TaskStatusName",
    "TimeoutError",
    "UnknownBackendError",
    "UnknownSerializerError",
    "ValidationError",
    "Worker",
    "WorkerError",
    "__version__",
    "connect",
    "current_task",
    "hookimpl",
    "parse_backend_url",
    "resolve_backend",
    "resolve_serializer",
    "task",
]
