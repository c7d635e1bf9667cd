"""The ``sitq`` command: list plugins and backends, run a worker, show queue counts, manage tasks (cli_tasks).

``python -m sitq`` runs the same command.
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import contextlib
import importlib
import importlib.util
import inspect
import io
import json
import logging
import os
import select
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, NoReturn, TextIO

from . import __version__, checks, cli_numbers, cli_tasks, forks
from .backend import Backend, Capability, reading_only
from .cli_imports import raised_where
from .config import (
    DEFAULT_BACKEND_URL,
    FROM_VARIABLE,
    build_serializer,
    named_as_registered,
    resolve_backend,
    split_config,
)
from .errors import (
    BackendError,
    BrokenPluginError,
    ConfigurationError,
    SitqError,
    ValidationError,
    describe_exception,
)
from .errors import ConnectionError as StoreConnectionError
from .install_hints import checkout_folder
from .plugin_manager import KNOWN_PLUGINS, PluginRecord, SitqPluginManager, strict_plugins
from .plugins import get_plugin_manager
from .queue import TaskQueue
from .registry import Registry, RegistryEntry, conflict_text, load_failure_text
from .serializers import Serializer, function_path
from .task_paths import PathRefused, not_a_function, walk
from .worker import Worker

__all__ = ["main"]

logger = logging.getLogger("sitq.cli")

_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
#: Worker parameters and the ``sitq worker`` flags that set them (errors name the flag)
_WORKER_FLAGS = {
    "max_concurrency": "--concurrency",
    "poll_interval": "--poll-interval",
    "lease_timeout": "--lease-timeout",
    "prefetch": "--prefetch",
    "shutdown_timeout": "--shutdown-timeout",
    "batch_window": "--batch-window",
    "queues": "--queues/--queue",
    "serializer": "--serializer",
    "allow_task": "--allow-task",
}


class _BackendSourceError(Exception):
    """A sitq error about the store a command was pointed at, said with the flag or variable that named it."""

    def __init__(self, error: SitqError, given: str | None) -> None:
        super().__init__(_backend_error_line(error, given))
        self.error = error


class _OutputFailed(Exception):
    """Standard output cannot be written (a full disk, a closed descriptor): the command says so and exits 1."""


def _out(stream: TextIO | None, text: str = "") -> None:
    """Write ``text`` and a newline whole, or raise: BrokenPipeError when the reader left, else _OutputFailed.

    A character the stream's encoding lacks is written escaped (``\\xe9``) rather than failing the output.
    """
    if stream is None:  # `sitq backends >&-`: Python gives no sys.stdout at all
        raise _OutputFailed("standard output is closed")
    line = _encodable(stream, text + "\n")
    try:
        raw = _unbuffered_raw(stream)
        if raw is None:
            stream.write(line)
        else:
            stream.flush()  # whatever the text layer still holds goes first
            _write_all(raw, line.encode(stream.encoding, stream.errors or "strict"))
    except BrokenPipeError:  # the reader left: main says nothing more
        raise
    except (OSError, ValueError) as exc:  # ENOSPC (> /dev/full), EIO, a closed stream
        raise _OutputFailed(_write_failure(exc)) from exc


def _encodable(stream: TextIO, text: str) -> str:
    """``text`` with what ``stream``'s encoding cannot hold escaped (PYTHONIOENCODING=ascii: ``\\xe9``)."""
    encoding = getattr(stream, "encoding", None)
    if not isinstance(encoding, str) or getattr(stream, "errors", "strict") != "strict":
        return text  # a StringIO holds anything; an errors= handler of the user's choice stays theirs
    try:
        text.encode(encoding)
    except UnicodeEncodeError:
        return text.encode(encoding, "backslashreplace").decode(encoding)
    except LookupError:
        pass
    return text


def _unbuffered_raw(stream: TextIO) -> io.RawIOBase | None:
    """The raw file under an unbuffered text stream (PYTHONUNBUFFERED=1, ``python -u``), else None.

    Its text layer writes straight to the raw file and drops the rest of a
    short write (a pipe takes 64 KiB of 142 KiB: the rest was lost, exit 0).
    """
    raw = getattr(stream, "buffer", None)
    return raw if isinstance(raw, io.RawIOBase) else None


def _write_all(raw: io.RawIOBase, data: bytes) -> None:
    """Write ``data`` to ``raw`` whole, one short write after another (what a BufferedWriter does)."""
    view = memoryview(data)
    while view:
        written = raw.write(view)
        if written is None:  # a non-blocking descriptor that is full: wait until it takes more
            select.select([], [raw.fileno()], [])
            continue
        view = view[written:]


def _flush(stream: TextIO | None) -> None:
    """Write out what ``stream`` still buffers (stdout into a pipe or file is block-buffered), as ``_out`` writes."""
    if stream is None:
        return
    try:
        stream.flush()
    except BrokenPipeError:
        raise
    except (OSError, ValueError) as exc:
        raise _OutputFailed(_write_failure(exc)) from exc


