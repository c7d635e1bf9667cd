"""``Worker.run()`` and an application's own SIGTERM/SIGINT handler set with ``signal.signal`` (uvicorn's).

run() chained only a handler added with ``loop.add_signal_handler``: one set
with ``signal.signal`` was saved and put back at the end but never called, so
under uvicorn the worker drained and stopped while the server kept serving.
Each case runs a real worker in its own process (the handlers are the
process's), signalling itself as a supervisor would.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

APP = """
import asyncio, logging, os, signal, sys
from sitq import TaskQueue, Worker

logging.basicConfig(level=logging.INFO, stream=sys.stderr)
db, mode = sys.argv[1], sys.argv[2]
heard = []

def app_handler(signum, frame):  # uvicorn's handle_exit: it takes (signum, frame)
    heard.append((signal.Signals(signum).name, frame is None or hasattr(frame, "f_code")))
    print("app handler: worker running:", worker.running, flush=True)
    if mode == "raises":
        raise RuntimeError("the app's handler failed")
    if mode == "exits":
        sys.exit(3)

signal.signal(signal.SIGTERM, app_handler)
signal.signal(signal.SIGINT, app_handler)

async def in_flight(marker):  # still running while the signals come
    open(marker, "w").close()
    await asyncio.sleep(120)

async def wait_for(predicate):
    for _ in range(3000):
        if predicate():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("timed out")

async def main():
    global worker
    worker = Worker("sqlite:///" + db, shutdown_timeout=60)
    async with TaskQueue(worker.backend) as queue:
        marker = db + ".started"
        await queue.enqueue(in_flight, marker)
        run = asyncio.create_task(worker.run())
        await wait_for(lambda: os.path.exists(marker))
        os.kill(os.getpid(), signal.SIGTERM)  # drains: the task is still running
        await wait_for(lambda: heard)
        print("draining:", not run.done(), flush=True)
        os.kill(os.getpid(), signal.SIGINT)  # stops at once
        try:
            await asyncio.wait_for(run, 60)
        finally:
            print("run returned:", not worker.running, flush=True)
            print("heard:", heard, flush=True)
            print(
                "restored:",
                signal.getsignal(signal.SIGTERM) is app_handler,
                signal.getsignal(signal.SIGINT) is app_handler,
                flush=True,
            )

asyncio.run(main())
"""


def run_app(tmp_path: Path, mode: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", APP, str(tmp_path / "app.db"), mode],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_run_calls_a_handler_the_app_set_with_signal_signal_on_each_signal(tmp_path: Path) -> None:
    done = run_app(tmp_path, "records")
    assert done.returncode == 0, (done.returncode, done.stdout, done.stderr[-3000:])
    assert "heard: [('SIGTERM', True), ('SIGINT', True)]" in done.stdout, (done.stdout, done.stderr[-3000:])
    assert "draining: True" in done.stdout, done.stdout  # the first signal drained, it did not stop the worker
    assert "run returned: True" in done.stdout, done.stdout
    assert "restored: True True" in done.stdout, done.stdout  # and put back once run() returned
    assert "SIGTERM received, draining" in done.stderr
    assert "second SIGINT, stopping now" in done.stderr


def test_a_handler_that_raises_is_logged_and_the_worker_still_drains(tmp_path: Path) -> None:
    done = run_app(tmp_path, "raises")
    assert done.returncode == 0, (done.returncode, done.stdout, done.stderr[-3000:])
    assert "heard: [('SIGTERM', True), ('SIGINT', True)]" in done.stdout, (done.stdout, done.stderr[-3000:])
    assert "run returned: True" in done.stdout, done.stdout
    assert done.stderr.count("RuntimeError: the app's handler failed") == 2, done.stderr[-3000:]
    assert "the application's SIGTERM handler" in done.stderr, done.stderr[-3000:]


def test_a_handler_that_exits_ends_the_program_once_the_worker_has_stopped(tmp_path: Path) -> None:
    """sys.exit() in the app's handler would have ended the program: it still does, after the worker's stop."""
    done = run_app(tmp_path, "exits")
    assert done.returncode == 3, (done.returncode, done.stdout, done.stderr[-3000:])
    assert "heard: [('SIGTERM', True), ('SIGINT', True)]" in done.stdout, (done.stdout, done.stderr[-3000:])
    assert "run returned: True" in done.stdout, done.stdout
    assert "restored: True True" in done.stdout, done.stdout
    assert " stopped (processed=" in done.stderr, done.stderr[-3000:]


PYTHON_SIGINT = """
import asyncio, os, signal, sys
from sitq import Worker

async def main():
    worker = Worker("sqlite:///" + sys.argv[1])
    run = asyncio.create_task(worker.run())
    while not worker.running:
        await asyncio.sleep(0.01)
    os.kill(os.getpid(), signal.SIGINT)
    await asyncio.wait_for(run, 60)
    print("run returned", flush=True)

if sys.argv[2] == "asyncio.run":  # its own SIGINT handler cancels the main task
    asyncio.run(main())
else:  # Python's default_int_handler raises KeyboardInterrupt
    asyncio.new_event_loop().run_until_complete(main())
print("exits normally", flush=True)
"""


@pytest.mark.parametrize("runner", ["asyncio.run", "run_until_complete"])
def test_python_and_asyncio_sigint_handlers_are_not_called(tmp_path: Path, runner: str) -> None:
    """They are not the application's shutdown: calling them would cut the drain short with a KeyboardInterrupt."""
    done = subprocess.run(
        [sys.executable, "-c", PYTHON_SIGINT, str(tmp_path / "app.db"), runner],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, (done.returncode, done.stdout, done.stderr[-3000:])
    assert done.stdout.splitlines() == ["run returned", "exits normally"], (done.stdout, done.stderr[-3000:])
