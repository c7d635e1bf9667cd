"""Wait for writes to a SQLite file without polling: Linux inotify through ctypes.

An idle watcher that ticks every few milliseconds costs a few percent of a
core on a VM whose wake-ups are expensive. With inotify the watcher thread
blocks until some process writes the database or its ``-wal`` file, so an
idle worker costs next to nothing. A write is not yet a visible commit (the
WAL frames are written before the fsync and the index update), so the watcher
polls ``PRAGMA data_version`` briefly after each event; see ``watcher.py``.

Where inotify is missing (macOS, Windows, some sandboxes), :func:`open_changes`
returns None and the watcher polls as before.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import logging
import os
import select
import struct
import sys
from typing import Any

__all__ = ["FileChanges", "open_changes"]

log = logging.getLogger("sitq.sqlite")

_IN_MODIFY = 0x00000002
_IN_MOVED_TO = 0x00000080
_IN_CREATE = 0x00000100
_EVENT_HEADER = struct.Struct("iIII")  # wd, mask, cookie, len (then len bytes of name)


class FileChanges:
    """An inotify watch on a database's folder, reporting writes to the database or its WAL."""

    def __init__(self, fd: int, names: frozenset[bytes]) -> None:
        self._fd = fd
        self._names = names
        self._wake_read, self._wake_write = os.pipe()

    def wait(self, timeout: float) -> bool:
        """Block up to ``timeout`` seconds; True when the database or its WAL was written meanwhile."""
        try:
            ready, _, _ = select.select([self._fd, self._wake_read], [], [], timeout)
        except (OSError, ValueError):  # closed under us: the watcher is stopping
            return False
        return self._fd in ready and self.drain()

    def drain(self) -> bool:
        """Read the pending events without blocking; True when one concerned our files."""
        relevant = False
        while True:
            try:
                data = os.read(self._fd, 65536)
            except (BlockingIOError, OSError):
                return relevant
            if not data:
                return relevant
            offset = 0
            while offset + _EVENT_HEADER.size <= len(data):
                _wd, _mask, _cookie, length = _EVENT_HEADER.unpack_from(data, offset)
                name = data[offset + _EVENT_HEADER.size : offset + _EVENT_HEADER.size + length].rstrip(b"\0")
                relevant = relevant or name in self._names
                offset += _EVENT_HEADER.size + length

    def interrupt(self) -> None:
        """Make a blocked :meth:`wait` return now, and every later one at once (the watcher is stopping)."""
        with contextlib.suppress(OSError):
            os.write(self._wake_write, b"x")

    def close(self) -> None:
        for fd in (self._fd, self._wake_read, self._wake_write):
            with contextlib.suppress(OSError):
                os.close(fd)


@functools.cache
def _inotify() -> tuple[Any, Any] | None:
    """libc's inotify_init1 and inotify_add_watch, looked up once (the running process already has libc)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.inotify_init1, libc.inotify_add_watch
    except (OSError, AttributeError):
        return None


def open_changes(path: str) -> FileChanges | None:
    """Watch the folder of the database at ``path``; None when inotify is unavailable."""
    if not sys.platform.startswith("linux"):
        return None
    functions = _inotify()
    if functions is None:
        return None
    init, add_watch = functions
    fd = int(init(os.O_NONBLOCK | os.O_CLOEXEC))
    if fd < 0:
        log.debug("inotify_init1 failed (errno %d); polling instead", ctypes.get_errno())
        return None
    # the real path: SQLite writes -wal and -journal beside the file a symlink points to, not beside the link
    folder, base = os.path.split(os.path.realpath(path))
    if add_watch(fd, os.fsencode(folder), _IN_MODIFY | _IN_CREATE | _IN_MOVED_TO) < 0:
        log.debug("inotify_add_watch(%s) failed (errno %d); polling instead", folder, ctypes.get_errno())
        os.close(fd)
        return None
    name = os.fsencode(base)
    return FileChanges(fd, frozenset({name, name + b"-wal", name + b"-journal"}))