def _write_failure(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return f"{exc.strerror} (errno {exc.errno})"
    return str(exc) or type(exc).__name__


class _Parser(argparse.ArgumentParser):
    """argparse's parser, except that ``--help`` output that cannot be written is an error, as for any command.

    argparse ignores a failed write (``sitq --help > /dev/full`` exited 0 having
    printed nothing) and leaves buffered help to the interpreter's exit.
    """

    def error(self, message: str) -> NoReturn:
        """A usage error: this command's usage, then ``sitq: error: ...`` as every error of the command says it."""
        self.print_usage(sys.stderr)
        self.exit(2, f"sitq: error: {message}\n")

    def print_help(self, file: Any = None) -> None:  # typeshed: SupportsWrite[str] | None
        if file is not None:  # the help on stderr, after a usage error
            super().print_help(file)
            return
        _out(sys.stdout, self.format_help().rstrip("\n"))
        _flush(sys.stdout)


def _backend_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--backend",
        "-b",
        default=None,
        metavar="URL",
        help=f"backend URL or name (default: $SITQ_BACKEND, else {DEFAULT_BACKEND_URL})",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="sitq", description="sitq task queue")
    parser.add_argument("--version", action="store_true", help="print versions of sitq and its plugins")
    parser.add_argument(
        "--log-level",
        default=os.environ.get("SITQ_LOG_LEVEL", "WARNING"),
        metavar="LEVEL",
        help="DEBUG, INFO, WARNING, ERROR or CRITICAL; before or after the command; "
        "default: $SITQ_LOG_LEVEL, else WARNING",
    )
    # The same two flags after the command (sitq worker -b ... --log-level INFO, sitq stats --version), with the
    # same meaning: they failed with 'unrecognized arguments'. SUPPRESS: left out there, the value given before
    # the command (or the default) stays; given both places, the later one wins.
    common = _Parser(add_help=False)
    common.add_argument(
        "--version", action="store_true", default=argparse.SUPPRESS, help="as sitq --version: print versions and exit"
    )
    common.add_argument(
        "--log-level",
        default=argparse.SUPPRESS,
        metavar="LEVEL",
        help="as sitq --log-level: DEBUG, INFO, WARNING, ERROR or CRITICAL (default: $SITQ_LOG_LEVEL, else WARNING)",
    )
    sub = parser.add_subparsers(dest="command")

    def command(name: str, help_text: str) -> argparse.ArgumentParser:
        made = sub.add_parser(name, help=help_text, parents=[common])
        made.set_defaults(command_parser=made)  # its own usage for arguments it does not take
        return made

    plugins = command("plugins", "list installed plugins and their status")
    plugins.add_argument("--all", action="store_true", help="include sitq's built-in plugins")
    plugins.add_argument("--json", action="store_true", help="machine-readable output")

    backends = command("backends", "list backends and serializers that can be chosen by name")
    backends.add_argument("--json", action="store_true", help="machine-readable output")

    worker = command("worker", "run a worker until SIGINT/SIGTERM")
    _backend_arg(worker)
    worker.add_argument(
        "--concurrency",
        "-c",
        type=cli_numbers.whole_number,
        default=1,
        help="tasks run at once, 1..1000 (default: %(default)s)",
    )
    worker.add_argument(
        "--queues",
        "-q",
        action="append",
        default=None,
        help="comma-separated queue names (repeatable; the names add up); tasks enqueued without one are in "
        "'default' (default: all)",
    )
    worker.add_argument(
        "--queue",
        dest="queue_list",
        action="append",
        default=None,
        metavar="NAME",
        help="one queue name taken as written, for names with commas or spaces (repeatable; adds to --queues)",
    )
    worker.add_argument(
        "--serializer",
        "-s",
        default=None,
        metavar="NAME",
        help="run tasks of this serializer only: a task another one wrote fails, never unpickled (give each "
        "serializer its own queues)",
    )
    worker.add_argument(
        "--allow-task",
        dest="allowed_tasks",
        action="append",
        default=None,
        metavar="MODULE:FUNCTION",
        help="with -s msgpack: call only these functions (repeatable); each must import at start",
    )
    worker.add_argument(
        "--lease-timeout",
        type=cli_numbers.seconds,
        default=30.0,
        help="seconds a lease lasts without renewal (default: %(default)s)",
    )
    worker.add_argument(
        "--prefetch",
        type=cli_numbers.whole_number,
        default=None,
        help="tasks reserved ahead of free slots (default: adaptive)",
    )
    worker.add_argument(
        "--batch-window",
        type=cli_numbers.seconds,
        default=None,
        help="seconds between commits while keeping up with producers (default: adaptive; 0: commit at once)",
    )
    worker.add_argument(
        "--poll-interval",
        type=cli_numbers.seconds,
        default=1.0,
        help="longest idle sleep, in seconds (default: %(default)s)",
    )
    worker.add_argument(
        "--shutdown-timeout",
        type=cli_numbers.seconds,
        default=30.0,
        help="seconds running tasks may take after a signal (default: %(default)s)",
    )
    worker.add_argument(
        "--import",
        "-i",
        dest="imports",
        action="append",
        default=[],
        metavar="MODULE",
        help="module holding task functions, imported at start (repeatable; a module name, as for python -m)",
    )

    stats = command("stats", "show task counts per status")
    _backend_arg(stats)
    stats.add_argument("--json", action="store_true", help="machine-readable output")
    stats.add_argument("--queue", metavar="NAME", default=None, help="count only this queue's tasks (default: all)")
    cli_tasks.add_commands(command, _backend_arg)
    return parser


def main(argv: Sequence[str] | None = None, *, stdout: TextIO | None = None) -> int:
    """Entry point of the ``sitq`` console script; returns the exit code."""
    out = stdout or sys.stdout
    parser = build_parser()
    misplaced = _backend_before_command(list(sys.argv[1:] if argv is None else argv))
    if misplaced is not None:  # argparse took the URL for the command: "invalid choice: 'sqlite:///x.db'"
        parser.error(misplaced)
    try:
        args, unknown = parser.parse_known_args(argv)  # --help prints and exits here
    except BrokenPipeError:
        return _reader_left()
    except _OutputFailed as exc:
        return _output_failed(exc)
    if unknown:  # parse_args said so with the usage of 'sitq', not of the command given ('sitq stats --bogus')
        getattr(args, "command_parser", parser).error(f"unrecognized arguments: {' '.join(unknown)}")
    level = str(args.log_level).upper()
    if not isinstance(logging.getLevelName(level), int):  # DEBUG ... CRITICAL, also WARN, FATAL, NOTSET
        given_as = "--log-level" if _flag_given(argv, "--log-level") else "SITQ_LOG_LEVEL"
        sys.stderr.write(
            f"sitq: error: {given_as}: unknown level {args.log_level!r}; expected one of {', '.join(_LOG_LEVELS)}\n"
        )
        return 2
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        code = _dispatch(args, out)
        # what is still buffered goes now (stdout into a pipe is block-buffered): a reader that left is
        # met here, not at the interpreter's exit, which printed "Exception ignored ... BrokenPipeError"
        # and ended with code 120
        _flush(out)
        return code
    except BrokenPipeError:  # `sitq backends | head -1`: the reader left; say nothing more
        return _reader_left()
    except _OutputFailed as exc:  # `sitq backends > /dev/full`: one line saying so, not a traceback
        return _output_failed(exc)


_COMMANDS = ("plugins", "backends", "worker", "stats", *cli_tasks.COMMANDS)


