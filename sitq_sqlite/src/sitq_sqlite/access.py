"""Who may write a database file: why this process cannot (for the error that says so), and who else can.

SQLite only says "attempt to write a readonly database" or "unable to open
database file". The causes are told apart here from what the operating
system shows: a read-only mount (``statvfs``), then the modes and owners of
the file, its folder and its -wal/-shm files (``os.access``, asked for the
effective user and groups, as SQLite's own open is checked, where the
system can). Root passes the mode checks, so for it (or under a security
module) no cause may show.
Nothing here opens the file: closing any descriptor of it would drop the
POSIX locks this process's SQLite connections hold on it.
"""

from __future__ import annotations

import os
import stat

__all__ = ["may", "others_can_write", "write_blockers"]

#: Whether os.access can answer for the effective user and groups (a setuid program's), not the real ones.
_EFFECTIVE_IDS = os.access in os.supports_effective_ids


def may(path: str, mode: int) -> bool:
    """``os.access`` for this process's effective user and groups where the system can ask that.

    The real ones (os.access's default) are the wrong question: SQLite opens
    the file as the effective user, so a setuid program was told it could not
    write a file it could.
    """
    if _EFFECTIVE_IDS:
        return os.access(path, mode, effective_ids=True)
    return os.access(path, mode)


def write_blockers(path: str) -> list[str]:
    """The causes that keep this process from writing the database at ``path`` (empty: none found).

    A read-only mount is the whole story when it applies (every mode there
    reads as read-only); otherwise each of the file, its folder (where SQLite
    creates the -wal, -shm and -journal files) and its -wal/-shm files that this
    process may not write is named.
    """
    real = os.path.realpath(path)  # SQLite keeps the -wal and -shm beside the file a symlink points to
    folder = os.path.dirname(real)
    mount = _read_only_mount(folder)
    if mount is not None:
        return [f"its file system ({mount}) is mounted read-only"]
    causes: list[str] = []
    if os.path.isfile(real) and not may(real, os.W_OK):
        causes.append(_file_not_writable(real))
    if os.path.isdir(folder) and not may(folder, os.W_OK):
        causes.append(f"its folder {folder} is read-only for this process")
    companions = [s for s in ("-wal", "-shm") if os.path.exists(real + s) and not may(real + s, os.W_OK)]
    if len(companions) == 1:
        causes.append(f"its {companions[0]} file is read-only for this process")
    elif companions:
        causes.append("its -wal and -shm files are read-only for this process")
    return causes


def others_can_write(path: str) -> list[str]:
    """Why users other than this process's may change the database at ``path`` (empty: no sign of any).

    The file writable by its group or by everyone, the file owned by another
    user (root aside: it can write anything anyway), the same for its -wal
    and -shm files where they exist (beside the real file: a WAL write lands
    in the -wal first, and readers trust the -shm index), or its folder
    writable by its group or everyone without the sticky bit (they can put
    another file in its place). Four ``stat`` calls; nothing is opened.
    Empty on systems without POSIX modes, and when the file cannot be looked at.
    """
    geteuid = getattr(os, "geteuid", None)
    if geteuid is None:  # pragma: no cover - Windows: modes tell nothing there
        return []
    causes = _symlink_causes(path, geteuid())
    real = os.path.realpath(path)  # SQLite opens the file a symlink points to
    folder = os.path.dirname(real)
    try:
        info = os.stat(real)
        folder_info = os.stat(folder)
    except OSError:
        return causes
    causes += _file_causes("the file", info, geteuid())
    for suffix in ("-wal", "-shm"):
        try:
            companion = os.stat(real + suffix)
        except OSError:  # none (no WAL, or not opened yet): SQLite makes it with the file's mode and owner
            continue
        causes += _file_causes(f"its {suffix} file {real + suffix}", companion, geteuid())
    folder_mode = stat.S_IMODE(folder_info.st_mode)
    folder_writers = _writers(folder_mode)
    if folder_writers and not folder_mode & stat.S_ISVTX:
        causes.append(
            f"its folder {folder} is writable by {folder_writers} without the sticky bit (mode {folder_mode:04o}), "
            "so another file can be put in its place"
        )
    return causes


def _file_causes(what: str, info: os.stat_result, euid: int) -> list[str]:
    """Why others may write the file ``info`` describes: its mode, or its owner (neither this user nor root)."""
    causes: list[str] = []
    mode = stat.S_IMODE(info.st_mode)
    writers = _writers(mode)
    if writers:
        causes.append(f"{what} is writable by {writers} (mode {mode:04o})")
    if info.st_uid not in (euid, 0):
        causes.append(f"{what} belongs to another user (uid {info.st_uid}{_user_name(info.st_uid)})")
    return causes


def _symlink_causes(path: str, euid: int) -> list[str]:
    """Why others may re-point a symlink on the way to the database: its folder or the link itself is theirs.

    Whoever can replace a link in a folder writable by others (no sticky
    bit), or owns the link, decides which file the next connect opens.
    """
    causes: list[str] = []
    current = os.path.abspath(path)
    for _ in range(40):  # the kernel's own limit on links followed
        try:
            if not os.path.islink(current):
                break
            link_info = os.lstat(current)
            folder = os.path.dirname(current)
            folder_mode = stat.S_IMODE(os.stat(folder).st_mode)
            target = os.readlink(current)
        except OSError:
            break
        folder_writers = _writers(folder_mode)
        if folder_writers and not folder_mode & stat.S_ISVTX:
            causes.append(
                f"the symlink {current} is in a folder writable by {folder_writers} without the sticky bit "
                f"(mode {folder_mode:04o}), so it can be pointed at another file"
            )
        if link_info.st_uid not in (euid, 0):
            causes.append(f"the symlink {current} belongs to another user (uid {link_info.st_uid})")
        current = os.path.normpath(os.path.join(folder, target))
    return causes


def _writers(mode: int) -> str:
    """``"its group"``, ``"everyone"``, both, or "" for the write bits of ``mode`` beyond its owner's."""
    return " and ".join(who for who, bit in (("its group", stat.S_IWGRP), ("everyone", stat.S_IWOTH)) if mode & bit)


def _read_only_mount(folder: str) -> str | None:
    """The mount point of ``folder``'s file system when it is mounted read-only, else None (or where unknown)."""
    existing = folder
    while not os.path.isdir(existing) and os.path.dirname(existing) != existing:
        existing = os.path.dirname(existing)  # a folder still to be created: the file system it would be on
    try:
        if not os.statvfs(existing).f_flag & os.ST_RDONLY:
            return None
    except (OSError, AttributeError):  # no statvfs (Windows), or nothing to ask
        return None
    mount = existing
    while not os.path.ismount(mount) and os.path.dirname(mount) != mount:
        mount = os.path.dirname(mount)
    return mount


def _file_not_writable(path: str) -> str:
    """Why the file itself refuses this process: another user's file, or its mode."""
    try:
        info = os.stat(path)
    except OSError:
        return "the file is read-only for this process"
    mode = f"mode {stat.S_IMODE(info.st_mode):04o}"
    geteuid = getattr(os, "geteuid", None)
    if geteuid is not None and info.st_uid != geteuid():
        return (
            f"the file belongs to another user (uid {info.st_uid}{_user_name(info.st_uid)}, {mode}), "
            f"which this process (uid {geteuid()}) may not write"
        )
    return f"the file is read-only for this process ({mode})"


def _user_name(uid: int) -> str:
    try:
        import pwd
    except ImportError:  # pragma: no cover - Windows
        return ""
    try:
        return f" {pwd.getpwuid(uid).pw_name}"
    except KeyError:
        return ""
