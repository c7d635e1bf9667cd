"""A SQLite file this process cannot write: workers and producers stop at connect, sitq stats still reads.

Root ignores file modes, so as root the processes run without CAP_DAC_OVERRIDE (setpriv).
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import textwrap
from contextlib import closing
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parents[1]


def run_sitq(*args: str, prefix: list[str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(TESTS))
    return subprocess.run(
        [*(prefix or []), sys.executable, "-m", "sitq", *args], capture_output=True, text=True, env=env, timeout=timeout
    )


# ------------------------------------------------------------------ read-only file or folder


def _unprivileged() -> list[str]:
    """A command prefix under which file modes apply to this test's own files (root ignores them)."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("running as root without setpriv: a read-only file would still be writable")
    return [setpriv, "--bounding-set=-dac_override,-dac_read_search", "--"]


def _made_read_only(tmp_path: Path, case: str, prefix: list[str]) -> Path:
    folder = tmp_path / "data"
    path = folder / "q.db"
    run = subprocess.run(
        [sys.executable, "-c", _ENQUEUE_FIVE, str(path)], env=dict(os.environ, PYTHONPATH=str(TESTS)), timeout=60
    )
    assert run.returncode == 0
    if case == "file":
        path.chmod(0o444)
    elif case == "folder":
        folder.chmod(0o555)
    elif case == "leftovers":  # a reader of the read-only file left -wal and -shm files it could not remove
        path.chmod(0o444)
        read = "import sqlite3, sys; sqlite3.connect(sys.argv[1]).execute('SELECT count(*) FROM tasks').fetchone()"
        subprocess.run([*prefix, sys.executable, "-c", read, str(path)], check=True, timeout=60)
        assert (folder / "q.db-shm").exists()
        path.chmod(0o644)
        folder.chmod(0o555)
    elif case == "owner":  # the file and its folder belong to another user
        if os.geteuid() != 0:
            pytest.skip("giving the file to another user needs root")
        for name in (folder, path):
            os.chown(name, 65534, 65534)
    return path


_ENQUEUE_FIVE = textwrap.dedent(
    """
    import asyncio, sys
    import sitq_test_tasks as tasks
    from sitq import TaskQueue
    async def main():
        async with TaskQueue("sqlite:///" + sys.argv[1]) as queue:
            await queue.enqueue_many([(tasks.add, (i,)) for i in range(5)])
    asyncio.run(main())
    """
)


@pytest.fixture
def restore_modes(tmp_path: Path):  # type: ignore[no-untyped-def]
    yield
    for folder, _dirs, files in os.walk(tmp_path):
        os.chmod(folder, 0o755)
        for name in files:
            os.chmod(os.path.join(folder, name), 0o644)


def _causes(case: str, path: Path) -> list[str]:
    """What the refusal must say for ``case`` (docs/how-to/sqlite-backend.md: which of the causes it is)."""
    folder = f"its folder {path.parent} is read-only for this process"
    return {
        "file": ["the file is read-only for this process (mode 0444"],
        "folder": [folder],
        # (SQLite gives an empty -wal the mode of its database as it opens it: only the -shm stays read-only)
        "leftovers": [folder, "its -shm file is read-only for this process"],
        "owner": ["the file belongs to another user (uid 65534", folder],
    }[case]


@pytest.mark.slow
@pytest.mark.usefixtures("restore_modes")
@pytest.mark.parametrize("case", ["file", "folder", "leftovers", "owner"])
def test_a_worker_on_a_store_it_cannot_write_stops_at_start(tmp_path: Path, case: str) -> None:
    """docs/how-to/workers.md: a SQLite path that is read-only stops the worker with a ConnectionError, exit 2,
    saying that the file can be read but not written and why (a read-only folder, or a file of another user,
    gave "unable to open database file" or "the file or its folder is read-only here" without saying which)."""
    prefix = _unprivileged()
    path = _made_read_only(tmp_path, case, prefix)
    before = sorted(os.listdir(path.parent))
    done = run_sitq("worker", "-b", f"sqlite:///{path}", "-i", "sitq_test_tasks", prefix=prefix, timeout=30)
    assert done.returncode == 2, done.stderr[-2000:]
    assert f"SQLite database {str(path)!r} can be read but not written by this process: " in done.stderr
    for cause in _causes(case, path):
        assert cause in done.stderr
    assert "Traceback" not in done.stderr
    # a read-only file in a writable folder: the refused worker left -wal and -shm files (read-only, and
    # its user's) that it could not remove
    assert sorted(os.listdir(path.parent)) == before
    if case == "folder":  # SQLite cannot read a WAL file without its -shm file, and cannot make one here
        stats = run_sitq("stats", "--json", "-b", f"sqlite:///{path}", prefix=prefix)
        assert stats.returncode == 2
        assert _causes(case, path)[0] in stats.stderr and "-shm" in stats.stderr
        assert "sitq writes" not in stats.stderr, "stats only reads: " + stats.stderr
        return
    # sitq stats only reads: it keeps working on the read-only file
    stats = run_sitq("stats", "--json", "-b", f"sqlite:///{path}", prefix=prefix)
    assert stats.returncode == 0, stats.stderr
    assert '"queued": 5' in stats.stdout
    assert "checkpoint" not in stats.stderr, "a reader writes nothing, even at close: " + stats.stderr