def _backend_before_command(given: list[str]) -> str | None:
    """What to say of ``-b``/``--backend`` given before the command (``sitq -b URL stats``); None when it is not."""
    for index, arg in enumerate(given):
        if arg in _COMMANDS or arg == "--":
            return None
        name, equals, value = arg.partition("=")
        if arg == "-b" or (len(name) > 3 and "--backend".startswith(name)):
            value = value if equals else (given[index + 1] if index + 1 < len(given) else "URL")
            rest = given[index + (1 if equals else 2) :]
        elif arg.startswith("-b") and not arg.startswith("--"):  # -bsqlite:///x.db
            value, rest = arg[2:], given[index + 1 :]
        else:
            continue
        command = next((word for word in rest if word in _COMMANDS), None)
        if command is None:
            example = f"sitq worker -b {value} or sitq stats -b {value}"
        elif command in ("worker", "stats", *cli_tasks.COMMANDS):
            example = f"sitq {command} -b {value}"
        else:
            return f"-b/--backend is an option of the commands that open a store, not of sitq {command}"
        return f"-b/--backend goes after the command name: {example}"
    return None


def _reader_left() -> int:
    """Exit code 1 for output whose reader left, with stdout pointed at /dev/null for the interpreter's exit."""
    _drop_stdout()
    return 1


def _output_failed(exc: _OutputFailed) -> int:
    with contextlib.suppress(OSError, ValueError, AttributeError):  # stderr may be gone as well
        sys.stderr.write(f"sitq: error: cannot write output: {exc}\n")
    _drop_stdout()
    return 1


def _drop_stdout() -> None:
    """Send what stdout still buffers to /dev/null, so that the interpreter's exit does not fail on it again."""
    with contextlib.suppress(OSError, ValueError, AttributeError):
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def _dispatch(args: argparse.Namespace, out: TextIO) -> int:
    try:
        if args.version:
            return _version(out)
        if args.command == "plugins":
            return _plugins(out, include_builtin=args.all, as_json=args.json)
        if args.command == "backends":
            return _backends(out, as_json=args.json)
        if args.command == "worker":
            return _worker(args)
        if args.command == "stats":
            return _stats_command(out, args.backend, as_json=args.json, queue=_stats_queue(args.queue))
        if args.command in cli_tasks.COMMANDS:
            return cli_tasks.run(args, out)
    except _BackendSourceError as exc:  # the flag or variable first, then the message, without its context dump
        if isinstance(exc.error, BrokenPluginError) and strict_plugins():
            traceback.print_exception(exc.error, file=sys.stderr)
        sys.stderr.write(f"sitq: error: {exc}\n")
        return 2
    except SitqError as exc:
        if isinstance(exc, BrokenPluginError) and strict_plugins():
            traceback.print_exception(exc, file=sys.stderr)  # what the error's hint promises
        # its message: the "(context: ...)" that str() adds is for logs, and no other error line shows one
        sys.stderr.write(f"sitq: error: {exc.message}\n")
        return 2
    # no command: a usage error, as an unknown one is (argparse exits 2); the help says what there is
    build_parser().print_help(sys.stderr)
    sys.stderr.write("sitq: error: a command is required\n")
    return 2


def _version(out: TextIO) -> int:
    _out(out, f"sitq {__version__}")
    manager = get_plugin_manager()
    manager.load_targets()  # a plugin installed without its driver is broken, not ok (as in sitq plugins)
    records = manager.plugin_records()
    if records:
        _out(out, "registered plugins:")
        for record in records:
            status = record.status if record.error is None else f"{record.status}: {record.error_line()}"
            _out(out, f"  {record.dist or record.name}-{record.version or '?'} ({record.name}, {status})")
    return 0


def _plugins(out: TextIO, *, include_builtin: bool, as_json: bool) -> int:
    # the diagnosis tool lists a broken plugin as 'broken' even under SITQ_STRICT_PLUGINS=1
    manager = SitqPluginManager(strict=False)
    manager.load_targets()  # a backend whose target fails to import (its driver missing) makes its plugin broken
    records = manager.plugin_records(include_builtin=include_builtin)
    if as_json:
        _out(out, json.dumps([r.as_dict() for r in records], indent=2, sort_keys=True))
        return 0
    if not records:
        _out(out, "no plugins installed")
        return 0
    # columns as wide as their longest entry, as in `sitq backends`
    name_width = max([14, *(len(record.name) for record in records)])
    wheres = [f"{record.dist or '-'} {record.version or '-'}" for record in records]
    where_width = max([24, *(len(where) for where in wheres)])
    for record, where in zip(records, wheres, strict=True):
        # one line per plugin: a multi-line error (pluggy's validation errors) is joined; --json and the log keep it
        status = record.status if record.error is None else f"{record.status}: {record.error_line()}"
        provides = ", ".join(
            [f"backend {b}" for b in sorted(record.backends)] + [f"serializer {s}" for s in sorted(record.serializers)]
        )
        _out(out, f"{record.name:<{name_width}} {where:<{where_width}} {status}")
        if provides:
            _out(out, f"{'':<{name_width}} provides: {provides}")
        observes = [hook for hook in record.hooks if not hook.startswith("sitq_register_")]
        if observes:  # an observer-only plugin showed nothing of what it does
            _out(out, f"{'':<{name_width}} observes: {', '.join(observes)}")
        for warning in record.warnings:  # the plugin works, so its status stays ok; the mistake is still shown
            _out(out, f"{'':<{name_width}} warning: {warning}")
    return 0


def _listed_description(kind: str, entry: RegistryEntry[Any]) -> str:
    """The entry's description, or why choosing it fails now (two plugins answer to its name, or it is broken)."""
    if entry.status == "conflict":  # a clash over an extra URL scheme refuses that scheme only, not the name
        return f"CONFLICT, cannot be chosen: {conflict_text(kind, entry, entry.name)}"
    if entry.broken is not None:  # a registered class that failed its checks at registration
        return f"BROKEN, cannot be chosen: {entry.broken.message}"
    failed = load_failure_text(entry)
    if failed is not None:  # its target failed to import (a driver missing) or failed its checks once imported
        return f"installed but failed to load: {failed}"
    if kind == "serializer" and entry.name == "msgpack" and importlib.util.find_spec("msgpack") is None:
        return "not installed: needs the msgpack package: pip install msgpack"
    return entry.description


