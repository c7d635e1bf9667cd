"""The three distributions: lockstep versions, entry points, typed packages, a real non-editable install."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tomllib
import venv
import zipfile
from importlib.metadata import distribution, entry_points
from pathlib import Path

import pytest

from sitq_test_helpers import mypy_or_skip

ROOT = Path(__file__).resolve().parents[2]
PROJECTS = {
    "sitq": ROOT / "pyproject.toml",
    "sitq-core": ROOT / "sitq_core" / "pyproject.toml",
    "sitq-sqlite": ROOT / "sitq_sqlite" / "pyproject.toml",
}


def load(path: Path) -> dict[str, object]:
    with path.open("rb") as f:
        return tomllib.load(f)


def test_versions_move_in_lockstep() -> None:
    versions = {name: load(path)["project"]["version"] for name, path in PROJECTS.items()}  # type: ignore[index]
    assert len(set(versions.values())) == 1, versions
    version = versions["sitq"]
    root = load(PROJECTS["sitq"])["project"]
    assert f"sitq-core=={version}" in root["dependencies"]  # type: ignore[index]
    assert root["optional-dependencies"]["sqlite"] == [f"sitq-sqlite=={version}"]  # type: ignore[index]
    import sitq

    assert sitq.__version__ == version


def test_sqlite_plugin_is_registered_through_its_entry_point() -> None:
    found = {ep.name: ep for ep in entry_points(group="sitq")}
    assert found["sqlite"].value == "sitq_sqlite.plugin"
    assert found["sqlite"].dist is not None and found["sqlite"].dist.name == "sitq-sqlite"
    assert distribution("sitq-sqlite").requires is not None


def test_cli_lists_plugins_and_backends() -> None:
    run = [sys.executable, "-m", "sitq"]
    plugins = json.loads(subprocess.run([*run, "plugins", "--json"], capture_output=True, text=True, check=True).stdout)
    sqlite = next(p for p in plugins if p["name"] == "sqlite")
    assert sqlite["status"] == "ok" and sqlite["dist"] == "sitq-sqlite" and sqlite["backends"] == ["sqlite"]
    rows = json.loads(subprocess.run([*run, "backends", "--json"], capture_output=True, text=True, check=True).stdout)
    names = {(row["kind"], row["name"]): row for row in rows}
    assert names[("backend", "sqlite")]["installed"] is True
    assert names[("backend", "postgres")]["installed"] is True
    assert names[("backend", "postgres")]["dist"] == "sitq-postgres"
    disabled = dict(os.environ, SITQ_DISABLED_PLUGINS="postgres")
    listing = subprocess.run([*run, "backends", "--json"], capture_output=True, text=True, check=True, env=disabled)
    rows = {(row["kind"], row["name"]): row for row in json.loads(listing.stdout)}
    assert rows[("backend", "postgres")]["description"] == "installed but disabled by SITQ_DISABLED_PLUGINS"
    absent = (  # a name sitq knows whose distribution is not installed at all
        "from sitq_core import plugin_manager\n"
        "plugin_manager.KNOWN_PLUGINS['mysql'] = ('sitq-mysql', 'sitq[mysql]')\n"
        "from sitq_core.cli import main\n"
        "main(['backends'])\n"
    )
    listing = subprocess.run([sys.executable, "-c", absent], capture_output=True, text=True, check=True)
    line = next(line for line in listing.stdout.splitlines() if line.split()[:2] == ["backend", "mysql"])
    assert "not installed: pip install 'sitq[mysql]' (from a source checkout: pip install ./sitq_mysql)" in line
    assert {("serializer", "cloudpickle"), ("serializer", "msgpack")} <= set(names)
    version = subprocess.run([*run, "--version"], capture_output=True, text=True, check=True).stdout
    assert version.startswith("sitq ") and "sitq-sqlite" in version


def test_load_plugins_allowlist_keeps_the_facade_working(tmp_path: Path) -> None:
    code = (
        "import sitq\n"
        "backend = sitq.SQLiteBackend('x.db')\n"
        "try:\n"
        "    sitq.connect('sqlite:///y.db')\n"
        "except sitq.ConfigurationError as e:\n"
        "    print('ERR', e)\n"
    )
    env = dict(os.environ, SITQ_LOAD_PLUGINS="", SITQ_STRICT_PLUGINS="1")
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "installed but disabled by SITQ_LOAD_PLUGINS" in done.stdout


@pytest.mark.slow
def test_plain_install_from_a_checkout(tmp_path: Path) -> None:
    """pip install ./sitq_core ./sitq_sqlite '.[sqlite,msgpack]' (no editable tricks) gives a working sitq."""
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    python = env_dir / "bin" / "python"
    build = tmp_path / "src"
    subprocess.run(["git", "clone", "-q", "--no-hardlinks", str(ROOT), str(build)], check=True)
    subprocess.run(  # the working tree may hold uncommitted changes: test what is on disk
        ["cp", "-r", *[str(ROOT / p) for p in ("sitq", "sitq_core", "sitq_sqlite", "pyproject.toml")], str(build)],
        check=True,
    )
    install = [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    subprocess.run([*install, "./sitq_core", "./sitq_sqlite", ".[sqlite,msgpack]"], cwd=build, check=True)
    code = (
        "import asyncio, sitq, importlib.resources as r\n"
        "from sitq import SQLiteBackend, TaskQueue, Worker\n"
        "assert r.files('sitq_core').joinpath('py.typed').is_file()\n"
        "assert r.files('sitq_sqlite').joinpath('py.typed').is_file()\n"
        "assert r.files('sitq').joinpath('py.typed').is_file()\n"
        "async def main():\n"
        "    async with TaskQueue('sqlite:///w.db', serializer='msgpack') as q:\n"
        "        w = Worker(q.backend); await w.start()\n"
        "        r_ = await q.get_result(await q.enqueue(pow, 2, 10), timeout=20)\n"
        "        await w.stop(); print(q.deserialize_result(r_))\n"
        "asyncio.run(main())\n"
    )
    done = subprocess.run([str(python), "-c", code], cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "1024"


@pytest.mark.slow
def test_a_type_checker_outside_the_checkout_finds_the_editable_sitq(tmp_path: Path) -> None:
    """dev.py's editable install puts plain paths in ``.pth`` files: mypy (and pyright) cannot follow setuptools'
    import-hook finder, so a user's ``mypy --strict`` outside the repo saw ``import sitq`` as import-not-found."""
    module = tmp_path / "user_app.py"
    module.write_text(
        "import sitq\n"
        "import sitq_core\n"
        "from sitq import TaskQueue\n\n"
        "queue_type: type[TaskQueue] = sitq.TaskQueue\n"
        "reveal_type(sitq.TaskQueue)\n"
        "reveal_type(sitq_core.TaskQueue)\n",
        encoding="utf-8",
    )
    env = {key: value for key, value in os.environ.items() if key not in ("MYPYPATH", "PYTHONPATH")}
    cache = ["--cache-dir", str(tmp_path / "mypy-cache")]
    done = subprocess.run(
        [*mypy_or_skip(), "--strict", *cache, str(module)], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count('Revealed type is "def (backend:') == 2, done.stdout


def test_cli_names_a_bad_log_level() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "sitq", "--log-level", "bogus", "stats"], capture_output=True, text=True
    )
    assert done.returncode == 2
    assert "--log-level: unknown level 'bogus'" in done.stderr and "Traceback" not in done.stderr


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["-c", "0"], "sitq: error: --concurrency must be "),
        (["--poll-interval", "-1"], "sitq: error: --poll-interval must be "),
        (["--lease-timeout", "0"], "sitq: error: --lease-timeout must be "),
        (["--shutdown-timeout", "-1"], "sitq: error: --shutdown-timeout must be "),
        (["-s", "msgpack", "--allow-task", "os.system"], "sitq: error: --allow-task: "),
        (["-s="], "sitq: error: --serializer must be a registered name"),
        (["-s", "no_such_serializer"], "sitq: error: --serializer: no serializer named 'no_such_serializer'"),
        (["--batch-window", "2"], "sitq: error: --batch-window must be a number of seconds from 0 to 1, got 2"),
    ],
)
def test_cli_worker_errors_name_the_flag_that_was_typed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], expected: str
) -> None:
    from sitq_core.cli import main

    assert main(["worker", "-b", f"sqlite:///{tmp_path / 'flags.db'}", *args]) == 2
    assert expected in capsys.readouterr().err


