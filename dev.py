#!/usr/bin/env python3
"""Set up the project's virtual environment and run its jobs; needs only Python 3.11+.

    python3 dev.py demo    # create/refresh .venv, then run the demo on a SQLite file
    python3 dev.py test    # create/refresh .venv, then ruff, mypy --strict and pytest
    python3 dev.py bench   # create/refresh .venv, then the side-by-side benchmark

Every package of the repository is installed in editable mode; the install is
skipped when no pyproject.toml changed since the last one.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
PY = BIN / "python"
EDITABLE = [
    "sitq_core",
    "sitq_sqlite",
    "sitq_postgres",
    ".[sqlite,postgres,msgpack,dev]",
    "tests/plugins/sitq_dictstore",
]
# Plain-path .pth files for every editable package: setuptools' default for the facade (a flat layout
# limited to packages=["sitq"]) is an import-hook finder, which works at run time but which type checkers
# (mypy, pyright) cannot follow, so a user's `mypy --strict` outside the checkout saw no `sitq` at all.
# "compat" puts the checkout's root on sys.path instead: after site-packages, and a folder there without
# __init__.py (tests/, docs/, sitq_core/ ...) is a namespace portion that never shadows a real package.
EDITABLE_MODE = ["--config-settings", "editable_mode=compat"]
PACKAGES = ["sitq", "sitq_core", "sitq_sqlite", "sitq_postgres"]  # checked by mypy --strict
STAMP = VENV / ".sitq-installed"


def log(message: str) -> None:
    print(f"[dev] {message}", flush=True)


def run(*args: str | Path, env: dict[str, str] | None = None) -> None:
    subprocess.run([str(a) for a in args], cwd=ROOT, check=True, env=env)


def fingerprint() -> str:
    digest = hashlib.sha256(" ".join(EDITABLE_MODE + EDITABLE).encode())  # a new install mode reinstalls
    for path in sorted(ROOT.glob("**/pyproject.toml")):
        if ".venv" in path.parts or "build" in path.parts:
            continue
        digest.update(str(path.relative_to(ROOT)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def ensure_venv() -> None:
    if sys.version_info < (3, 11):
        sys.exit(f"sitq needs Python 3.11 or newer; this is {sys.version.split()[0]}")
    if not PY.exists():
        log(f"creating virtual environment in {VENV}")
        venv.EnvBuilder(with_pip=True).create(VENV)
    wanted = fingerprint()
    if STAMP.exists() and STAMP.read_text() == wanted:
        return
    log("installing sitq, sitq-core, sitq-sqlite, sitq-postgres and the example plugin (editable)")
    args: list[str | Path] = [PY, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", *EDITABLE_MODE]
    for item in EDITABLE:
        args += ["-e", item if item.startswith(".") else f"./{item}"]
    run(*args)
    STAMP.write_text(wanted)


def demo(extra: list[str]) -> int:
    ensure_venv()
    return subprocess.run([str(PY), str(ROOT / "examples" / "demo.py"), *extra], cwd=ROOT).returncode


def test(extra: list[str]) -> int:
    ensure_venv()
    env = dict(os.environ, SITQ_STRICT_PLUGINS="1")
    log("ruff check")
    run(PY, "-m", "ruff", "check", ".", env=env)
    log("mypy --strict")
    run(PY, "-m", "mypy", "--strict", *(arg for package in PACKAGES for arg in ("-p", package)), env=env)
    log("pytest")
    return subprocess.run([str(PY), "-m", "pytest", *extra], cwd=ROOT, env=env).returncode


def bench(extra: list[str]) -> int:
    """Run bench/compare.py in bench/.venv: the repo's packages (editable) plus huey, which sitq never depends on."""
    bench_venv = ROOT / "bench" / ".venv"
    bench_py = bench_venv / ("Scripts" if os.name == "nt" else "bin") / "python"
    stamp = bench_venv / ".sitq-bench-installed"
    if sys.version_info < (3, 11):
        sys.exit(f"sitq needs Python 3.11 or newer; this is {sys.version.split()[0]}")
    if not bench_py.exists():
        log(f"creating the benchmark's virtual environment in {bench_venv}")
        venv.EnvBuilder(with_pip=True).create(bench_venv)
    wanted = fingerprint() + "+huey"
    if not (stamp.exists() and stamp.read_text() == wanted):
        log("installing sitq, sitq-core, sitq-sqlite, sitq-postgres (editable) and huey into the benchmark environment")
        pip: list[str | Path] = [bench_py, "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
        editable = ("./sitq_core", "./sitq_sqlite", "./sitq_postgres", ".[sqlite,postgres,msgpack]")
        run(*pip, *(arg for item in editable for arg in ("-e", item)))
        try:
            run(*pip, "huey")
            stamp.write_text(wanted)
        except subprocess.CalledProcessError:
            log("could not install huey: the benchmark runs with huey columns shown as n/a")
    return subprocess.run([str(bench_py), str(ROOT / "bench" / "compare.py"), *extra], cwd=ROOT).returncode


def main() -> int:
    jobs = {"demo": demo, "test": test, "bench": bench}
    if len(sys.argv) < 2 or sys.argv[1] not in jobs:
        print(__doc__)
        return 2
    try:
        return jobs[sys.argv[1]](sys.argv[2:])
    except subprocess.CalledProcessError as exc:
        return exc.returncode or 1


if __name__ == "__main__":
    sys.exit(main())