def _backends(out: TextIO, *, as_json: bool) -> int:
    manager = get_plugin_manager()
    # every target imported now (a CLI command may): sitq-postgres without asyncpg is listed as failed to load,
    # not as a backend that fails only once a command chooses it
    manager.load_targets()
    rows: list[dict[str, Any]] = []
    for entry in manager.backends.entries():
        rows.append(
            {
                "kind": "backend",
                "name": entry.name,
                "schemes": [entry.name, *entry.aliases],
                "dist": entry.provider.dist,
                "version": entry.provider.version,
                "description": _listed_description("backend", entry),
                "installed": True,
                "conflict": entry.status == "conflict",
                "conflicting_schemes": entry.contested_schemes,
                "broken": entry.status == "broken",
            }
        )
    for name, (dist, extra) in sorted(KNOWN_PLUGINS.items()):
        if manager.backends.entry(name) is None and not any(r["dist"] == dist for r in rows):
            record = manager.known_record(name)
            if record is not None and record.status == "disabled":
                description = f"installed but disabled by {record.disabled_by}"
            elif record is not None and record.status == "broken":
                description = f"installed but failed to load: {record.error_line()}"
            else:
                where = f"from a source checkout: pip install {checkout_folder(dist)}"
                record, description = None, f"not installed: pip install '{extra}' ({where})"
            rows.append(
                {
                    "kind": "backend",
                    "name": name,
                    "schemes": [name],
                    "dist": dist,
                    "version": record.version if record is not None else None,
                    "description": description,
                    "installed": record is not None,
                    "conflict": False,
                    "conflicting_schemes": [],
                    "broken": record is not None and record.status == "broken",
                }
            )
    for serializer_entry in manager.serializers.entries():
        rows.append(
            {
                "kind": "serializer",
                "name": serializer_entry.name,
                "schemes": [],
                "dist": serializer_entry.provider.dist,
                "version": serializer_entry.provider.version,
                "description": _listed_description("serializer", serializer_entry),
                "installed": True,
                "conflict": serializer_entry.status == "conflict",
                "conflicting_schemes": [],
                "broken": serializer_entry.status == "broken",
            }
        )
    for plugin in manager.unknown_disabled_plugins():
        # never imported, so what it would register is unknown: it is listed as what it is, a plugin, and
        # not as a backend named after its entry point (it may provide only a serializer, or nothing)
        description = (
            f"installed but disabled by {plugin.disabled_by}: what it provides is not known until it is enabled"
        )
        rows.append(_plugin_row(plugin, description, broken=False))
    for plugin in _broken_plugins_not_listed(manager, rows):
        # what it provides is unknown or only partly registered: listed as the plugin, with why it failed,
        # rather than only as a WARNING on stderr (a sitq plugin whose name sitq knows is listed above)
        registered = plugin.backends or plugin.serializers
        description = (
            f"installed but {'not loaded' if plugin.shadowed_by else 'failed to load'}: "
            f"{plugin.error_line()}{'' if registered else ' (what it provides is not known)'}"
        )
        rows.append(_plugin_row(plugin, description, broken=True))
    if as_json:
        _out(out, json.dumps(rows, indent=2, sort_keys=True))
        return 0
    name_width = max([12, *(len(row["name"]) for row in rows)])
    wheres = [f"{row['dist'] or '-'} {row['version'] or ''}".strip() for row in rows]
    where_width = max([24, *(len(where) for where in wheres)])
    for row, where in zip(rows, wheres, strict=True):
        _out(out, f"{row['kind']:<11} {row['name']:<{name_width}} {where:<{where_width}} {row['description']}")
        extra = row["schemes"][1:]  # the name is the first scheme; the others are names to choose it by too
        listed = manager.backends.entry(row["name"]) if row["kind"] == "backend" else None
        contested = [scheme for scheme in extra if listed is not None and listed.clashes_over(scheme)]
        usable = [scheme for scheme in extra if scheme not in contested]
        indent = f"{'':<11} {'':<{name_width}}"
        if usable:
            _out(out, f"{indent} also as URL schemes: {', '.join(usable)}")
        if listed is not None:  # one line per contested scheme: who else answers to it and how to settle it
            for scheme in contested:
                clash = conflict_text("backend", listed, scheme)
                _out(out, f"{indent} URL scheme {scheme}: CONFLICT, cannot be chosen: {clash}")
    return 0


def _plugin_row(plugin: PluginRecord, description: str, *, broken: bool) -> dict[str, Any]:
    """A ``sitq backends`` row for a plugin itself (disabled, or failed to load), not for a name it registers."""
    return {
        "kind": "plugin",
        "name": plugin.name,
        "schemes": [],
        "dist": plugin.dist,
        "version": plugin.version,
        "description": description,
        "installed": True,
        "conflict": False,
        "conflicting_schemes": [],
        "broken": broken,
    }


def _broken_plugins_not_listed(manager: SitqPluginManager, rows: list[dict[str, Any]]) -> list[PluginRecord]:
    """Installed plugins that failed to load and whose failure no row of ``sitq backends`` shows yet.

    A plugin with a name of its own listed as broken (a class that failed its checks, a target that
    failed to import) is shown by that row; one of sitq's own distributions, by its known name's row.
    """
    registries: tuple[Registry[Any], ...] = (manager.backends, manager.serializers)
    shown = {entry.provider.plugin for registry in registries for entry in registry.entries() if entry.status != "ok"}
    shown_dists = {row["dist"] for row in rows if row["broken"] and row["kind"] == "backend" and row["dist"]}
    return [
        record
        for record in manager.plugin_records()
        if record.status == "broken"
        and record.name not in shown
        and not (record.dist in shown_dists and manager.known_record(_entry_point_of(record)) is record)
    ]


def _entry_point_of(record: PluginRecord) -> str:
    """The entry-point name of a record (a second provider's record is named ``"x (its-dist)"``)."""
    return record.name.removesuffix(f" ({record.dist})") if record.dist is not None else record.name


def _worker(args: argparse.Namespace) -> int:
    _SIGNALS.register()
    previous = _leave_on_early_signals()  # until the worker's own handlers are in place
    code = 1
    try:
        code = _run_worker(args)
        return code
    finally:
        for signum, handler in previous.items():
            with contextlib.suppress(ValueError, OSError, TypeError):
                if handler in (signal.default_int_handler, signal.SIG_DFL):
                    # the process's own defaults (sitq worker as a command): everything is done, so a
                    # signal from here to the exit ends it at once with its code (the default would end it
                    # by the signal, -2, or print a traceback from an exit hook it interrupted); from the
                    # exit hooks on, where Python handlers no longer run, it is ignored
                    _set_handler(signum, _exit_at_once(lambda: code))
                    atexit.register(signal.signal, signum, signal.SIG_IGN)
                else:
                    signal.signal(signum, handler)


# The command's own SIGINT/SIGTERM handlers (around Worker.run's): a child forked by a task, also one still
# running after the worker stopped, gets back the handlers from before them (forks.py)
_SIGNALS = forks.SignalSetup()