def test_cli_names_sitq_log_level_when_the_bad_level_came_from_the_environment() -> None:
    env = dict(os.environ, SITQ_LOG_LEVEL="verbose")
    done = subprocess.run([sys.executable, "-m", "sitq", "stats"], capture_output=True, text=True, env=env)
    assert done.returncode == 2 and "SITQ_LOG_LEVEL: unknown level 'verbose'" in done.stderr, done.stderr


def test_cli_stats_reads_counts_and_never_creates_a_missing_database(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "sitq", "stats", "--json", "-b"]
    missing = tmp_path / "typo" / "none.db"
    done = subprocess.run([*command, f"sqlite:///{missing}"], capture_output=True, text=True, check=False)
    assert done.returncode == 2 and "no sitq database at" in done.stderr
    assert not missing.parent.exists()
    other = tmp_path / "app.db"  # another application's database, and an empty file: both stay untouched
    conn = sqlite3.connect(other)
    conn.execute("CREATE TABLE users (id INTEGER PRIMARY KEY)")
    conn.commit()
    conn.close()
    empty = tmp_path / "empty.db"
    empty.touch()
    before = {path: path.read_bytes() for path in (other, empty)}
    for path, says in ((other, "is not a sitq database"), (empty, "is an empty file, no sitq database yet")):
        done = subprocess.run([*command, f"sqlite:///{path}"], capture_output=True, text=True, check=False)
        assert done.returncode == 2 and says in done.stderr, done.stderr
    assert {path: path.read_bytes() for path in (other, empty)} == before
    folder = tmp_path / "a-folder.db"  # there, but unreadable as a database: say why, not "not a sitq database"
    folder.mkdir()
    done = subprocess.run([*command, f"sqlite:///{folder}"], capture_output=True, text=True, check=False)
    assert done.returncode == 2 and "cannot read SQLite database" in done.stderr, done.stderr
    env = {**os.environ, "SITQ_BACKEND": f"sqlite:///{missing}"}
    done = subprocess.run(command[:-1], capture_output=True, text=True, check=False, env=env)
    assert done.returncode == 2 and "(check SITQ_BACKEND)" in done.stderr, done.stderr  # the hint names the source
    code = "import sitq, sys\nwith sitq.SyncTaskQueue(sys.argv[1]) as q:\n    q.enqueue(print, 1)\n"
    subprocess.run([sys.executable, "-c", code, f"sqlite:///{tmp_path / 'real.db'}"], check=True)
    done = subprocess.run([*command, f"sqlite:///{tmp_path / 'real.db'}"], capture_output=True, text=True, check=True)
    assert json.loads(done.stdout)["queued"] == 1


