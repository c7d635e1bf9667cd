"""What a SQLite error means for the user, and what to add to its message.

SQLite names few causes ("attempt to write a readonly database", "unable to
open database file", "disk I/O error"). The checks here classify an error by
its code (read-only, damaged file, not a database), and the hints say what
the file system shows about why: a folder at the path, a read-only file,
folder or mount, a reader without the -shm it needs, a symlink to nothing,
a full disk. The backend appends them to its ConnectionError and
BackendError messages.
"""

from __future__ import annotations

import errno
import os
import shutil
import sqlite3

from .access import may, write_blockers

_LOW_DISK_BYTES = 1 << 20  # free bytes under which an I/O error at open is put down to a full disk


def _is_read_only_wal_hint(exc: BaseException) -> bool:
    return getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_CANTOPEN or "unable to open" in str(exc)


_DAMAGED_HINT = (
    "; the file is damaged: check it with 'PRAGMA integrity_check;' in the sqlite3 shell "
    "(see Troubleshooting in docs/how-to/sqlite-backend.md)"
)


def _is_read_only(exc: BaseException) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    return (code is not None and code & 0xFF == sqlite3.SQLITE_READONLY) or "readonly database" in str(exc)


def _is_corrupt(exc: BaseException) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    return (code is not None and code & 0xFF == sqlite3.SQLITE_CORRUPT) or "malformed" in str(exc)


def _is_not_a_db(exc: BaseException) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    return code == sqlite3.SQLITE_NOTADB or "not a database" in str(exc)


_FOLDER_HINT = " (that path is a folder: give the path of a database file inside it, e.g. .../tasks.db)"

#: What keeps a process from writing a file when its modes do not show it (root, a security module).
_UNKNOWN_WRITE_BLOCKER = (
    "the file, its folder or its -wal/-shm files are read-only for it, or its file system is mounted read-only "
    "(their modes do not show which)"
)


def _read_only_hint(path: str) -> str:
    """For a writer: which of the file, its folder, its -wal/-shm files or its mount is read-only here."""
    folder = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        return _FOLDER_HINT
    if os.path.exists(path):
        causes = write_blockers(path)
        if causes:
            return f" ({'; '.join(causes)}: sitq writes to the file and keeps its -wal and -shm files beside it)"
        return ""
    if os.path.isdir(folder) and not may(folder, os.W_OK):
        where = write_blockers(path)  # a read-only mount, or the folder
        return f" ({'; '.join(where) or f'the folder {folder} is read-only here'}: sitq cannot create the file)"
    return ""


def _reader_hint(path: str, exc: BaseException) -> str:
    """For a reader (sitq stats) SQLite refused: what keeps it from reading (never that sitq writes the file)."""
    if os.path.isdir(path):
        return _FOLDER_HINT
    if os.path.isfile(path) and not may(path, os.R_OK):
        return " (this process may not read the file)"
    causes = write_blockers(path) if os.path.isfile(path) else []
    real = os.path.realpath(path)
    # SQLite refused a read for want of a file it could not create: a WAL database's -shm (not the file's own
    # header read here, to tell: closing a descriptor of the file drops this process's locks on it)
    no_shm = not os.path.exists(real + "-shm") and not may(os.path.dirname(real), os.W_OK)
    if no_shm and (_is_read_only_wal_hint(exc) or _is_read_only(exc)):
        why = "; ".join(causes) or "this process cannot create files beside it"
        return (
            f" ({why}: reading writes nothing, but SQLite reads a WAL database only with its -wal and -shm "
            "files, which it cannot create here; they are there while a process that may write it has it open)"
        )
    if causes:
        return f" ({'; '.join(causes)})"
    return _disk_full_hint(path, exc)


def _may_read(path: str) -> bool:
    return os.path.isfile(path) and may(path, os.R_OK)