def _set_handler(signum: int, handler: Callable[[int, object], None]) -> Any:
    """``signal.signal(signum, handler)``, recorded so that forked children undo it; returns the previous one."""
    previous = signal.signal(signum, handler)
    _SIGNALS.installed(signum, handler, previous)
    return previous


def _exit_at_once(code: Callable[[], int]) -> Callable[[int, object], None]:
    """A signal handler that ends the process with ``code()`` now (what is left to do at exit is skipped)."""

    def leave(_signum: int, _frame: object) -> None:
        with contextlib.suppress(Exception):
            logging.shutdown()
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code())

    return leave


def _import_path_hint(module: str) -> str:
    """For ``--import`` given a path (``mytasks.py``, ``./mytasks.py``, ``/srv/app/mytasks``, ``shop/``): the
    module name to pass instead, and where it must be importable from; "" for anything else."""
    path_like = module.endswith(".py") or "/" in module or "\\" in module
    if not path_like:
        return ""
    trimmed = module.replace("\\", "/").rstrip("/")
    trimmed = trimmed[:-3] if trimmed.endswith(".py") else trimmed
    parts = trimmed.split("/")
    name = parts[-1]
    relative = not os.path.isabs(module) and all(p and p not in (".", "..", "~") and ":" not in p for p in parts)
    if relative and all(p.isidentifier() for p in parts):
        # tasks.py or pkg/tasks.py, relative to the working directory (on sys.path): the dotted name imports
        return f" (--import takes a module name, as for python -m: --import {'.'.join(parts)})"
    folder = os.path.dirname(trimmed) or "."
    return (
        f" (--import takes a module name, as for python -m, not a path: --import {name}, run from the folder "
        f"that holds {name} ({folder}) or put that folder on PYTHONPATH)"
    )


def _run_worker(args: argparse.Namespace) -> int:
    try:
        sys.path.insert(0, os.getcwd())  # like python -m: tasks defined next to the caller import
    except FileNotFoundError:  # deleted under us: an absolute backend URL and installed task modules still work
        if args.imports:  # without --import there is nothing the warning would explain
            logger.warning("the working directory no longer exists (it was deleted): --import looks only in sys.path")
    for module in args.imports:
        if module.startswith("."):  # importlib would take it for a relative import and raise a TypeError
            sys.stderr.write(
                f"sitq: error: --import {module}: a module name cannot start with '.' (that is a relative import, "
                f"which needs a package){_import_path_hint(module)}\n"
            )
            return 2
        try:
            importlib.import_module(module)
        except _LeaveNow:
            raise
        except (Exception, SystemExit) as exc:  # sys.exit() at import (a settings check) is a failed import too
            logger.debug("importing %s failed", module, exc_info=True)
            hint = _import_path_hint(module) if isinstance(exc, ModuleNotFoundError) else ""
            where = raised_where(exc)
            sys.stderr.write(
                f"sitq: error: --import {module}: cannot import it: {describe_exception(exc)}{where}{hint}\n"
            )
            return 2
    queues: list[str] | None = None
    for given in args.queues or ():  # given, even empty: an unset variable must not mean "every queue"
        names = [name.strip() for name in given.split(",")]
        if not all(names):
            sys.stderr.write(f"sitq: error: --queues must be comma-separated non-empty queue names, got {given!r}\n")
            return 2
        queues = [*(queues or []), *names]  # -q mail -q reports: both, as --queue and --import add up
    if args.queue_list is not None:  # verbatim: a queue whose name holds a comma or spaces is servable too
        if not all(args.queue_list):
            sys.stderr.write("sitq: error: --queue must be a non-empty queue name, got ''\n")
            return 2
        queues = [*(queues or []), *args.queue_list]
    backend = _command_backend(args.backend)
    if _private_to_this_process(backend):
        sys.stderr.write(f"sitq: error: {_private_store_text(backend, args.backend)}\n")
        return 2
    _warn_if_maybe_private(backend, args.backend)
    try:
        chosen = args.serializer if args.serializer is not None else split_config(args.backend)[2]  # ?serializer=
        serializer = _worker_serializer(chosen, args.allowed_tasks)
        worker = Worker(
            backend,
            serializer=serializer,
            max_concurrency=args.concurrency,
            poll_interval=args.poll_interval,
            queues=queues,
            lease_timeout=args.lease_timeout,
            prefetch=args.prefetch,
            shutdown_timeout=args.shutdown_timeout,
            batch_window=args.batch_window,
        )
    except (ValidationError, ConfigurationError) as exc:  # name the flag the user typed, not the Python parameter
        flag = _WORKER_FLAGS.get(exc.parameter or "")
        if flag == "--serializer" and args.serializer is None:  # the serializer came from the URL, not from -s
            flag = _url_serializer_flag(args.backend)
        if flag is None or isinstance(exc, BrokenPluginError):  # a broken plugin's traceback is main's to show
            raise
        message = exc.message.replace(FROM_VARIABLE, "")  # the flag names the variable first
        sys.stderr.write(f"sitq: error: {_in_flag_terms(message, exc.parameter or '', flag)}\n")
        return 2

    async def run() -> None:
        code = 0
        # what run() restores once the drain is over: a late second signal has nothing left to cut short,
        # so it ends the process at once (asyncio.run's own SIGINT handler would turn it into a
        # KeyboardInterrupt traceback while the store closes)
        _exit_on_stop_signals(lambda: code)
        try:
            await worker.run()
        except SitqError:
            code = 2
            raise
        except BaseException:
            code = 1
            raise
        finally:
            await _close_within(worker.backend, _CLOSE_TIMEOUT, lambda: code)
            await _exit_now_if_async_tasks_are_stuck(code)

    code = 0
    start_line = _StartLine.shown()  # after the imports: a task module's own logging setup is in place by now
    try:
        asyncio.run(run())
    except SitqError as exc:  # e.g. the worker stopped after an internal error
        shown = _backend_error_line(exc, args.backend) if _is_connect_error(exc) else str(exc.message)
        sys.stderr.write(f"sitq: error: {shown}\n")
        code = 2
    except Exception:
        logger.exception("the worker failed")
        code = 1
    finally:
        if start_line is not None:
            start_line.remove()
    _exit_now_if_task_threads_are_stuck(code, worker._left_running_because)
    return code  # _worker sets the handlers for the rest of the process's life


