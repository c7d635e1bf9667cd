"""The process-wide plugin manager, created lazily, and a test override."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from .plugin_manager import SitqPluginManager, forget_logged_failures

__all__ = ["get_plugin_manager", "reset_plugin_manager", "use_plugin_manager"]

_lock = threading.Lock()
_manager: SitqPluginManager | None = None


def get_plugin_manager() -> SitqPluginManager:
    """The shared manager; plugins load on first use, not at import."""
    global _manager
    manager = _manager
    if manager is None:
        with _lock:
            if _manager is None:
                _manager = SitqPluginManager()
            manager = _manager
    return manager


def reset_plugin_manager() -> None:
    """Forget the shared manager (the next use rediscovers entry points, and logs their failures again)."""
    global _manager
    with _lock:
        _manager = None
    forget_logged_failures()


@contextmanager
def use_plugin_manager(manager: SitqPluginManager) -> Iterator[SitqPluginManager]:
    """Make ``manager`` the shared one inside the block (for tests)."""
    global _manager
    with _lock:
        previous, _manager = _manager, manager
    try:
        yield manager
    finally:
        with _lock:
            _manager = previous