def _path_hint(path: str) -> str:
    """What is wrong with ``path`` itself when SQLite says only "unable to open database file" (else "").

    A symlink whose target (or its folder) is missing, a loop of symlinks, a
    name longer than the file system takes, or a device such as /dev/null.
    """
    try:
        os.stat(path)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return " (the path is a loop of symlinks)"
        if exc.errno == errno.ENAMETOOLONG:
            return " (a name in the path is longer than the file system allows)"
        if exc.errno == errno.ENOENT and os.path.islink(path):
            target = os.path.realpath(path)
            missing = target if os.path.isdir(os.path.dirname(target)) else os.path.dirname(target)
            return f" (the path is a symlink to {target!r}, and {missing!r} does not exist)"
        return ""
    if not os.path.isfile(path) and not os.path.isdir(path):
        return " (the path is not a regular file: a database is a file, e.g. .../tasks.db)"
    return ""


_SQLITE_FILES = 3  # descriptors a connection may open: the database, its -wal and its -shm (or a journal)


def _open_files_hint(exc: BaseException) -> str:
    """For "unable to open database file": that this process is out of file descriptors, when it is (else "").

    SQLite does not say why an open failed. Probed by opening the null device
    (never the database: closing any descriptor of it would drop this
    process's locks on it) as often as a connection may need files: when
    that fails with EMFILE or ENFILE, so did SQLite.
    """
    if not _is_read_only_wal_hint(exc):
        return ""
    opened: list[int] = []
    try:
        for _ in range(_SQLITE_FILES):
            opened.append(os.open(os.devnull, os.O_RDONLY))
    except OSError as probe:
        if probe.errno == errno.EMFILE:
            return (
                f" (this process has too many open files (RLIMIT_NOFILE soft limit {_nofile_limit()}): "
                "raise it (ulimit -n) or close other files)"
            )
        if probe.errno == errno.ENFILE:
            return " (the system has too many open files (ENFILE): raise fs.file-max or close other files)"
    finally:
        for fd in opened:
            os.close(fd)
    return ""


def _nofile_limit() -> str:
    try:
        import resource  # not on Windows
    except ImportError:  # pragma: no cover - Windows
        return "unknown"
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    return "unlimited" if soft == resource.RLIM_INFINITY else str(soft)


def _disk_full_hint(path: str, exc: BaseException) -> str:
    """For an I/O or full-disk error: how little room the disk holding ``path`` has left, when that is why,
    and the largest file this process may write, when it has such a limit.

    SQLite reports a full disk at open as a bare "disk I/O error" (it cannot
    grow the -shm file), which names nothing an operator could act on; so it
    reports a write past RLIMIT_FSIZE (SIGXFSZ ignored) at any time.
    """
    code = getattr(exc, "sqlite_errorcode", 0) or 0
    if code & 0xFF not in (sqlite3.SQLITE_IOERR, sqlite3.SQLITE_FULL):
        return ""
    causes = []
    free = _low_disk_free(path)
    if free is not None:
        causes.append(f"the disk holding it has {free:,} bytes free: a full disk is the likely cause; free some space")
    largest = _file_size_limit()
    if largest is not None:
        causes.append(f"this process may write files of at most {largest:,} bytes (RLIMIT_FSIZE, ulimit -f)")
    return f" ({'; '.join(causes)})" if causes else ""


def _low_disk_free(path: str) -> int | None:
    """The free bytes of the disk holding ``path`` when under ``_LOW_DISK_BYTES`` (a full disk is then the
    likely cause of an I/O error), else None (room left, or the free space cannot be read)."""
    try:
        free = shutil.disk_usage(os.path.dirname(os.path.abspath(path))).free
    except OSError:
        return None
    return free if free < _LOW_DISK_BYTES else None


def _file_size_limit() -> int | None:
    """RLIMIT_FSIZE's soft limit in bytes, or None when there is none."""
    try:
        import resource  # not on Windows
    except ImportError:  # pragma: no cover - Windows
        return None
    soft = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    return None if soft == resource.RLIM_INFINITY else soft


def _cannot_write_hint(path: str) -> str:
    """``_read_only_hint``, or what else makes a file that is there refuse writes (root, a security module)."""
    return (
        _read_only_hint(path)
        or f" ({_UNKNOWN_WRITE_BLOCKER}: sitq writes to the file and keeps its -wal and -shm files beside it)"
    )