class _StartLine(logging.Filter):
    """Shows the worker's INFO line saying it started (``worker ID started on BACKEND (max_concurrency=N,
    queues=...)``) at the command's default level, WARNING, where ``sitq worker`` printed nothing at all: a
    user could not tell that it had connected (Celery prints a banner, RQ and arq a start line).

    Until that line is logged, ``sitq.worker`` takes INFO records and this filter drops every other one below
    the level the logger had; once it is, the logger gets its level back, so the steady state stays as silent
    as before and costs what it did. At INFO and below the line shows anyway, and above WARNING
    (``--log-level ERROR``) less was asked for: no filter then.
    """

    _MESSAGE = "worker %s started on "  # the start of the line's format (sitq_core/_worker/lifecycle.py)

    def __init__(self, log: logging.Logger, below: int) -> None:
        super().__init__()
        self._log, self._below, self._saved, self._done = log, below, log.level, False
        log.setLevel(logging.INFO)
        log.addFilter(self)

    @classmethod
    def shown(cls) -> _StartLine | None:
        """Installed on ``sitq.worker`` when its level hides the line but is no higher than WARNING."""
        log = logging.getLogger("sitq.worker")
        level = log.getEffectiveLevel()
        return cls(log, level) if logging.INFO < level <= logging.WARNING else None

    def filter(self, record: logging.LogRecord) -> bool:
        if self._done or record.levelno >= self._below:
            return True
        if record.levelno == logging.INFO and isinstance(record.msg, str) and record.msg.startswith(self._MESSAGE):
            self._step_aside()
            return True
        return False

    def _step_aside(self) -> None:
        """The logger's own level back (unless someone set another meanwhile); the filter lets all through."""
        if not self._done:
            self._done = True
            if self._log.level == logging.INFO:
                self._log.setLevel(self._saved)

    def remove(self) -> None:
        """Gone from the logger, its level back: the worker has stopped (or never started)."""
        self._step_aside()
        self._log.removeFilter(self)


#: The longest ``sitq worker`` waits for its store to close after the worker stopped (docs/how-to/workers.md)
_CLOSE_TIMEOUT = 5.0


async def _close_within(backend: Backend, timeout: float, code: Callable[[], int]) -> None:
    """Close ``backend``, or leave the process with ``code()`` when that takes longer than ``timeout`` seconds.

    A store call still retrying under a lock another process holds (SQLite's
    ``busy_timeout``, maybe an hour) kept the process waiting for it after the
    worker had stopped; the tasks are given back by then, so nothing is lost
    by not waiting. The close is not cancelled: a close cut in half could
    leave less behind than one left to finish while the process exits.
    """
    closing = asyncio.ensure_future(backend.close())
    done, _ = await asyncio.wait({closing}, timeout=timeout)
    if done:
        closing.result()  # its own error, as before
        return
    threads = sorted(  # the store's own threads (sitq-sqlite:tasks.db); task threads are reported on their own
        thread.name
        for thread in threading.enumerate()
        if thread is not threading.current_thread() and not thread.name.startswith("sitq-task")
    )
    logger.warning(
        "closing the store (%s) did not finish within %g s after the worker stopped: leaving without waiting for "
        "it; threads still running: %s (a store call may be waiting for a lock another process holds, for up to "
        "its busy timeout)",
        type(backend).__name__,
        timeout,
        ", ".join(threads[:10]) + (", ..." if len(threads) > 10 else "") if threads else "none",
    )
    _exit_now(code())


#: Parts of a Worker argument error that only Python code can give (None: the flag left out)
_PYTHON_ONLY_CHOICES = ("None or ", "a Serializer instance or ")


def _url_serializer_flag(given: str | None) -> str:
    """How an error names a serializer that the backend URL's ``?serializer=`` chose."""
    return f"{'--backend' if given is not None else 'SITQ_BACKEND'} (its ?serializer=)"


def _in_flag_terms(message: str, parameter: str, flag: str) -> str:
    """A Worker argument error as a shell user reads it: the flag, not the parameter; no None to type.

    ``batch_window must be None or a number of seconds from 0 to 1, got 2.0``
    becomes ``--batch-window must be a number of seconds from 0 to 1, got 2.0``
    (None is the flag left out).
    """
    if message.startswith(flag):
        return message
    if parameter and message.startswith(parameter + " must "):
        message = flag + message[len(parameter) :]
    elif parameter and message.startswith(parameter + " '"):  # "serializer 'json' is registered by both ..."
        message = f"{flag}: {message[len(parameter) + 1 :]}"
    else:
        message = f"{flag}: {message}"
    for python_only in _PYTHON_ONLY_CHOICES:  # what a flag cannot be given as
        message = message.replace(f" must be {python_only}", " must be ", 1)
    return message


def _exit_on_stop_signals(code: Callable[[], int]) -> None:
    """SIGINT/SIGTERM end the process at once with ``code()`` (on Windows the worker cannot take them over)."""
    if sys.platform == "win32" or threading.current_thread() is not threading.main_thread():
        return
    for sig in (signal.SIGINT, signal.SIGTERM):
        _set_handler(sig, _exit_at_once(code))


def _flag_given(argv: Sequence[str] | None, flag: str) -> bool:
    """True when ``flag`` (or ``flag=value``, or an abbreviation argparse accepts) is on the command line."""
    given = sys.argv[1:] if argv is None else argv
    return any(len(name) > 2 and flag.startswith(name) for name in (arg.partition("=")[0] for arg in given))


def _worker_serializer(name: str | None, allowed_tasks: list[str] | None) -> str | Serializer | None:
    """The worker's serializer: the name given, or that serializer restricted to ``--allow-task`` paths.

    Each allowed function is imported now, so a typo stops the worker at
    start (exit code 2) instead of failing every task that names it.
    """
    if allowed_tasks is None:
        if name is not None and name.strip().lower() == "msgpack":
            logger.warning(
                "a msgpack worker without --allow-task calls any importable function a stored task names "
                "(os:system, pickle:loads): give --allow-task MODULE:FUNCTION for a store others can write to"
            )
        return name
    if name is None:
        raise ValidationError(
            "--allow-task needs --serializer: the allow-list belongs to a serializer that sends functions "
            "by name (for example -s msgpack)",
            parameter="allow_task",
            value=allowed_tasks,
        )
    manager = get_plugin_manager()
    registered = name.strip().lower()
    serializer_class = manager.serializer_class(registered)
    if "allowed_tasks" not in inspect.signature(serializer_class).parameters:
        raise ValidationError(
            f"serializer {name!r} ({serializer_class.__qualname__}) takes no allowed_tasks argument, so it has no "
            "allow-list to give these functions to; --allow-task works with a serializer whose __init__ takes "
            "allowed_tasks (for example -s msgpack)",
            parameter="allow_task",
            value=allowed_tasks,
        )
    try:  # a plugin's class taking allowed_tasks, as msgpack's does
        built = build_serializer(manager, registered, allowed_tasks=allowed_tasks)
    except ValidationError as exc:  # the serializer names its own parameter: say which flag fed it
        raise ValidationError(
            f"--allow-task: {exc.message}", parameter="allow_task", value=exc.value, cause=exc
        ) from exc
    serializer: Serializer = named_as_registered(built, name.strip().lower())
    for path in allowed_tasks:
        _import_function(path, allowed_tasks)
    return serializer