@pytest.mark.slow
@pytest.mark.usefixtures("restore_modes")
def test_a_producer_on_a_read_only_file_is_refused_at_connect(tmp_path: Path) -> None:
    prefix = _unprivileged()
    path = _made_read_only(tmp_path, "file", prefix)
    code = textwrap.dedent(
        """
        import asyncio, sys
        from sitq import TaskQueue
        from sitq_core.errors import ConnectionError
        async def main():
            try:
                async with TaskQueue("sqlite:///" + sys.argv[1]) as queue:
                    await queue.enqueue(print)
            except ConnectionError as exc:
                print("refused:", exc)
        asyncio.run(main())
        """
    )
    done = subprocess.run([*prefix, sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("refused:") and "read-only" in done.stdout


@pytest.mark.slow
@pytest.mark.usefixtures("restore_modes")
def test_a_write_failing_on_a_file_made_read_only_later_says_why(tmp_path: Path) -> None:
    """The file turns read-only under a running backend: the write that fails carries the read-only hint."""
    prefix = _unprivileged()
    path = tmp_path / "q.db"
    code = textwrap.dedent(
        """
        import os, sys, threading
        from sitq import SQLiteBackend, SyncTaskQueue
        from sitq_core.errors import SitqError
        path = sys.argv[1]
        def enqueue(queue):
            try:
                queue.enqueue(print)
            except SitqError as exc:
                print("refused:", exc)
        with SyncTaskQueue(SQLiteBackend(path)) as queue:
            queue.enqueue(print)
            for name in (path, path + "-wal", path + "-shm"):
                os.chmod(name, 0o444)
            # a new thread opens the file anew for its write (read-only now); the open connections still could
            thread = threading.Thread(target=enqueue, args=(queue,))
            thread.start()
            thread.join()
            for name in (path, path + "-wal", path + "-shm"):
                os.chmod(name, 0o644)
        """
    )
    done = subprocess.run([*prefix, sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("refused:"), done.stdout
    assert "readonly" in done.stdout and "read-only" in done.stdout, done.stdout


@pytest.mark.slow
@pytest.mark.usefixtures("restore_modes")
def test_stats_on_a_file_it_cannot_write_leaves_no_wal_or_shm(tmp_path: Path) -> None:
    """docs/how-to/sqlite-backend.md: read-only tools create nothing. A monitoring user's `sitq stats` on an
    idle database it cannot write must not leave -wal/-shm files of its own (the owner could then be refused,
    and could not remove them in a sticky folder like /tmp)."""
    prefix = _unprivileged()
    path = _made_read_only(tmp_path, "file", prefix)  # the folder stays writable: SQLite could create them
    folder = path.parent
    assert not (folder / "q.db-wal").exists() and not (folder / "q.db-shm").exists()
    for _ in range(2):
        stats = run_sitq("stats", "--json", "-b", f"sqlite:///{path}", prefix=prefix)
        assert stats.returncode == 0, stats.stderr
        assert '"queued": 5' in stats.stdout
        assert sorted(p.name for p in folder.iterdir()) == ["q.db"]
    path.chmod(0o644)  # the owner writes on, and its own reader sees the new task
    run = subprocess.run(
        [*prefix, sys.executable, "-c", _ENQUEUE_FIVE, str(path)],
        env=dict(os.environ, PYTHONPATH=str(TESTS)),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
    stats = run_sitq("stats", "--json", "-b", f"sqlite:///{path}", prefix=prefix)
    assert '"queued": 10' in stats.stdout, stats.stderr


@pytest.mark.usefixtures("restore_modes")
def test_stats_through_a_symlink_sees_commits_still_in_the_wal(tmp_path: Path) -> None:
    """SQLite keeps the -wal beside the file a symlink points to: looking beside the link, stats took an
    active database for an idle one and read it as an immutable snapshot, missing the commits in the -wal."""
    from sitq import SyncTaskQueue

    import sitq_test_tasks as tasks

    prefix = _unprivileged()
    path = _made_read_only(tmp_path, "file", prefix)
    (tmp_path / "elsewhere").mkdir()
    link = tmp_path / "elsewhere" / "link.db"
    link.symlink_to(path)
    with SyncTaskQueue(f"sqlite:///{path}") as owner:  # this process may write it; its commits sit in the -wal
        owner.enqueue_many([(tasks.add, (n,), {}) for n in range(7)])
        assert (path.parent / "q.db-wal").exists()
        stats = run_sitq("stats", "--json", "-b", f"sqlite:///{link}", prefix=prefix)
    assert stats.returncode == 0, stats.stderr
    assert '"queued": 12' in stats.stdout, stats.stdout


# ------------------------------------------------------------------ stats changes no setting of the file


def _in_journal_mode(tmp_path: Path, mode: str) -> Path:
    """A sitq file holding five queued tasks, then switched to ``mode`` by its operator."""
    path = _made_read_only(tmp_path, "none", [])
    with sqlite3.connect(path) as conn:
        assert conn.execute(f"PRAGMA journal_mode = {mode}").fetchone()[0] == mode.lower()
    return path


def _journal_mode(path: Path) -> str:
    with closing(sqlite3.connect(path)) as conn:
        return str(conn.execute("PRAGMA journal_mode").fetchone()[0])


@pytest.mark.parametrize(
    ("mode", "option"),
    [("DELETE", ""), ("WAL", "?journal_mode=DELETE"), ("DELETE", "?journal_mode=WAL")],
)
def test_stats_leaves_the_files_journal_mode_and_bytes_as_they_were(tmp_path: Path, mode: str, option: str) -> None:
    """sitq stats only reads: on a file its operator keeps in DELETE mode, one stats switched it to WAL for good
    (and a ?journal_mode= in the URL it was given switched a WAL file away from WAL)."""
    path = _in_journal_mode(tmp_path, mode)
    before = path.read_bytes()
    stats = run_sitq("stats", "--json", "-b", f"sqlite:///{path}{option}")
    assert stats.returncode == 0, stats.stderr
    assert '"queued": 5' in stats.stdout
    assert _journal_mode(path) == mode.lower()
    assert path.read_bytes() == before


@pytest.mark.slow
@pytest.mark.usefixtures("restore_modes")
def test_stats_reads_a_delete_mode_file_in_a_read_only_folder(tmp_path: Path) -> None:
    """A rollback-journal file needs no -wal/-shm to be read, so a user who may only read it (file and folder
    read-only) gets the counts, as plain sqlite3 does; stats failed with 'attempt to write a readonly database'
    from setting the journal mode."""
    prefix = _unprivileged()
    path = _in_journal_mode(tmp_path, "DELETE")
    before = path.read_bytes()
    path.chmod(0o444)
    path.parent.chmod(0o555)
    stats = run_sitq("stats", "--json", "-b", f"sqlite:///{path}", prefix=prefix)
    assert stats.returncode == 0, stats.stderr
    assert '"queued": 5' in stats.stdout
    assert path.read_bytes() == before and sorted(p.name for p in path.parent.iterdir()) == ["q.db"]


@pytest.mark.slow
def test_a_worker_on_a_read_only_mount_says_so(tmp_path: Path) -> None:
    """A file system mounted read-only (a real one: tmpfs in a private mount namespace, so root is needed)."""
    if os.geteuid() != 0 or shutil.which("unshare") is None or shutil.which("mount") is None:
        pytest.skip("needs root, unshare and mount for a read-only mount")
    mount = tmp_path / "mnt"
    mount.mkdir()
    path = mount / "q.db"
    env = f"PYTHONPATH={TESTS}"
    script = textwrap.dedent(
        f"""
        set -e
        mount -t tmpfs -o size=16m tmpfs {mount}
        {env} {sys.executable} -c {_quoted(_ENQUEUE_FIVE)} {path}
        mount -o remount,ro {mount}
        {env} {sys.executable} -m sitq worker -b sqlite:///{path} -i sitq_test_tasks || echo "worker exit $?"
        {env} {sys.executable} -m sitq stats --json -b sqlite:///{path}
        """
    )
    done = subprocess.run(["unshare", "-m", "sh", "-c", script], capture_output=True, text=True, timeout=60)
    if "mount:" in done.stderr and "permission denied" in done.stderr.lower():
        pytest.skip("mount is not permitted here: " + done.stderr[-300:])
    assert "worker exit 2" in done.stdout, done.stdout + done.stderr
    assert f"SQLite database {str(path)!r} can be read but not written by this process: " in done.stderr
    assert f"its file system ({mount}) is mounted read-only" in done.stderr, done.stderr
    assert '"queued": 5' in done.stdout, "sitq stats only reads: " + done.stderr


def _quoted(text: str) -> str:
    import shlex

    return shlex.quote(text)


# ------------------------------------------------------------------ the pre-check never overrules what SQLite may do

_ENQUEUE_AS_ANOTHER_REAL_USER = textwrap.dedent(
    """
    import asyncio, os, sys
    import sitq_test_tasks as tasks
    from sitq import TaskQueue
    os.setresuid(65534, 0, 0)  # as in a setuid-root program run by nobody: real uid 65534, effective uid 0
    # the real user may read the file but not write it
    assert os.access(sys.argv[1], os.R_OK) and not os.access(sys.argv[1], os.W_OK)
    async def main():
        async with TaskQueue("sqlite:///" + sys.argv[1]) as queue:
            await queue.enqueue(tasks.add, 1, 2)
            print(sum((await queue.counts()).values()))
    asyncio.run(main())
    """
)


@pytest.mark.slow
def test_a_process_whose_effective_user_may_write_the_file_is_not_refused() -> None:
    """The pre-check asked os.access, which answers for the REAL user: a setuid process whose effective
    user may write the file (and SQLite would have written it) was refused as 'can be read but not written'."""
    if os.geteuid() != 0:
        pytest.skip("a process with another real than effective user needs root to make")
    folder = Path(tempfile.mkdtemp(prefix="sitq-setuid-"))  # under /tmp: the real user may look into it
    try:
        folder.chmod(0o755)
        path = folder / "q.db"
        env = dict(os.environ, PYTHONPATH=str(TESTS))
        made = subprocess.run([sys.executable, "-c", _ENQUEUE_FIVE, str(path)], env=env, timeout=60)
        assert made.returncode == 0 and path.stat().st_mode & 0o777 == 0o644
        done = subprocess.run(
            [sys.executable, "-c", _ENQUEUE_AS_ANOTHER_REAL_USER, str(path)],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr[-2000:]
        assert done.stdout.split() == ["6"]
    finally:
        shutil.rmtree(folder)


@pytest.mark.asyncio
@pytest.mark.parametrize("open_elsewhere", [True, False], ids=["wal-and-shm-there", "nothing-beside-it"])
async def test_modes_that_say_read_only_refuse_a_writer_only_where_sqlite_would_leave_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, open_elsewhere: bool
) -> None:
    """A file system whose modes say read-only while it lets this process write (faked: os.access says no
    for the file). The pre-check exists only so that a refused writer does not leave -wal/-shm files of its
    own beside the file: where both are there already (another process has it open), SQLite decides."""
    from sitq import TaskQueue
    from sitq_core.errors import ConnectionError
    from sitq_sqlite import SQLiteBackend

    path = tmp_path / "q.db"
    async with TaskQueue(SQLiteBackend(path)) as queue:
        await queue.enqueue(print, 1)
    real_access = os.access

    def modes_say_read_only(target: object, mode: int, **kwargs: object) -> bool:
        if os.fspath(target) == str(path) and mode & os.W_OK:  # type: ignore[call-overload]
            return False
        return real_access(target, mode, **kwargs)  # type: ignore[arg-type]

    other = sqlite3.connect(path)
    try:
        if open_elsewhere:
            other.execute("SELECT count(*) FROM tasks").fetchone()  # the -wal and -shm files are there
        else:
            other.close()
        before = sorted(os.listdir(tmp_path))
        monkeypatch.setattr(os, "access", modes_say_read_only)
        backend = SQLiteBackend(path)
        if open_elsewhere:
            async with TaskQueue(backend) as queue:
                await queue.enqueue(print, 2)
                assert (await queue.counts())["queued"] == 2
        else:  # SQLite would open it read-only and leave -wal and -shm files: refused before it opens it
            with pytest.raises(ConnectionError, match="can be read but not written by this process"):
                await backend.connect()
            await backend.close()
            assert sorted(os.listdir(tmp_path)) == before == ["q.db"]
    finally:
        other.close()