@pytest.mark.parametrize("command", [["stats"], ["worker"]])
def test_cli_refuses_an_in_memory_store_that_no_other_process_could_see(command: list[str]) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "sitq", *command, "-b", "sqlite://"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2, done.stderr  # not zeros, and not a worker idling forever on an empty store
    assert "in-memory" in done.stderr and "Traceback" not in done.stderr


def test_cli_output_into_a_closed_pipe_ends_quietly() -> None:
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before the first line (`sitq plugins | head -0`)
    try:
        # block-buffered stdout, as in a plain shell (PYTHONUNBUFFERED hid the failure at exit: code 120)
        env = {key: value for key, value in os.environ.items() if key != "PYTHONUNBUFFERED"}
        done = subprocess.run(
            [sys.executable, "-m", "sitq", "plugins", "--all"],
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
    finally:
        os.close(write_end)
    assert done.returncode == 1
    assert "Traceback" not in done.stderr and "BrokenPipe" not in done.stderr, done.stderr


def test_cli_accepts_every_level_name_logging_knows() -> None:
    for level in ("warn", "FATAL", "notset", "info"):
        command = [sys.executable, "-m", "sitq", "--log-level", level, "backends", "--json"]
        subprocess.run(command, capture_output=True, text=True, check=True)


@pytest.mark.slow
def test_the_example_plugin_ships_py_typed(tmp_path: Path) -> None:
    """plugins.md tells backend authors to ship ``py.typed``; its own example package does (in its wheel)."""
    example = ROOT / "tests" / "plugins" / "sitq_dictstore"
    build = tmp_path / "sitq_dictstore"
    shutil.copytree(example, build, ignore=shutil.ignore_patterns("*.egg-info", "build", "__pycache__"))
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp_path), "."],
        cwd=build,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    (wheel,) = tmp_path.glob("sitq_dictstore-*.whl")
    assert "sitq_dictstore/py.typed" in zipfile.ZipFile(wheel).namelist()


@pytest.mark.parametrize("command", [["stats"], ["worker"]])
def test_cli_warns_that_a_backend_not_declaring_multi_process_may_be_a_store_of_its_own(
    command: list[str], tmp_path: Path
) -> None:
    """plugins.md showed `SITQ_BACKEND=dictstore:// sitq stats`: zeros from a store private to the command, unsaid."""
    env = {**os.environ, "SITQ_BACKEND": "dictstore://"}
    args = [sys.executable, "-m", "sitq", *command]
    if command == ["worker"]:
        worker = subprocess.Popen(args, env=env, stderr=subprocess.PIPE, text=True)
        assert worker.stderr is not None
        first = worker.stderr.readline()  # the warning comes before the worker starts
        worker.send_signal(signal.SIGTERM)
        _out, rest = worker.communicate(timeout=60)
        assert worker.returncode == 0, rest
    else:
        done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=60, check=True)
        first = done.stderr
        assert json.loads(subprocess.run([*args, "--json"], env=env, capture_output=True, text=True).stdout) == {
            "queued": 0,
            "running": 0,
            "success": 0,
            "failed": 0,
            "cancelled": 0,
        }
    assert "sitq: warning: the DictStoreBackend from SITQ_BACKEND does not declare Capability.MULTI_PROCESS" in first
    code = "import sitq, sys\nwith sitq.SyncTaskQueue(sys.argv[1]) as q:\n    q.enqueue(print, 1)\n"
    subprocess.run([sys.executable, "-c", code, f"sqlite:///{tmp_path / 'real.db'}"], check=True)
    shared = subprocess.run(
        [sys.executable, "-m", "sitq", "stats", "-b", f"sqlite:///{tmp_path / 'real.db'}"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "warning" not in shared.stderr  # SQLite declares MULTI_PROCESS