def _import_function(path: str, allowed_tasks: list[str]) -> None:
    """Check that ``module:qualname`` (its form checked by the serializer) imports as a function of that path.

    Raises a ValidationError for an import that fails, an object that is not a
    module-level function, and a function imported there from another module
    (tasks name a function by its own module, so that entry could never match).
    """
    module_name, _, qualname = path.partition(":")
    try:
        target: Any = walk(importlib.import_module(module_name), qualname)
    except PathRefused as exc:  # the loader's rule: through classes only, never a dunder name
        raise ValidationError(
            f"--allow-task {path}: {exc.reason}", parameter="allow_task", value=path, cause=exc
        ) from exc
    except _LeaveNow:
        raise
    except (Exception, SystemExit) as exc:  # sys.exit() at import must not end the worker with its code
        logger.debug("importing %s failed", module_name, exc_info=True)
        raise ValidationError(
            f"--allow-task {path}: cannot import it: {describe_exception(exc)}{raised_where(exc)}",
            parameter="allow_task",
            value=path,
            cause=exc,
        ) from exc
    kind = not_a_function(target)
    if kind is not None:
        raise ValidationError(
            f"--allow-task {path}: it names {kind}, not a function "
            "(the worker calls only module-level functions by their import path)",
            parameter="allow_task",
            value=path,
        )
    own_path = function_path(target)
    if "<" in own_path.partition(":")[2]:
        raise ValidationError(
            f"--allow-task {path}: it names {own_path}, a lambda or local function, which cannot be sent by "
            "import path: define it with def at module level",
            parameter="allow_task",
            value=path,
        )
    if own_path != path and own_path not in allowed_tasks:
        # imported into that module from another: new tasks name the function's own module, so that entry
        # alone matches only tasks stored under the old path (allowing both keeps draining those)
        raise ValidationError(
            f"--allow-task {path}: that name refers to {own_path} (another name for it: imported or assigned); "
            f"tasks calling it are stored under its own path: use --allow-task {own_path} (give both to "
            "also run tasks stored under the old path)",
            parameter="allow_task",
            value=path,
        )


def _exit_now_if_task_threads_are_stuck(code: int, because: str | None) -> None:
    """Leave at once when sync tasks still run in their threads after the worker stopped.

    Their leases were released for other workers; Python would otherwise wait
    for those threads at exit, so a supervisor would never see the process end.
    atexit handlers (telemetry flushes) still run. ``because`` says why the
    stop left them (the shutdown timeout, a second signal), when it knows.
    """
    stuck = _task_threads_still_running(grace=0.5)
    if not stuck:
        return
    logger.warning("leaving %d task thread(s) still running after %s", len(stuck), because or "the worker stopped")
    _exit_now(code)


async def _exit_now_if_async_tasks_are_stuck(code: int) -> None:
    """Leave at once when async tasks ignored their cancellation after the worker stopped.

    Their leases were released; ``asyncio.run`` would otherwise wait for each
    until it chose to return, past the shutdown timeout and a second signal.
    """
    current = asyncio.current_task()
    stuck = [
        task
        for task in asyncio.all_tasks()
        if task is not current and not task.done() and task.get_name().startswith(("sitq-task-", "sitq-batch-"))
    ]
    if stuck:
        await asyncio.wait(stuck, timeout=0.5)
        stuck = [task for task in stuck if not task.done()]
    if not stuck:
        return
    logger.warning("leaving %d async task(s) that ignored their cancellation after the shutdown", len(stuck))
    _exit_now(code)


def _exit_now(code: int) -> None:
    """End the process with ``code`` now, after atexit handlers and a log flush (not waiting for task code)."""
    run_exit_functions = getattr(atexit, "_run_exitfuncs", None)
    if run_exit_functions is not None:
        run_exit_functions()
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


class _LeaveNow(SystemExit):
    """A stop signal while the worker starts: a clean exit, not a task module's failed import."""


def _leave_on_early_signals() -> dict[int, Any]:
    """Make SIGTERM or SIGINT before the worker handles signals (imports, connecting) end the process with 0.

    Nothing is reserved yet then, so there is nothing to drain; without this a
    supervisor stopping a worker that is still starting sees it die by signal
    (or a Ctrl-C prints an import's traceback). ``Worker.run`` replaces the
    handlers with its draining ones as it begins. Returns the handlers before.
    """

    def leave(_signum: int, _frame: object) -> None:
        raise _LeaveNow(0)

    previous: dict[int, Any] = {}
    for signum in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(ValueError, OSError):  # not the main thread
            previous[signum] = _set_handler(signum, leave)
    return previous


def _command_backend(given: str | None) -> Backend:
    """The backend of ``sitq worker`` / ``sitq stats``: an error building it names ``--backend`` or ``SITQ_BACKEND``."""
    try:
        return resolve_backend(given)
    except SitqError as exc:
        raise _BackendSourceError(exc, given) from exc


def _is_connect_error(exc: BaseException) -> bool:
    """Whether ``exc`` says the store could not be reached (the URL's host, port, database or file)."""
    return isinstance(exc, StoreConnectionError) or (isinstance(exc, BackendError) and exc.operation == "connect")


def _backend_error_line(error: SitqError, given: str | None) -> str:
    """``--backend: no backend named 'nosuch'. ...``: the error's message, after the flag or variable that gave
    the store, without the ``(context: ...)`` that ``str(error)`` adds for logs (api.md: every error names its flag)."""
    message = str(error.message)
    if given is not None:
        return f"--backend: {message}"
    if os.environ.get("SITQ_BACKEND") is not None:
        message = message.replace(FROM_VARIABLE, "")  # named first instead
        return message if "SITQ_BACKEND" in message else f"SITQ_BACKEND: {message}"
    return f"the default backend, {DEFAULT_BACKEND_URL} (no --backend, no SITQ_BACKEND): {message}"


def _backend_source(given: str | None) -> str:
    """Where the backend of a command came from, for hints."""
    if given is not None:
        return "the --backend URL"
    if os.environ.get("SITQ_BACKEND"):
        return "SITQ_BACKEND"
    return f"the default backend, {DEFAULT_BACKEND_URL}"


def _private_to_this_process(backend: Backend) -> bool:
    """An in-memory SQLite database: a CLI command on it would see an empty one of its own.

    Only a backend that says so itself (``is_memory``) is refused: a plugin
    that declares few capabilities may still reach a shared store.
    """
    return getattr(backend, "is_memory", False) is True


def _warn_if_maybe_private(backend: Backend, given: str | None) -> None:
    """Warn, on stderr, that a backend not declaring MULTI_PROCESS may give this command a store of its own.

    Not refused: a plugin that declares few capabilities may still reach a
    shared store; but zero counts, or a worker idling on an empty store,
    should not look like the application's real state without a word.
    """
    if Capability.MULTI_PROCESS in getattr(backend, "capabilities", frozenset()):
        return
    sys.stderr.write(
        f"sitq: warning: the {type(backend).__name__} from {_backend_source(given)} does not declare "
        "Capability.MULTI_PROCESS: unless it reaches a store that other processes share, this command "
        "sees a store of its own, not your application's\n"
    )


def _private_store_text(backend: Backend, given: str | None) -> str:
    return (
        f"the {type(backend).__name__} from {_backend_source(given)} lives in this process only (an in-memory store): "
        "this command would see an empty store of its own, not your application's. Use a file or server URL, "
        "e.g. sqlite:///tasks.db"
    )


def _task_threads_still_running(grace: float) -> list[threading.Thread]:
    """Pool threads still busy after ``grace`` seconds (idle ones end on their own at once)."""
    deadline = time.monotonic() + grace
    for thread in threading.enumerate():
        if thread.name.startswith("sitq-task"):
            thread.join(max(deadline - time.monotonic(), 0.0))
    return [t for t in threading.enumerate() if t.name.startswith("sitq-task") and t.is_alive()]


def _stats_command(out: TextIO, backend: str | None, *, as_json: bool, queue: str | None = None) -> int:
    return _store_command(
        backend, lambda store, source: _stats(out, store, as_json=as_json, source=source, queue=queue)
    )


def _stats_queue(given: str | None) -> str | None:
    """``sitq stats --queue``'s name, checked before the store is opened; an error names the flag."""
    if given is None:
        return None
    try:
        return checks.queue_name(given.strip())  # stripped as `sitq worker -q` strips its names
    except ValidationError as exc:
        message = str(exc.message).removeprefix("queue: ")
        raise ValidationError(f"--queue: {message}", parameter="queue", value=given) from None


def _store_command(given: str | None, run: Callable[[Backend, str], Coroutine[Any, Any, int]]) -> int:
    """Run ``run(store, source)`` on the store of ``-b``/``SITQ_BACKEND``: what every command reading one does.

    A bad ``?serializer=`` and a store private to this process are refused
    (exit code 2); an error connecting names the flag or variable.
    """
    store = _command_backend(given)
    refusal = _url_serializer_refusal(given)
    if refusal is not None:
        sys.stderr.write(f"sitq: error: {refusal}\n")
        return 2
    if _private_to_this_process(store):
        sys.stderr.write(f"sitq: error: {_private_store_text(store, given)}\n")
        return 2
    _warn_if_maybe_private(store, given)
    try:
        return asyncio.run(run(store, _backend_source(given)))
    except SitqError as exc:
        if _is_connect_error(exc):
            raise _BackendSourceError(exc, given) from exc
        raise


def _url_serializer_refusal(given: str | None) -> str | None:
    """Why the backend URL's ``?serializer=`` names no serializer (``--backend (its ?serializer=): ...``), or None.

    ``sitq stats`` decodes no payload, but a URL that ``sitq worker`` refuses
    must not pass here: the name is looked up (its package need not be installed).
    """
    chosen = split_config(given)[2]
    if not isinstance(chosen, str):
        return None
    try:
        get_plugin_manager().serializer_class(chosen.strip().lower())
    except (ValidationError, ConfigurationError) as exc:
        if isinstance(exc, BrokenPluginError):  # a broken plugin's traceback is main's to show
            raise
        return _in_flag_terms(exc.message, exc.parameter or "", _url_serializer_flag(given))
    return None


async def _stats(
    out: TextIO, store: Backend, *, as_json: bool, source: str = "the --backend URL", queue: str | None = None
) -> int:
    if await _store_missing(store, source):
        return 2
    with reading_only():  # a store this process may read but not write (a read-only file) is fine here
        async with TaskQueue(store) as tasks:
            counts = await tasks.counts(queue=queue)
    if as_json:
        _out(out, json.dumps(counts, sort_keys=True))
    else:
        for status, count in counts.items():
            _out(out, f"{status:<10} {count}")
    return 0


def _is_empty_file(path: str) -> bool:
    try:
        return os.path.isfile(path) and os.path.getsize(path) == 0
    except OSError:
        return False


async def _store_missing(store: Backend, source: str) -> bool:
    """Say on stderr that ``store`` holds no sitq data, if so: a command must not create a mistyped file or schema."""
    if await store.exists() is False:
        path = getattr(store, "path", None)
        if isinstance(path, os.PathLike):
            path = os.fspath(path)
        if not isinstance(path, str):
            shown = repr(store) if type(store).__repr__ is not object.__repr__ else f"the {type(store).__name__} store"
            where = f"no sitq data in {shown}"
        elif await asyncio.to_thread(_is_empty_file, path):
            # what a connect that failed before its first write leaves (a full disk): no store yet, not a foreign one
            where = f"{path!r} is an empty file, no sitq database yet (a producer or worker sets it up)"
        elif await asyncio.to_thread(os.path.exists, path):
            kind = getattr(store, "name", "") or type(store).__name__
            where = f"{path!r} is not a sitq database (it holds no sitq data, or is not a {kind} store at all)"
        else:
            where = f"no sitq database at {path!r}"
        sys.stderr.write(f"sitq: error: {where} (check {source})\n")
        return True
    return False
