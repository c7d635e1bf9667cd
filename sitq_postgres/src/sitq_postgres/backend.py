"""PostgresBackend: sitq's tasks in PostgreSQL, for queues that outgrow one machine.

- Claims use ``SELECT ... FOR UPDATE SKIP LOCKED`` on a partial index of the
  active tasks ordered as ``reserve`` promises (priority, due time, enqueue
  order), so any number of workers on any number of machines claim without
  blocking each other and never share a leased task.
- Every change is one transaction; a lease token fences every change a
  worker makes after its claim (the same rules as the SQLite backend).
- ``LISTEN``/``NOTIFY`` carries "new work" and "these results are stored" to
  every process: enqueue notifies in the same statement that inserts.
- asyncpg pools belong to one event loop, so the backend keeps one pool per
  loop that uses it (a ``SyncTaskQueue`` runs its own loop).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import math
import os
import random
import re
import secrets
import threading
import time
import weakref
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Self, TypeAlias, TypeVar, overload
from urllib.parse import parse_qs

import asyncpg  # type: ignore[import-untyped]

from sitq_core import checks, forks, store_endings
from sitq_core.backend import Backend, Capability, connecting_to_read_only
from sitq_core.bounded import within
from sitq_core.errors import (
    BackendError,
    ConfigurationError,
    ConnectionError,
    SitqError,
    StoreFullError,
    StoreGoneError,
    ValidationError,
    describe_exception,
    safe_repr,
)
from sitq_core.models import LeaseState, Outcome, ReservedTask, Result, Task, TaskStatus
from sitq_core.notify import record_mark, safety_pauses, take_mark
from sitq_core.textoptions import text_options_converted
from sitq_core.urls import BackendURL, looks_secret, redacted, split_url

from . import schema as _schema
from .coalesce import ResultReads
from .keywords import LIBPQ_PARAMETERS, NO_LIMIT, SITQ_OPTIONS, UNSUPPORTED, prepared_dsn
from .schema import SCHEMA_VERSION, Statements, valid_schema

__all__ = ["PostgresBackend"]

log = logging.getLogger("sitq.postgres")
_FIELD_LIMIT = (1 << 30) - (1 << 20)  # PostgreSQL stores at most 1 GiB in one field; room for the rest
#: Bytes of tasks (or outcomes) one statement carries at most: a larger batch is split into several statements
#: of one transaction, all stored or none. PostgreSQL refuses a protocol message over 1 GB ("invalid message
#: length") and drops the connection, so five tasks of 230 MB, each under ``_FIELD_LIMIT``, sent as one
#: statement were taken for an outage and sent again for a minute. One task or outcome larger than the bound
#: goes alone (it is under ``_FIELD_LIMIT``). Each statement is encoded on its own, between awaits.
_STATEMENT_BYTES = 64 << 20
_ROW_BYTES = 128  # what a row costs in a statement besides its payload (or value) and texts: numbers, times

T = TypeVar("T")

_FINAL_KINDS = ("success", "failed", "cancelled")
#: Bytes (UTF-8) per NOTIFY payload: PostgreSQL refuses 8000 and more (in the server's encoding, which may take
#: more bytes than UTF-8) and the refusal would roll back the finish that announces. See ``_result_notices``.
_NOTIFY_PAYLOAD_MAX = 7000
_WORK_KEY = ("sitq", "work")
# A result waiter re-reads after 1 s, 2 s, 4 s, then every 5 s: the safety net for a lost notice.
_RESULT_RECHECK_FIRST = 1.0
_RESULT_RECHECK_MAX = 5.0
# A result waiter whose read or listener lost its connection tries again after 0.05 s, doubling up to 1 s.
_WAIT_RETRY_FIRST = 0.05
_WAIT_RETRY_MAX = 1.0
# An enqueue whose connection was lost is sent again (the same ids: no duplicates) for connect_timeout,
# and at least this many seconds, before it is reported as of unknown fate.
_ENQUEUE_SETTLE_MIN = 5.0
_ENQUEUE_SETTLE_MAX = 60.0  # and at most this long (connect_timeout=0 means a day)
_CLOSE_TIMEOUT = 5.0  # seconds close() waits for its connections to end gracefully before it drops them
_DRIVER_ERRORS = (asyncpg.PostgresError, asyncpg.InterfaceError, asyncpg.InternalClientError, OSError, TimeoutError)
#: Errors that mean the server is out of reach (not a misuse of a connection, such as asyncpg's
#: "another operation is in progress"): reported as ``ConnectionError``, as at connect.
_OUT_OF_REACH = (asyncpg.exceptions.PostgresConnectionError, OSError, TimeoutError)
#: The server's errors for a session it ends: the connection is closed after them.
_ENDED_BY_SERVER = (
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.exceptions.CrashShutdownError,
    asyncpg.exceptions.DatabaseDroppedError,
    asyncpg.exceptions.IdleSessionTimeoutError,
    asyncpg.exceptions.IdleInTransactionSessionTimeoutError,
)
#: Calls that only read: one that meets a closed connection runs again on another.
_READS = frozenset({"get_task", "get_result", "next_eta", "list_tasks", "counts"})
#: Calls that run again when the server aborted their transaction as a deadlock's victim (SQLSTATE 40P01): their
#: bodies only run statements and build their answer, so a run again in a new transaction is the whole call once.
#: Not reserve (its body logs the tasks it ends as it goes) nor enqueue (its own retry loop settles lost
#: answers); finish and heartbeat do not take part in the deadlocks seen, and a worker retries them anyway.
_DEADLOCK_RERUNS = frozenset({"purge", "requeue", "cancel"})  # "requeue" is requeue_many's call too
_DEADLOCK_RETRIES = 3  # runs again after the first, each after a pause of up to _DEADLOCK_PAUSE * 2**n seconds
_DEADLOCK_PAUSE = 0.05
_PURGE_CHUNK_ROWS = 2000  # final tasks deleted per purge transaction: its row locks are held that long only
#: Errors after which a statement's fate is unknown: the connection went while it ran.
_CONNECTION_LOST = (
    asyncpg.exceptions.PostgresConnectionError,
    asyncpg.exceptions.OperatorInterventionError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
    OSError,
)


def _connection_lost(error: BaseException | None) -> bool:
    """True when ``error`` means the connection went while a statement ran, so its fate is unknown.

    A cancelled statement (``statement_timeout``, ``pg_cancel_backend``) raises
    QueryCanceledError, an OperatorInterventionError as a shutdown is, but its
    connection lives on and its statement was rolled back: a plain failure.
    """
    return isinstance(error, _CONNECTION_LOST) and not isinstance(error, asyncpg.exceptions.QueryCanceledError)


Connection: TypeAlias = Any  # asyncpg.Connection (asyncpg ships no type information)
Pool: TypeAlias = Any  # Pool


class _Row(asyncpg.Record):  # type: ignore[misc]  # asyncpg ships no type information
    """The rows of every session sitq opens: asyncpg's Record itself, but kept out of its free list.

    asyncpg 0.32 keeps freed Records of its own class for reuse in a free list
    of the thread that freed them, and never frees that list when the thread
    ends. A ``SyncTaskQueue`` runs its loop on a thread of its own, so each one
    opened and closed left its rows behind for good (about 5.7 KB an open, the
    schema check's rows most of it). Records of a subclass bypass the list.
    """

    __slots__ = ()


_OWN_OPTIONS = SITQ_OPTIONS
_DEFAULT_CONNECT_TIMEOUT = 10.0
_MAX_POOL = 10_000  # connections a pool may hold, per event loop
#: The ``application_name`` of sitq's sessions when neither the dsn nor ``PGAPPNAME`` gives one.
_APPLICATION_NAME = "sitq"
_CLOCK_RECHECK = 60.0  # seconds between two readings of the server's clock
_CLOCK_TOLERANCE = 0.05  # an offset smaller than this (or than the round trip) is taken as none
_FULL_RETRY = 1.0  # seconds between new connects while the server's connection limit is reached
_RELEASE_TIMEOUT = 5.0  # seconds to reset a connection for the pool; past it the connection is dropped
#: Connects made in all when the server ends the session of each part-way (pg_terminate_backend, an idle timeout).
_CONNECT_ATTEMPTS = 3
#: A connect's schema check the server cancels (``statement_timeout``) is made again for ``connect_timeout``,
#: but at most this many seconds (``connect_timeout=0`` means a day), pausing from this long, doubling up to 1 s.
_CANCELLED_CHECK_MAX = 60.0
_CANCELLED_PAUSE = 0.05


def _refuse_own_options_in(dsn: str | None) -> None:
    """A dsn carrying sitq's own options (``?schema=``) would send them to the server: say where they go."""
    if dsn is None or "://" not in dsn:
        return
    found = [name for name in _OWN_OPTIONS if name in parse_qs(split_url(dsn).query, keep_blank_values=True)]
    if found:
        raise ConfigurationError(
            f"{found[0]!r} is an option of sitq, not a connection parameter: give it beside the dsn "
            f"(PostgresBackend(dsn, {found[0]}=...) or a config key), or use the URL itself as the backend "
            f"(sitq.connect('postgresql://...?{found[0]}=...'))",
            parameter=found[0],
            valid_options=list(_OWN_OPTIONS),
        )


#: Server settings of every session sitq opens, over the role's and database's defaults. sitq's claims
#: (SKIP LOCKED), fencing and lease renewals are written for READ COMMITTED: under a role or database whose
#: default is SERIALIZABLE (or REPEATABLE READ) they failed with serialization errors, retried and logged.
_SESSION_SETTINGS = {"default_transaction_isolation": "read committed"}


def _default_settings(dsn: str | None) -> dict[str, str]:
    """The server settings of sitq's sessions: ``_SESSION_SETTINGS``, and their ``application_name``.

    ``application_name`` (so that ``pg_stat_activity`` tells them apart) is
    ``PGAPPNAME`` (libpq's variable, which asyncpg does not read) or else
    ``"sitq"``; left out when the dsn names the application itself (asyncpg
    would let ours win over it).
    """
    settings = dict(_SESSION_SETTINGS)
    if not (
        dsn is not None
        and "://" in dsn
        and "application_name" in parse_qs(split_url(dsn).query, keep_blank_values=True)
    ):
        settings["application_name"] = os.environ.get("PGAPPNAME") or _APPLICATION_NAME
    return settings


class PostgresBackend(Backend):
    """Tasks in a PostgreSQL database (``postgresql://user@host:5432/db?schema=sitq``).

    ``dsn``: a libpq connection string or URL (``None``: libpq's defaults and
    ``PG*`` environment variables). ``schema``: the PostgreSQL schema holding
    sitq's tables, created on first use. ``min_connections`` /
    ``max_connections``: the pool size per event loop. ``connect_timeout``:
    seconds to wait for the server (0, as in libpq: the longest wait allowed, one day).
    """

    name = "postgres"
    capabilities = frozenset(
        {Capability.PERSISTENT, Capability.MULTI_PROCESS, Capability.CROSS_PROCESS_NOTIFY, Capability.CANCEL_RUNNING}
    )
    #: This machine's clock (seconds since the epoch), read beside the server's to measure their offset.
    wall_clock: Callable[[], float] = staticmethod(time.time)

    def __init__(
        self,
        dsn: str | None = None,
        *,
        schema: str = "sitq",
        min_connections: int = 1,
        max_connections: int = 10,
        connect_timeout: float = _DEFAULT_CONNECT_TIMEOUT,
    ) -> None:
        if dsn is not None and not isinstance(dsn, str):
            raise ValidationError(
                f"dsn must be a string or None, got {type(dsn).__name__}", parameter="dsn", value=redacted("dsn", dsn)
            )
        for name, value, least in (("min_connections", min_connections, 0), ("max_connections", max_connections, 1)):
            # at most _MAX_POOL: asyncpg sets up every slot of a pool at once (10**7 took 18 s and gigabytes
            # before a connection was tried), and no server takes that many sessions from one process anyway
            if isinstance(value, bool) or not isinstance(value, int) or not least <= value <= _MAX_POOL:
                raise ValidationError(
                    f"{name} must be an integer from {least} to {_MAX_POOL}, got {safe_repr(value)}",
                    parameter=name,
                    value=value,
                )
        if min_connections > max_connections:
            raise ValidationError(
                "min_connections must not exceed max_connections", parameter="min_connections", value=min_connections
            )
        # asyncpg reads URLs only (a key=value string becomes one); libpq's connect_timeout in it is ours
        dsn, connect_timeout = prepared_dsn(dsn, connect_timeout, default_timeout=_DEFAULT_CONNECT_TIMEOUT)
        # any real number as float, as every other duration (bool, and a Decimal sNaN, which raised
        # decimal.InvalidOperation when compared, are None: refused below, never compared)
        seconds = checks.as_seconds(connect_timeout)
        if seconds == 0:  # libpq's "no limit", as in a dsn
            seconds = NO_LIMIT
        if seconds is None or not 0 < seconds <= 86_400:  # NaN and infinity fail too
            raise ValidationError(
                "connect_timeout must be a number of seconds > 0 and at most 86400 (0, as in libpq, means the most)",
                parameter="connect_timeout",
                value=connect_timeout,
            )
        self.dsn = dsn
        _refuse_own_options_in(self.dsn)
        self._server_settings = _default_settings(self.dsn)
        self.schema = valid_schema(schema)
        self.min_connections = min_connections
        self.max_connections = max_connections
        self.connect_timeout = seconds
        self._sql = Statements(self.schema)
        self._lock = threading.Lock()
        self._pools: dict[asyncio.AbstractEventLoop, Pool] = {}
        self._schema_ready = False
        self._listeners: dict[asyncio.AbstractEventLoop, Connection] = {}
        self._listener_locks: dict[asyncio.AbstractEventLoop, asyncio.Lock] = {}
        self._pool_locks: dict[asyncio.AbstractEventLoop, asyncio.Lock] = {}  # one pool being opened per loop
        self._opening: set[asyncio.Task[Any]] = set()  # connects in flight, whatever their callers do (_uncut)
        # calls under way per loop (read and written on that loop's thread only), and what close() waits on
        self._in_flight: dict[asyncio.AbstractEventLoop, int] = {}
        self._drained: dict[asyncio.AbstractEventLoop, asyncio.Event] = {}
        self._reads: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, ResultReads] = weakref.WeakKeyDictionary()
        self._releases: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Releases] = weakref.WeakKeyDictionary()
        self._clock_offset = timedelta(0)  # the server's clock minus this machine's (see now())
        self._clock_read_at = -math.inf  # monotonic time of the last reading
        self._clock_warned = False
        # reached once in this process: a result waiter then waits through an outage (a failover, a restart);
        # before that there is nothing to fail over from (a wrong URL, a server down at start), so it raises
        self._reached = False
        self._waiting_out_outage = False  # result waiters were told the server cannot be reached (logged once)
        self.notifier.track(_WORK_KEY)  # reserve/wait_for_work compare work notices (record_mark)
        forks.forget_in_child(self)

    def _after_fork_in_child(self) -> None:
        """In a forked child: the parent's pools and listeners are its own sockets; the next call connects anew.

        They are kept but never closed from here: closing would end the
        parent's server sessions (the socket is shared).
        """
        forks.keep_inherited(self._pools, self._listeners)
        self._lock = threading.Lock()
        self._pools, self._listeners, self._listener_locks, self._pool_locks = {}, {}, {}, {}
        self._reads = weakref.WeakKeyDictionary()
        self._releases = weakref.WeakKeyDictionary()
        self._waiting_out_outage = False  # the parent's waiters, not this child's
        self.notifier.after_fork_in_child()

    def __repr__(self) -> str:
        """The schema, and the server and database (password masked), as errors about the backend name them."""
        return f"PostgresBackend(schema={self.schema!r}, server={self._where()!r})"

    def now(self) -> datetime:
        """Now by the database server's clock: ``clock()`` plus the server's measured offset.

        Leases, due times and result times are compared across machines, so
        one clock must rule them: a worker whose clock ran 20 s fast would
        otherwise take over leases that are still being renewed. The offset
        is read at connect and every minute after; below 50 ms (or below the
        round trip) it counts as none. A clock set on the instance (a test's
        fake clock, as the conformance kit installs) is taken as it is.
        """
        if "clock" in self.__dict__:
            return self.clock()
        return self.clock() + self._clock_offset

    async def _read_server_clock(self, conn: Connection) -> None:
        """Measure the server's clock against ``wall_clock`` (the middle of the round trip)."""
        self._clock_read_at = time.monotonic()  # first: calls made meanwhile do not read it again
        before = self.wall_clock()
        server = await conn.fetchval("SELECT extract(epoch FROM clock_timestamp())::float8")
        after = self.wall_clock()
        offset = float(server) - (before + after) / 2
        if abs(offset) < max(_CLOCK_TOLERANCE, after - before):
            offset = 0.0
        if abs(offset) >= 1 and not self._clock_warned:
            self._clock_warned = True
            log.warning(
                "this machine's clock is %.3f s %s the server's; sitq uses the server's time",
                abs(offset),
                "behind" if offset > 0 else "ahead of",
            )
        self._clock_offset = timedelta(seconds=offset)

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickled (a ``spawn`` child, a copy) as its configuration: the copy connects on its own first use."""
        options = {
            "dsn": self.dsn,
            "schema": self.schema,
            "min_connections": self.min_connections,
            "max_connections": self.max_connections,
            "connect_timeout": self.connect_timeout,
        }
        return (_configured, (type(self), options))

    # ------------------------------------------------------------ construction

    @classmethod
    def from_url(cls, url: BackendURL) -> Self:
        """``postgresql://user:password@host:port/database?schema=sitq&max_connections=10``."""
        options: dict[str, Any] = dict(url.query)
        if "dsn" in options:  # written as ?dsn=, or given beside the URL (a keyword, a config mapping's key)
            raise ConfigurationError(
                "a postgres URL is itself the connection string: give the connection either as the URL or as dsn "
                "(with the backend named 'postgres'), not both",
                parameter="dsn",
                value=redacted("dsn", options["dsn"]),  # its password masked
            )
        # libpq parameters stay in the DSN; those asyncpg cannot use too, so the DSN's check names them as such
        libpq = {key: options.pop(key) for key in list(options) if key in LIBPQ_PARAMETERS or key in UNSUPPORTED}
        # Each of these came apart already (a keyword, a mapping's key, or split out of the URL, whose pieces the
        # caller hides against the URL as given): none is a piece of a password. The secret ones go last in the
        # dsn, so that the dsn's own check, which hides what follows a secret in a query, names a refused one.
        libpq = dict(sorted(libpq.items(), key=lambda item: looks_secret(item[0])))
        in_url = {"host": url.host, "port": url.port, "dbname": url.database, "user": url.username}
        in_url["password"] = url.password
        for key, given in in_url.items():
            if key in libpq and given not in (None, "") and str(libpq[key]) != str(given):
                # libpq lets the query win, asyncpg the URL's own part: refuse rather than reach the wrong place
                shown = "" if key == "password" else f" ({given!r} and {libpq[key]!r})"
                raise ConfigurationError(
                    f"the postgres URL gives {key!r} twice, differently: in the URL itself and again as ?{key}= "
                    f"or a keyword (or config key) {key}{shown}; keep one",
                    parameter=key,
                    value="***" if key == "password" else libpq[key],
                )
        bare = BackendURL(
            scheme="postgresql",
            username=url.username,
            password=url.password,
            host=url.host,
            port=url.port,
            database=url.database,
            query=libpq,
            more_hosts=url.more_hosts,  # libpq and asyncpg try the hosts in turn
        )
        options["dsn"] = bare.render(hide_password=False)
        return cls.from_config(options)

    @classmethod
    def from_config(cls, options: Mapping[str, Any]) -> Self:
        """Build from a mapping; numbers given as strings (from a URL or the environment) are converted."""
        accepted = cls.config_options()
        unknown = sorted(set(options) - set(accepted))
        if unknown:
            raise ConfigurationError(
                f"unknown option {unknown[0]!r} for backend 'postgres'; expected one of: {', '.join(accepted)} "
                f"(or, in a URL, a libpq parameter: {', '.join(sorted(LIBPQ_PARAMETERS))})",
                parameter=unknown[0],
                value=redacted(unknown[0], options[unknown[0]]),  # password=, given as a keyword: a secret
                valid_options=accepted,
            )
        return cls(**text_options_converted(cls, options))

    # --------------------------------------------------------------- lifecycle

    async def connect(self) -> None:
        await self._pool()

    def abandon(self) -> None:
        """Drop every pool and listener connection without awaiting (``Backend.abandon``).

        Each is terminated on its own event loop when that loop still runs,
        here when it has closed; the server ends their sessions, so a queue
        made per request and dropped unclosed no longer keeps a server
        connection until its loop ends. A later call connects again.
        """
        with self._lock:
            pools, self._pools = self._pools, {}
            listeners, self._listeners = self._listeners, {}
            self._listener_locks = {}
        for owner, listener in listeners.items():
            _terminate_elsewhere(owner, listener.terminate)
        for owner, pool in pools.items():
            _terminate_elsewhere(owner, pool.terminate)

    async def close(self) -> None:
        loop = asyncio.get_running_loop()
        # a copy first: other loops' done-callbacks change the set from their threads
        # one bound for every graceful step: on a frozen network each would wait it out in turn
        deadline = loop.time() + _CLOSE_TIMEOUT

        def left() -> float:
            return max(0.1, deadline - loop.time())

        opening = [task for task in list(self._opening) if task.get_loop() is loop and not task.done()]
        if opening:  # let them finish rather than cut them off (see _uncut); what nobody wants is closed
            await asyncio.wait(opening, timeout=left())
        if self._in_flight.get(loop):  # calls already under way finish (enqueues were cut: "pool is closing")
            drained = self._drained.setdefault(loop, asyncio.Event())
            with contextlib.suppress(TimeoutError):
                await within(drained.wait(), left())
        with self._lock:
            pools, self._pools = self._pools, {}
            listeners, self._listeners = self._listeners, {}
            self._listener_locks = {}

        for owner, listener in listeners.items():
            if owner is loop:
                try:
                    await within(listener.close(), left())
                except (TimeoutError, *_DRIVER_ERRORS):  # pragma: no cover - the server went away
                    listener.terminate()
            else:
                _terminate_elsewhere(owner, listener.terminate)
        for owner, pool in pools.items():
            if owner is loop:
                try:
                    await within(pool.close(), left())
                except (TimeoutError, *_DRIVER_ERRORS):  # pragma: no cover
                    pool.terminate()
            else:
                _terminate_elsewhere(owner, pool.terminate)
        self.notifier.notify_all()  # waiters re-check (and reconnect) instead of sleeping on

    async def exists(self) -> bool:
        """True when the schema already has sitq's ``tasks`` table; asks on a connection of its own.

        A schema holding tables of sitq's names that sitq did not make (an
        application's own ``meta``) raises the ``ConnectionError`` a connect
        raises, so ``sitq stats`` says why instead of "no sitq data".
        """
        try:
            conn = await asyncpg.connect(
                self.dsn, timeout=self.connect_timeout, server_settings=self._server_settings, record_class=_Row
            )
        except (TimeoutError, *_DRIVER_ERRORS) as exc:
            raise self._cannot_connect(exc) from exc
        try:
            found = await conn.fetchval(
                "SELECT EXISTS (SELECT 1 FROM information_schema.tables"
                " WHERE table_schema = $1 AND table_name = 'tasks')",
                self.schema,
            )
            try:
                foreign, _changes, _present = await self._schema_problems(conn)
            except asyncpg.exceptions.InsufficientPrivilegeError:  # a meta this role may not read: whose it is
                foreign = []  # cannot be told here, so the answer is the tasks table's alone, as it always was
        except (TimeoutError, *_DRIVER_ERRORS) as exc:  # a session cut (a restart, pg_terminate_backend)
            how = _closed_how(exc, conn) or _described(exc)  # before terminate(): any error would look like a cut
            conn.terminate()
            raise self._connection_error(
                f"PostgreSQL exists failed ({self._where()}): {how}",
                operation="exists",
                cause=exc,
            ) from exc
        except BaseException:
            conn.terminate()
            raise
        try:
            await conn.close()
        except (TimeoutError, *_DRIVER_ERRORS):  # the answer is had: a goodbye the server misses changes nothing
            conn.terminate()
        if foreign:
            raise self._foreign_tables(foreign)
        return bool(found)

    async def _pool(self) -> Pool:
        loop = asyncio.get_running_loop()
        pool = self._pools.get(loop)
        if pool is not None:
            return pool
        with self._lock:
            opening = self._pool_locks.setdefault(loop, asyncio.Lock())
        # one connect per loop: a burst of first calls (a web server's requests right after a deploy) waits
        # for it instead of each opening a pool of its own, which ran the server out of connection slots
        async with opening:
            pool = self._pools.get(loop)
            if pool is not None:
                return pool
            return await self._open_pool(loop)

    async def _open_pool(self, loop: asyncio.AbstractEventLoop) -> Pool:
        self._release_closed_loops()  # a new loop (asyncio.run again, a test per loop): free the ended ones
        # every step of a connect can be made again (its DDL is one transaction)
        pool = await self._opened_again_if_cut(
            self._new_pool, "connect", lambda exc, attempts: self._cannot_connect(exc, attempts=attempts)
        )
        with self._lock:
            existing = self._pools.get(loop)
            if existing is None:
                self._pools[loop] = pool
            self._reached = True
        if existing is not None:  # another coroutine of this loop connected meanwhile
            await pool.close()
            return existing
        log.debug("connected (%s, schema %s)", self._where(), self.schema)
        return pool

    async def _new_pool(self) -> Pool:
        """A pool with a connection that found sitq's schema ready (made it if need be) and read the server's clock.

        Driver errors come out raw, for ``_open_pool`` to tell a session the
        server ended from the rest.
        """
        creating = asyncpg.create_pool(
            self.dsn,
            min_size=self.min_connections,
            max_size=self.max_connections,
            timeout=self.connect_timeout,
            command_timeout=None,
            server_settings=self._server_settings,
            record_class=_Row,
            connect=self._pool_connect,  # asyncpg >= 0.30
        )
        pool = await self._uncut(creating, _terminate)
        assert pool is not None
        reading = connecting_to_read_only() and not self._schema_ready
        try:
            conn = await pool.acquire()
            if reading or not self._schema_ready:
                await self._ready_schema(conn, reading=reading)
            await self._read_server_clock(conn)
            await pool.release(conn, timeout=_RELEASE_TIMEOUT)
        except BaseException:
            # dropped, not given back: giving back a connection whose statement was cancelled (a worker
            # stopped while the schema check waits on another session's table lock) waits for the server
            # to confirm the cancel, which kept the process from exiting
            pool.terminate()
            raise
        return pool

    async def _pool_connect(self, *args: Any, **kwargs: Any) -> Connection:
        """Each new connection of a pool (the pool's ``connect``): a caller cancelled meanwhile does not cut it off.

        A call finding no idle connection has the pool open one; cancelled
        in asyncpg's TLS step (a caller's timeout, sslmode's default
        ``prefer``) that connect left "Future exception was never retrieved
        ... unexpected connection_lost() call" at exit (asyncpg #1211). It
        ends on its own instead (within ``connect_timeout``), and a connection
        nobody waits for any more is dropped (see ``_uncut``).
        """
        conn: Connection = await self._uncut(asyncpg.connect(*args, **kwargs), _terminate)
        return conn

    async def _ready_schema(self, conn: Connection, *, reading: bool) -> None:
        """Check (``reading``: a read-only connect, ``sitq stats``) or create sitq's schema; a cancelled try again.

        The server cancels a statement of the check that waits too long on a
        lock of sitq's tables (a migration, a ``LOCK TABLE``) when the role
        or database sets ``statement_timeout``; the check also reads the
        catalogs, slow on a fresh session. Its session lives on and the try
        was rolled back, so it is made again on the same session (its
        catalog caches warm by then) for ``connect_timeout`` (at most
        ``_CANCELLED_CHECK_MAX`` seconds, at least ``_CONNECT_ATTEMPTS``
        tries), then raises a ``ConnectionError`` giving the server's reason.
        """
        give_up = time.monotonic() + min(self.connect_timeout, _CANCELLED_CHECK_MAX)
        attempt = 1
        while True:
            try:
                if reading:  # a read-only role or a hot standby can read, so create nothing
                    await self._check_schema(conn)
                else:
                    await self._create_schema(conn)
                    self._schema_ready = True
                return
            except asyncpg.exceptions.QueryCanceledError as exc:
                if attempt >= _CONNECT_ATTEMPTS and time.monotonic() >= give_up:
                    raise self._schema_check_cancelled(exc, attempt, reading=reading) from exc
                log.info("PostgreSQL connect: the server cancelled the schema check (%s); checking again", exc)
                await asyncio.sleep(min(_CANCELLED_PAUSE * 2 ** (attempt - 1), _FULL_RETRY))
                attempt += 1

    def _schema_check_cancelled(self, exc: BaseException, attempts: int, *, reading: bool) -> ConnectionError:
        """The refusal of a connect whose schema check the server cancelled every time (see ``_ready_schema``)."""
        what = "schema check" if reading else "schema check (or creation)"
        return self._connection_error(
            f"cannot connect to PostgreSQL ({self._where()}): the server cancelled the {what} of schema "
            f"{self.schema!r} {attempts} times in a row ({exc}); nothing was changed. Under a statement_timeout (the "
            "role's or database's) this means sitq's tables stayed locked longer than it lets a statement wait "
            "(another session's lock on them: a migration, a LOCK TABLE), or the check takes longer than it "
            "allows: let the lock go, or raise statement_timeout for sitq's role "
            "(ALTER ROLE <role> SET statement_timeout = '30s')",
            cause=exc,
        )

    def _release_closed_loops(self) -> None:
        """Close the server connections of event loops that have ended (each loop gets a pool of its own).

        Without this, every ``asyncio.run`` that used the backend kept its
        connections open until ``close()``: a program or test suite running
        many loops ran the server out of connections.
        """
        with self._lock:
            pools = {loop: pool for loop, pool in self._pools.items() if loop.is_closed()}
            listeners = {loop: conn for loop, conn in self._listeners.items() if loop.is_closed()}
            for loop in pools:
                del self._pools[loop]
            for loop in listeners:
                del self._listeners[loop]
                self._listener_locks.pop(loop, None)
            for loop in [loop for loop in self._pool_locks if loop.is_closed()]:
                del self._pool_locks[loop]
        for pool in pools.values():
            _close_dead_pool(pool)
        for conn in listeners.values():
            _close_dead_connection(conn)
        if pools or listeners:
            log.debug("released the connections of %d ended event loop(s)", len(pools | listeners))

    def _connection_error(self, message: str, **fields: Any) -> ConnectionError:
        """A ConnectionError about this backend's server: what went wrong, and where (password masked).

        ``operation`` is ``"connect"`` unless given: the errors raised without
        one are all about reaching the server or readying sitq's schema there.
        """
        fields.setdefault("operation", "connect")
        return ConnectionError(message, backend_type="postgres", connection_details=self._where(), **fields)

    def _cannot_connect(self, exc: BaseException, *, attempts: int = 1) -> ConnectionError:
        if isinstance(exc, asyncpg.exceptions.InvalidCatalogNameError) and not self._reached:
            # never reached in this process: not "gone for good" (StoreGoneError), since once it is made the
            # next call connects; a worker waits for it as for a server that is not up yet
            return self._connection_error(
                f"cannot connect to PostgreSQL ({self._where()}): {exc}; create the database (sitq creates its "
                "schema and tables, not the database: CREATE DATABASE <name>, or createdb <name>)",
                cause=exc,
            )
        gone = self._gone_for_good("connect", exc, connecting=True)
        if gone is not None:
            return gone
        closed = _closed_how(exc, None)
        if closed is not None:  # not a problem of the schema or of privileges: the session went
            again = f", {attempts} times in a row" if attempts > 1 else ""
            return self._connection_error(
                f"cannot connect to PostgreSQL ({self._where()}): {closed} during connect{again}", cause=exc
            )
        return self._connection_error(
            f"cannot connect to PostgreSQL ({self._where()}): {_described(exc, self.connect_timeout)}",
            cause=exc,
        )

    def _gone_for_good(self, operation: str, exc: BaseException, *, connecting: bool) -> StoreGoneError | None:
        """The StoreGoneError for a refusal no retry gets past, or None: a worker stops on it, as on SQLite.

        A database that does not exist (dropped under a running worker, or
        never there), and a write this role may not make (a role that can
        only read sitq's tables), fail every later call the same way: a
        worker retrying them would run forever, logging once. It stops
        instead (``Worker.run()`` raises, ``sitq worker`` exits 2), so that a
        supervisor or a person sees it. A role refused while ``connecting``
        lacks the CONNECT privilege on the database (the one privilege the
        server checks then), whether the call would read or write.
        """
        if isinstance(exc, asyncpg.exceptions.InvalidCatalogNameError):  # never reached: see _cannot_connect
            what = (
                f"PostgreSQL {operation} failed: {exc} ({self._where()}): it was dropped after this process "
                "connected to it; create it again (sitq creates its schema, not the database) and restart this "
                "process"
            )
        elif isinstance(exc, asyncpg.exceptions.InsufficientPrivilegeError) and connecting:
            what = (
                f"PostgreSQL {operation} failed: {exc} ({self._where()}): this role may not connect to the "
                "database; grant it (GRANT CONNECT ON DATABASE <database> TO <role>; PUBLIC has it unless revoked) "
                "and restart this process"
            )
        elif isinstance(exc, asyncpg.exceptions.InsufficientPrivilegeError) and operation not in _READS:
            what = (
                f"PostgreSQL {operation} failed: {exc} ({self._where()}, schema {self.schema!r}): this role may "
                "not write sitq's tables; workers and producers need SELECT, INSERT, UPDATE, DELETE on them (see "
                "'Roles and privileges' in docs/how-to/postgres-backend.md); grant them and restart this process"
            )
        else:
            return None
        return StoreGoneError(
            what, operation=operation, backend_type="postgres", connection_details=self._where(), cause=exc
        )

    def _where(self) -> str:
        if self.dsn is None:
            return "libpq defaults"
        try:
            from sitq_core.urls import parse_backend_url

            return parse_backend_url(self.dsn).render()
        except (SitqError, ValueError):
            return "the given dsn"

    async def _create_schema(self, conn: Connection) -> None:
        """Create sitq's tables unless they are there at this version already.

        A schema found complete and current is used as it is, without DDL, so
        an application role with table privileges only (no CREATE on the
        schema or database) can run workers and producers once a role that
        may create made the schema.
        """
        sql = self._sql
        try:
            if await self._schema_current(conn):
                await self._create_missing_indexes(conn)
                return
            async with conn.transaction():
                # Several processes may start at once: one creates, the others wait and find it done.
                await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", sql.lock_key)
                foreign, changes, _present = await self._schema_problems(conn)
                if foreign:
                    raise self._foreign_tables(foreign)
                if changes:
                    raise self._changed_tables(changes)
                if not await conn.fetchval(sql.schema_exists, self.schema):  # see Statements.create_schema
                    await conn.execute(sql.create_schema)  # IF NOT EXISTS: one made meanwhile by others is fine
                for statement in sql.ddl:
                    await conn.execute(statement)
                found = await conn.fetchval(sql.version)
                self._refuse_newer_version(found)
                if found is None:
                    await conn.execute(sql.set_version, str(SCHEMA_VERSION))
                await conn.execute(sql.set_mark)  # new, or made before the mark (see schema.MARK_KEY)
        except SitqError:
            raise
        except _DRIVER_ERRORS as exc:
            if _closed_how(exc, conn) is not None:  # the session went, not a DDL problem: see _open_pool
                raise
            if isinstance(exc, asyncpg.exceptions.QueryCanceledError):  # rolled back: see _ready_schema
                raise
            raise self._connection_error(
                f"cannot create sitq's tables in schema {self.schema!r}: {exc}",
                cause=exc,
            ) from exc

    async def _create_missing_indexes(self, conn: Connection) -> None:
        """Make the indexes of this version that a current schema lacks (one a later sitq-postgres added).

        Indexes hold no data of their own, so a schema made by an earlier
        sitq-postgres gets a new one from the first process whose role may
        make it (the table's owner), at the same schema version; a schema
        that has them all is read only (one look at ``pg_indexes``). A role
        that may not (table privileges only), or a read-only database, goes
        on without it, warned: every call is still correct, the claims it
        serves only slower.
        """
        sql = self._sql
        if not await self._missing_indexes(conn):
            return
        try:
            async with conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", sql.lock_key)
                for name in await self._missing_indexes(conn):  # not one another process made meanwhile
                    await conn.execute(sql.indexes[name])
        except (asyncpg.exceptions.InsufficientPrivilegeError, asyncpg.exceptions.ReadOnlySQLTransactionError) as exc:
            log.warning(
                "PostgreSQL schema %r lacks sitq's index(es) %s and this role cannot create them (%s); claims "
                "are slower without them: connect once as the owner of %s.tasks (see 'Indexes' in "
                "docs/how-to/postgres-backend.md)",
                self.schema,
                ", ".join(await self._missing_indexes(conn)),
                exc,
                self.schema,
            )

    async def _missing_indexes(self, conn: Connection) -> list[str]:
        """The names of this version's indexes on ``tasks`` that the schema lacks."""
        present = {row[0] for row in await conn.fetch(self._sql.index_names, self.schema)}
        return [name for name in self._sql.indexes if name not in present]

    async def _schema_current(self, conn: Connection) -> bool:
        """Whether sitq's tables are all there, sitq's own, unchanged, and at this schema version (reads only)."""
        foreign, changes, present = await self._schema_problems(conn)
        if foreign or changes or present != set(_schema.COLUMNS):
            return False
        found = await conn.fetchval(self._sql.version)
        return bool(found == str(SCHEMA_VERSION))

    async def _check_schema(self, conn: Connection) -> None:
        """Check, creating and changing nothing, that the schema holds sitq's tables (a read-only connect)."""
        try:
            foreign, changes, present = await self._schema_problems(conn)
            missing = sorted(set(_schema.COLUMNS) - present)
            found = None if missing or foreign else await conn.fetchval(self._sql.version)
        except _DRIVER_ERRORS as exc:
            if _closed_how(exc, conn) is not None:  # the session went: see _open_pool
                raise
            if isinstance(exc, asyncpg.exceptions.QueryCanceledError):  # see _ready_schema
                raise
            raise self._connection_error(
                f"cannot read sitq's tables in schema {self.schema!r}: {exc}",
                cause=exc,
            ) from exc
        if foreign:  # in the words of a writing connect: the same schema is refused the same way
            raise self._foreign_tables(foreign)
        if missing:
            raise self._connection_error(
                f"PostgreSQL schema {self.schema!r} does not hold sitq's tables "
                f"({', '.join(missing)} missing or not readable); a read-only connect creates nothing",
            )
        if changes:
            raise self._changed_tables(changes)
        self._refuse_newer_version(found)

    def _foreign_tables(self, foreign: list[str]) -> ConnectionError:
        """The refusal of a schema holding tables of sitq's names that sitq did not make (any connect, and exists)."""
        return self._connection_error(
            f"PostgreSQL schema {self.schema!r} already holds table(s) {', '.join(foreign)} that sitq "
            "did not create; give sitq a schema of its own (the schema option, ?schema=... in a URL; "
            "nothing in this one was changed)",
        )

    def _changed_tables(self, changes: list[str]) -> ConnectionError:
        """The refusal of sitq's own tables, changed so that sitq cannot use them (in the SQLite backend's words)."""
        return self._connection_error(
            f"PostgreSQL schema {self.schema!r} holds sitq's tables, changed so that sitq cannot use them: "
            f"{'; '.join(changes)}; put back what sitq needs (the schema is in docs/how-to/postgres-backend.md) or "
            "restore a backup; columns of your own are fine where an insert may leave them out (nothing in this "
            "one was changed)",
        )

    def _refuse_newer_version(self, found: Any) -> None:
        """A ConnectionError when the schema was written by a newer sitq-postgres than this one."""
        number = _schema.version_number(found)
        if number is not None and number > SCHEMA_VERSION:
            raise self._connection_error(
                f"PostgreSQL schema {self.schema!r} has sitq schema version {found}, newer than this "
                f"sitq-postgres understands ({SCHEMA_VERSION}); upgrade sitq-postgres",
            )

    async def _schema_problems(self, conn: Connection) -> tuple[list[str], list[str], set[str]]:
        """(tables of sitq's names that sitq did not make, what keeps sitq from using its own, the tables present).

        sitq writes its schema version and its mark (``schema.MARK_KEY``)
        into ``meta`` in the transaction that creates the tables, so tables
        without them are someone else's, and writing into them would mix
        sitq's rows into them: an application's ``meta`` may hold a
        ``schema_version`` of its own. A ``meta`` at a version written before
        the mark (``schema.UNMARKED_VERSIONS``) without it is sitq's when
        sitq's ``tasks`` or ``results`` (by their columns) stand beside it.
        Tables of sitq's are checked against the columns of that version
        (``schema.column_problems``): one that lacks a column sitq needs, or
        has one that every insert would have to fill, is refused at connect
        instead of failing every enqueue or claim after it.
        """
        rows = await conn.fetch(self._sql.table_columns, self.schema, list(_schema.COLUMNS))
        columns: dict[str, dict[str, bool]] = {}
        for table, column, may_be_left_out, default in rows:
            columns.setdefault(table, {})[column] = bool(may_be_left_out) or not _schema.is_null_default(default)
        if not columns:
            return [], [], set()
        version, marked = None, False
        if {"key", "value"} <= set(columns.get("meta", {})):
            version, marked = await conn.fetchrow(self._sql.meta_state)
        everyone = [name for name in _schema.COLUMNS if name in columns]
        number = _schema.version_number(version)
        if number is None:
            if marked:  # sitq's own meta, its version garbled or deleted: say so, not "sitq did not create"
                raise self._unreadable_version(version)
            return everyone, [], set(columns)
        foreign, changes = _schema.column_problems(number, columns)
        if not marked:
            beside = [name for name in ("tasks", "results") if name in columns]
            if number not in _schema.UNMARKED_VERSIONS or not beside or foreign:
                return everyone, [], set(columns)  # an application's meta (and whatever stands beside it)
        return foreign, changes, set(columns)

    def _unreadable_version(self, version: object) -> ConnectionError:
        """The refusal of sitq's own schema (its mark in ``meta``) whose ``schema_version`` cannot be read."""
        meta = f'"{self.schema}".meta'
        if version is None:
            found = "its meta has no schema_version row"
            fix = f"INSERT INTO {meta} (key, value) VALUES ('schema_version', '{SCHEMA_VERSION}')"
        else:
            found = f"its meta's schema_version is {version!r}, not a schema version (a whole number from 1)"
            fix = f"UPDATE {meta} SET value = '{SCHEMA_VERSION}' WHERE key = 'schema_version'"
        return self._connection_error(
            f"PostgreSQL schema {self.schema!r} holds sitq's tables, but their schema version cannot be read: "
            f"{found}; put back the version they were made at ({fix}, when they were made by this "
            f"sitq-postgres, whose schema version is {SCHEMA_VERSION}) or restore a backup (nothing in this one "
            "was changed)",
        )

    async def _call(self, operation: str, body: Callable[[Connection], Awaitable[T]], *, transaction: bool = True) -> T:
        """Run ``body`` on a pooled connection (inside one transaction), mapping driver errors."""
        loop = asyncio.get_running_loop()
        self._in_flight[loop] = self._in_flight.get(loop, 0) + 1
        try:
            return await self._call_counted(operation, body, transaction=transaction)
        finally:
            left = self._in_flight[loop] = self._in_flight[loop] - 1
            if not left:
                del self._in_flight[loop]
                drained = self._drained.pop(loop, None)
                if drained is not None:
                    drained.set()

    async def _call_counted(
        self, operation: str, body: Callable[[Connection], Awaitable[T]], *, transaction: bool
    ) -> T:
        """``_call`` itself, once counted as under way.

        A connection the server closed (``pg_terminate_backend``, a restart,
        an idle timeout) stays in the pool until it is next used, and then
        fails that call. Such a connection is dropped, so the pool connects
        anew, and the call runs again on another connection when that is
        safe: it had not begun its own statements (nothing of it reached the
        server), or it only reads. At most once per pooled connection; past
        that, or for a write cut mid-way, the caller gets a ConnectionError
        that says the connection was closed.

        A statement asyncpg refused to send because the server had ended the
        session before it (see ``_refused_unsent``) runs again too, even
        mid-call: nothing of it reached the server, and a transaction begun
        on that connection ends with it, uncommitted. (A call without a
        transaction writes with one statement, so nothing of it is stored.)

        A call of ``_DEADLOCK_RERUNS`` whose transaction the server aborted
        as a deadlock's victim runs again (rolled back: none of it stayed),
        at most ``_DEADLOCK_RETRIES`` times, after a short random pause so
        that the two sides do not meet again in step; logged once a call.
        """
        pool = await self._pool()
        releases = self._releases.setdefault(asyncio.get_running_loop(), _Releases())
        reruns = 0
        deadlocks = 0
        while True:
            finished = False  # the body ran (and committed): a later error only concerns the connection
            started = False  # the body began: a write's statements may have reached the server
            closed: str | None = None  # why the connection under the call is gone, when it is
            unsent = False  # asyncpg refused a statement of the body before sending it: the session had ended
            leased = False  # a connection was had: an error before it came from the pool's (re)connect
            result: T
            try:
                async with _Leased(pool, releases, self.connect_timeout) as conn:
                    leased = True
                    try:
                        if time.monotonic() - self._clock_read_at > _CLOCK_RECHECK:
                            await self._read_server_clock(conn)
                        if not transaction:
                            started = True
                            result = await body(conn)
                        else:
                            async with conn.transaction():
                                started = True
                                result = await body(conn)
                    except Exception as exc:
                        closed = _closed_how(exc, conn)
                        unsent = _refused_unsent(exc)
                        if closed is not None:  # not handed out again: asyncpg may still think it usable
                            _drop(conn)
                        elif isinstance(exc, asyncpg.exceptions.ReadOnlySQLTransactionError):
                            # a session begun read-only stays so (a standby, a demoted primary, a read-only
                            # default): this one and the pool's others are replaced, so that the next call
                            # reaches the database as it is by then
                            _drop(conn)
                            await pool.expire_connections()
                        raise
                    finished = True
                return result
            except SitqError:
                raise
            except Exception as exc:
                if finished:  # giving the connection back failed (it was dropped after the commit)
                    # (a read, or a single statement, has nothing to commit: it just finished)
                    done = "committed" if transaction else "finished"
                    after = _closed_how(exc, None)
                    if after is not None:  # the pool connects anew: nothing for anyone to do
                        log.debug("%s %s, then %s", operation, done, after)
                    else:
                        log.warning("%s %s, then its connection failed: %s", operation, done, describe_exception(exc))
                    return result
                if not isinstance(exc, _DRIVER_ERRORS):
                    raise
                if (
                    isinstance(exc, asyncpg.exceptions.DeadlockDetectedError)
                    and closed is None
                    and transaction
                    and operation in _DEADLOCK_RERUNS
                    and deadlocks < _DEADLOCK_RETRIES
                ):
                    if not deadlocks:
                        log.warning(
                            "PostgreSQL %s was aborted as a deadlock's victim; running it again: %s",
                            operation,
                            _described(exc),
                        )
                    await asyncio.sleep(random.uniform(0, _DEADLOCK_PAUSE * 2**deadlocks))
                    deadlocks += 1
                    continue
                if closed is not None:
                    if (not started or unsent or operation in _READS) and reruns < self.max_connections:
                        reruns += 1
                        log.info("PostgreSQL %s: %s; running it again on another connection", operation, closed)
                        continue
                    raise self._connection_error(
                        f"PostgreSQL {operation} failed: {closed}", operation=operation, cause=exc
                    ) from exc
                gone = self._gone_for_good(operation, exc, connecting=not leased)
                if gone is not None:
                    raise gone from exc
                if isinstance(exc, asyncpg.exceptions.ReadOnlySQLTransactionError):  # a worker retries it
                    raise self._connection_error(
                        f"PostgreSQL {operation} failed: the database is read-only ({exc}; a hot standby, a primary "
                        "demoted to one, or default_transaction_read_only on the database or role); the connection "
                        "was dropped and the next call connects anew (with several hosts, "
                        "target_session_attrs=read-write picks a writable one)",
                        operation=operation,
                        cause=exc,
                    ) from exc
                if isinstance(exc, _OUT_OF_REACH):  # as at connect
                    raise self._connection_error(
                        f"PostgreSQL {operation} failed: the server at {self._where()} is out of reach: "
                        f"{_described(exc)}",
                        operation=operation,
                        cause=exc,
                    ) from exc
                if isinstance(exc, asyncpg.exceptions.DiskFullError):  # SQLSTATE 53100: the server's disk
                    raise StoreFullError(
                        f"PostgreSQL {operation} failed: {_described(exc)} (the disk holding the database is "
                        "full: free some space on the server)",
                        operation=operation,
                        backend_type="postgres",
                        cause=exc,
                    ) from exc
                raise BackendError(
                    f"PostgreSQL {operation} failed: {_described(exc)}",
                    operation=operation,
                    backend_type="postgres",
                    cause=exc,
                ) from exc

    # ----------------------------------------------------------------- enqueue

    async def enqueue_many(self, tasks: Sequence[Task]) -> list[str]:
        if isinstance(tasks, Task) or not isinstance(tasks, Sequence):
            raise ValidationError(f"tasks must be a sequence of Task, got {type(tasks).__name__}", parameter="tasks")
        items = [checks.check_task(task) for task in tasks]
        if not items:
            return []
        ids = [task.id for task in items]
        seen: set[str] = set()
        for task_id in ids:
            if task_id in seen:
                raise ValidationError(
                    f"task id {task_id!r} appears twice in one batch", parameter="tasks", value=task_id
                )
            seen.add(task_id)
        columns: list[list[Any]] = [[] for _ in range(19)]
        sizes: list[int] = []
        for task in items:
            checks.task_fits(task, len(task.payload), _FIELD_LIMIT, "a PostgreSQL database")
            sizes.append(
                len(task.payload)
                + sum(_text_size(text) for text in (task.id, task.serializer, task.function_name, task.queue))
                + _text_size(task.worker_id)
                + _text_size(task.error)
                + _ROW_BYTES
            )
            row = (
                task.id,
                bytes(task.payload),
                task.serializer,
                task.function_name,
                task.queue,
                task.priority,
                task.eta,
                task.max_retries,
                float(task.retry_backoff),
                None if task.timeout is None else float(task.timeout),
                task.max_lease_expiries,
                task.enqueued_at,
                task.attempts,
                task.lease_expiries,
                task.started_at,
                task.finished_at,
                task.worker_id,
                task.error,
                bool(task.cancel_requested),
            )
            for column, value in zip(columns, row, strict=True):
                column.append(value)
        sql = self._sql
        # a batch over _STATEMENT_BYTES: several statements in one transaction (see there), in enqueue order
        parts = [[column[start:end] for column in columns] for start, end in _spans(sizes, _STATEMENT_BYTES)]

        sent = False  # an attempt's statement may have reached the server: only then is its fate unknown

        async def body(conn: Connection) -> None:
            nonlocal sent
            sent = True
            try:
                if len(parts) == 1:
                    await conn.execute(sql.insert, *parts[0], sql.work_channel)
                else:  # inside the call's transaction; a savepoint, so that the look-up below can run after a refusal
                    async with conn.transaction():
                        for part in parts:
                            await conn.execute(sql.insert, *part, sql.work_channel)  # one notice: same payload
            except asyncpg.UniqueViolationError as exc:
                taken = await conn.fetchval(sql.existing_ids, ids)
                raise ValidationError(
                    f"task id {taken or '?'!r} already exists; nothing of this batch was stored",
                    parameter="tasks",
                    value=taken,
                    cause=exc,
                ) from exc

        attempt = 0
        settle_by: float | None = None  # set once an attempt's fate became unknown: until then, retry
        while True:
            try:
                # one statement is atomic by itself; several share a transaction
                await self._call("enqueue", body, transaction=len(parts) > 1)
            except ValidationError as again:
                if attempt == 0 or again.context.get("value") not in seen:
                    raise
                return ids  # an id of this batch "already exists": the attempt that lost its answer stored it
            except BackendError as exc:
                lost = sent and _connection_lost(exc.cause)
                sent = False
                if settle_by is None:
                    if not lost:
                        raise  # nothing was sent (no connection to be had), or the store refused it
                    window = min(max(self.connect_timeout, _ENQUEUE_SETTLE_MIN), _ENQUEUE_SETTLE_MAX)
                    settle_by = time.monotonic() + window
                gone = isinstance(exc, StoreGoneError)  # the database was dropped meanwhile: no retry reaches it
                if gone or not (lost or isinstance(exc, ConnectionError)) or time.monotonic() >= settle_by:
                    raise _fate_unknown(exc, ids, self._where()) from exc
                # The connection went during the statement: it may have committed or not. The same ids
                # again settle it: stored now, or "already exists" because an earlier attempt was stored.
                # A wave of killed sessions, or a restart, can take the next connections too: keep trying
                # (paced) for connect_timeout, then say that the batch may be stored, naming its ids.
                log.warning("enqueue lost its connection (%s); trying again", exc.cause)
                await asyncio.sleep(min(0.05 * 2**attempt, 1.0))
                attempt += 1
            else:
                return ids

    # ----------------------------------------------------------------- reserve

    async def reserve(
        self,
        *,
        worker_id: str,
        limit: int,
        lease_seconds: float,
        queues: Sequence[str] | None = None,
    ) -> list[ReservedTask]:
        worker = checks.worker_id(worker_id)
        wanted = checks.reserve_limit(limit)
        lease = timedelta(seconds=checks.lease_seconds(lease_seconds))
        names = checks.queue_names(queues)
        if names == []:
            return []
        body, ended = self._reserve_body(worker, wanted, lease, names)
        record_mark(self, self.notifier.count(_WORK_KEY))
        reserved = await self._call("reserve", body)
        await self._report_store_endings(ended)
        return reserved

    def _reserve_body(
        self, worker: str, wanted: int, lease: timedelta, names: list[str] | None
    ) -> tuple[Callable[[Connection], Awaitable[list[ReservedTask]]], list[str]]:
        """The claim transaction's body; its clock is read on the connection it runs on.

        A lease counted from before a wait for a pooled connection could be
        granted already expired, and another worker would take the task. The
        list returned beside it gets the ids of tasks the body ended instead
        of handing out (for :meth:`_report_store_endings` after the commit).
        """
        sql = self._sql
        ended_ids: list[str] = []

        async def body(conn: Connection) -> list[ReservedTask]:
            ended_ids.clear()  # a body run again starts afresh
            now = self.now()
            reserved: list[ReservedTask] = []
            finished: list[str] = []
            while len(reserved) < wanted:
                need = wanted - len(reserved)
                if names is None:
                    rows = await conn.fetch(sql.candidates, now, need)
                else:
                    rows = await conn.fetch(sql.candidates_in, now, need, names)
                if not rows:
                    break
                expired = [row for row in rows if row["status"] == "running"]
                cancelled = [row["seq"] for row in expired if row["cancel_requested"]]  # worker gone
                poisoned = [
                    row["seq"]
                    for row in expired
                    if not row["cancel_requested"] and row["lease_expiries"] + 1 >= row["max_lease_expiries"]
                ]
                # queued with its cancel requested (by older sitq): it never runs again
                unrun = [row["seq"] for row in rows if row["status"] != "running" and row["cancel_requested"]]
                ended = {*cancelled, *poisoned, *unrun}
                leased = [row["seq"] for row in rows if row["seq"] not in ended]
                for statement, seqs, status in (
                    (sql.cancel_expired, cancelled, "cancelled"),
                    (sql.poison, poisoned, "failed"),
                    (sql.cancel_queued_requested, unrun, "cancelled"),
                ):
                    if not seqs:
                        continue
                    for done in await conn.fetch(statement, now, seqs):
                        await self._store_result(conn, done["id"], status, None, done["error"], None, done)
                        finished.append(done["id"])
                        ended_ids.append(done["id"])
                        if status == "cancelled":  # as sitq-sqlite says it: nobody else reports this ending
                            log.info(
                                "task %s (%s) cancelled (its worker is gone)"
                                if statement is sql.cancel_expired
                                else "task %s (%s) cancelled without running again (its cancel was requested before)",
                                done["id"],
                                checks.one_log_line(done["function_name"]),
                            )
                        else:  # as the worker logs a final failure: id, function, attempts, error
                            log.warning(
                                "task %s (%s) failed after %d attempt(s): %s",
                                done["id"],
                                checks.one_log_line(done["function_name"]),
                                done["attempts"],
                                done["error"],
                            )
                if leased:
                    tokens = [secrets.token_hex(16) for _ in leased]
                    claimed = await conn.fetch(sql.claim, worker, now + lease, now, leased, tokens)
                    order = {seq: index for index, seq in enumerate(leased)}
                    for row in sorted(claimed, key=lambda r: order[r["seq"]]):
                        reserved.append(ReservedTask(_row_to_task(row, 2), row["lease_token"], now + lease))
                if not ended:
                    break
            if finished:
                await self._notify_results(conn, finished)
            return reserved

        return body, ended_ids

    async def _report_store_endings(self, task_ids: list[str]) -> None:
        """Tell lifecycle observers of tasks a reserve ended itself (no worker reports those)."""
        await store_endings.report_ids(self, task_ids)

    async def heartbeat(self, leases: Sequence[tuple[str, str]], lease_seconds: float) -> dict[str, LeaseState]:
        lease = timedelta(seconds=checks.lease_seconds(lease_seconds))
        pairs = checks.lease_pairs(leases)
        if not pairs:
            return {}
        sql = self._sql

        async def body(conn: Connection) -> dict[str, LeaseState]:
            now = self.now()  # on the connection: a renewal counts from now, not from before a wait for it
            rows = await conn.fetch(sql.heartbeat, now + lease, [p[0] for p in pairs], [p[1] for p in pairs])
            held = {row["id"]: row["cancel_requested"] for row in rows}
            return {
                task_id: (
                    LeaseState.LOST
                    if task_id not in held
                    else LeaseState.CANCEL_REQUESTED
                    if held[task_id]
                    else LeaseState.HELD
                )
                for task_id, _token in pairs
            }

        return await self._call("heartbeat", body)

    # ------------------------------------------------------------------ finish

    async def finish_many(self, outcomes: Sequence[Outcome]) -> list[bool]:
        items = checks.check_outcomes(outcomes)
        checks.outcomes_fit(items, _FIELD_LIMIT, "a PostgreSQL database")
        if not items:
            return []
        return await self._call("finish", self._finish_body(items, self.now()))

    async def finish_and_reserve(
        self,
        outcomes: Sequence[Outcome],
        *,
        worker_id: str,
        limit: int,
        lease_seconds: float,
        queues: Sequence[str] | None = None,
    ) -> tuple[list[bool], list[ReservedTask]]:
        """Both in one transaction: one commit per worker cycle."""
        items = checks.check_outcomes(outcomes)
        checks.outcomes_fit(items, _FIELD_LIMIT, "a PostgreSQL database")
        worker = checks.worker_id(worker_id)
        wanted = checks.reserve_limit(limit)
        lease = timedelta(seconds=checks.lease_seconds(lease_seconds))
        names = checks.queue_names(queues)
        finish = self._finish_body(items, self.now())
        reserve, ended = self._reserve_body(worker, wanted, lease, names)
        record_mark(self, self.notifier.count(_WORK_KEY))

        async def body(conn: Connection) -> tuple[list[bool], list[ReservedTask]]:
            accepted = await finish(conn) if items else []
            reserved = await reserve(conn) if names != [] else []
            return accepted, reserved

        answer = await self._call("finish_and_reserve", body)
        await self._report_store_endings(ended)
        return answer

    def _finish_body(self, items: list[Outcome], now: datetime) -> Callable[[Connection], Awaitable[list[bool]]]:
        sql = self._sql

        set_based = len(items) > 1 and all(o.kind in _FINAL_KINDS for o in items)
        set_based = set_based and len({o.task_id for o in items}) == len(items)
        parts = [items]
        if set_based:  # over _STATEMENT_BYTES: several statements (see there), in id order as each locks its rows
            sizes = [_outcome_size(o) for o in items]
            if sum(sizes) > _STATEMENT_BYTES:
                ordered = sorted(items, key=lambda o: o.task_id)
                sizes = [_outcome_size(o) for o in ordered]
                parts = [ordered[start:end] for start, end in _spans(sizes, _STATEMENT_BYTES)]

        async def body(conn: Connection) -> list[bool]:
            if set_based:  # distinct tasks, all final: order cannot matter, so one statement does them all
                done: set[str] = set()
                for part in parts:
                    rows = await conn.fetch(
                        sql.finish_set,
                        [o.task_id for o in part],
                        [o.lease_token for o in part],
                        [o.kind for o in part],
                        [o.finished_at or now for o in part],
                        [o.error for o in part],
                        [o.started_at for o in part],
                        [None if o.value is None else bytes(o.value) for o in part],
                        [o.traceback for o in part],
                    )
                    done.update(row["id"] for row in rows)
                if done:
                    await self._notify_results(conn, [o.task_id for o in items if o.task_id in done])
                return [o.task_id in done for o in items]
            accepted: list[bool] = [False] * len(items)
            finished: list[str] = []
            requeued = False
            # in id order (stable: one task's outcomes keep their order), like the set-based statements and
            # heartbeats, so concurrent transactions always lock rows in the same order
            for index in sorted(range(len(items)), key=lambda position: items[position].task_id):
                outcome = items[index]
                fence = (outcome.task_id, outcome.lease_token)
                if outcome.kind in _FINAL_KINDS:
                    row = await conn.fetchrow(
                        sql.finish, *fence, outcome.kind, outcome.finished_at or now, outcome.error, outcome.started_at
                    )
                    if row is not None:
                        await self._store_result(
                            conn, outcome.task_id, outcome.kind, outcome.value, outcome.error, outcome.traceback, row
                        )
                        finished.append(outcome.task_id)
                elif outcome.kind == "retry":
                    row = await conn.fetchrow(sql.retry, *fence, outcome.retry_at or now, outcome.error)
                    requeued = requeued or row is not None
                else:  # release
                    row = await conn.fetchrow(sql.release, *fence, now, outcome.started_at)
                    requeued = requeued or row is not None
                if row is None and outcome.kind not in _FINAL_KINDS:
                    # its cancel was requested while it ran (or waited): it ends cancelled, never queued again
                    row = await conn.fetchrow(
                        sql.finish, *fence, "cancelled", outcome.finished_at or now, "cancelled", outcome.started_at
                    )
                    if row is not None:
                        await self._store_result(conn, outcome.task_id, "cancelled", None, "cancelled", None, row)
                        finished.append(outcome.task_id)
                accepted[index] = row is not None
            if finished:
                await self._notify_results(conn, finished)
            if requeued:
                await conn.execute(sql.notify, sql.work_channel, "")
            return accepted

        return body

    async def _store_result(
        self,
        conn: Connection,
        task_id: str,
        status: str,
        value: bytes | None,
        error: str | None,
        traceback: str | None,
        row: Mapping[str, Any],
    ) -> None:
        await conn.execute(
            self._sql.store_result,
            task_id,
            status,
            None if value is None else bytes(value),
            error,
            traceback,
            row["enqueued_at"],
            row["started_at"],
            row["finished_at"],
            row["attempts"],
            row["serializer"],
        )

    async def _notify_results(self, conn: Connection, task_ids: list[str]) -> None:
        """NOTIFY the ids of newly stored results (see ``_result_notices``); never the reason the caller fails."""
        for payload in _result_notices(task_ids):
            await conn.execute(self._sql.notify_result, self._sql.result_channel, payload)

    # ------------------------------------------------------------------ cancel

    async def cancel(self, task_id: str) -> bool:
        checks.task_id(task_id)
        now = self.now()
        sql = self._sql

        async def body(conn: Connection) -> bool:
            row = await conn.fetchrow(sql.cancel, task_id, now)  # one statement: see sql.cancel
            if row is None:
                return False  # final or unknown
            if row["status"] == "cancelled":  # it was queued
                await self._store_result(conn, task_id, "cancelled", None, "cancelled", None, row)
                await self._notify_results(conn, [task_id])
            return True

        return await self._call("cancel", body)

    async def requeue(self, task_id: str, *, eta: datetime | None = None) -> bool:
        checks.task_id(task_id)
        due = self.now() if eta is None else checks.aware(eta, "eta")
        sql = self._sql

        async def body(conn: Connection) -> bool:
            if await conn.fetchval(sql.requeue, task_id, due) is None:
                return False
            await conn.execute(sql.delete_result, task_id)
            await conn.execute(sql.notify, sql.work_channel, "")
            return True

        return await self._call("requeue", body)

    async def requeue_many(self, task_ids: Sequence[str], *, eta: datetime | None = None) -> list[bool]:
        """Every id in one transaction (one statement per ``_STATEMENT_BYTES`` of ids) and one NOTIFY."""
        ids = checks.task_ids(task_ids)
        when = checks.aware_or_none(eta, "eta")
        if not ids:
            return []
        due = self.now() if when is None else when
        distinct = sorted(set(ids))  # in id order, as each statement locks its rows
        parts = [distinct[start:end] for start, end in _spans([_text_size(i) for i in distinct], _STATEMENT_BYTES)]
        sql = self._sql

        async def body(conn: Connection) -> set[str]:
            requeued: set[str] = set()
            for part in parts:
                requeued.update(row["id"] for row in await conn.fetch(sql.requeue_set, part, due))
            if requeued:
                await conn.execute(sql.notify, sql.work_channel, "")
            return requeued

        requeued = await self._call("requeue", body)
        answers: list[bool] = []
        for task_id in ids:  # a repeated id: True in its first place only
            answers.append(task_id in requeued)
            requeued.discard(task_id)
        return answers

    # ------------------------------------------------------------------- reads

    async def get_task(self, task_id: str) -> Task | None:
        checks.task_id(task_id)

        async def body(conn: Connection) -> Task | None:
            row = await conn.fetchrow(self._sql.get_task, task_id)
            return None if row is None else _row_to_task(row, 0)

        return await self._call("get_task", body, transaction=False)

    async def get_result(self, task_id: str) -> Result | None:
        checks.task_id(task_id)

        async def body(conn: Connection) -> Result | None:
            row = await conn.fetchrow(self._sql.get_result, task_id)
            return None if row is None else _row_to_result(row)

        return await self._call("get_result", body, transaction=False)

    async def _get_results(self, task_ids: Sequence[str]) -> dict[str, Result]:
        """The stored results among ``task_ids`` (one query), by task id."""

        async def body(conn: Connection) -> dict[str, Result]:
            rows = await conn.fetch(self._sql.get_results, list(task_ids))
            return {row["task_id"]: _row_to_result(row) for row in rows}

        return await self._call("get_result", body, transaction=False)

    def _result_reads(self) -> ResultReads:
        loop = asyncio.get_running_loop()
        reads = self._reads.get(loop)
        if reads is None:
            reads = self._reads[loop] = ResultReads(self._get_results)
        return reads

    async def wait_for_result(self, task_id: str, timeout: float | None) -> Result | None:
        """Wake on the NOTIFY of another process (or ``notify_results`` here), re-reading at least every second."""
        checks.task_id(task_id)
        seconds = None if timeout is None else checks.as_seconds(timeout)
        if timeout is not None and (seconds is None or not seconds >= 0):  # NaN fails too
            raise ValidationError("timeout must be None or a number >= 0", parameter="timeout", value=timeout)
        timeout = seconds
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        key = ("sitq", "result", task_id)
        pauses = safety_pauses(_RESULT_RECHECK_FIRST, _RESULT_RECHECK_MAX, loop.time)  # waiters re-read together
        reads = self._result_reads()
        backoff = _WAIT_RETRY_FIRST
        while True:
            try:
                listening = timeout == 0 or await self._listening(task_id)  # before the read, so a result
                with self.notifier.subscribe(key) as subscription:  # stored after it is announced, and a notice
                    result = await reads.read(task_id)  # during the read is not missed (reads of this turn shared)
                    self._outage_over()
                    if result is not None:
                        return result
                    remaining = None if deadline is None else deadline - loop.time()
                    if remaining is not None and remaining <= 0:
                        return None
                    # the re-read is only a safety net for a lost notice; with no listener it is the way to know
                    step = next(pauses) if listening else backoff
                    if not listening:
                        backoff = min(backoff * 2, _WAIT_RETRY_MAX)
                    await subscription.wait(step if remaining is None else min(step, remaining))
            except BackendError as exc:
                # a connection lost or refused (a failover, a full server) while time remains: wait and
                # try again, as a waiter whose listener was lost does; the last error if time runs out
                remaining = None if deadline is None else deadline - loop.time()
                lost = isinstance(exc, ConnectionError) or _connection_lost(exc.cause)
                if timeout == 0 or not lost or not self._reached or (remaining is not None and remaining <= 0):
                    raise
                self._outage_begun(exc)
                log.debug("waiting for %s: %s; trying again", task_id, exc)
                await asyncio.sleep(backoff if remaining is None else min(backoff, remaining))
                backoff = min(backoff * 2, _WAIT_RETRY_MAX)

    def _outage_begun(self, exc: BackendError) -> None:
        """Warn once per outage, whatever the number of waiters and tries, that results wait on the server."""
        with self._lock:
            if self._waiting_out_outage:
                return
            self._waiting_out_outage = True
        log.warning(
            "get_result: results are awaited while PostgreSQL cannot be reached (%s); trying again until it answers",
            exc.message,
        )

    def _outage_over(self) -> None:
        with self._lock:
            if not self._waiting_out_outage:
                return
            self._waiting_out_outage = False
        log.info("get_result: PostgreSQL (%s) answers again; results are read again", self._where())

    async def _listening(self, task_id: str) -> bool:
        """Start this loop's listener if need be; False when it cannot be had now (the waiter then polls).

        A server that refuses one more connection (a role's or the server's
        limit reached) must not keep a waiter from a result it can read through
        the pool: it reads, and tries the listener again at its next turn.
        """
        try:
            await self._ensure_listener()
        except BackendError as exc:
            if not (isinstance(exc, ConnectionError) or _connection_lost(exc.cause)) or not self._reached:
                raise  # never reached: the read would only try the same connect again
            log.debug("waiting for %s without a listener, reading instead: %s", task_id, exc)
            return False
        return True

    async def wait_for_work(self, timeout: float) -> None:
        """Sleep until another process (or this one) enqueues, at most ``timeout`` seconds."""
        if await self._ensure_listener():
            return  # just started listening: work enqueued before that went unannounced, so look now
        with self.notifier.subscribe(_WORK_KEY) as subscription:
            mark = take_mark(self)
            if mark is not None and mark != self.notifier.count(_WORK_KEY):
                return  # work was announced while this caller's last reserve ran
            await subscription.wait(timeout)

    async def _ensure_listener(self) -> bool:
        """Make sure a connection of this event loop LISTENs on the schema's channels; True if started now.

        One listener per loop, like the pools: asyncpg delivers notifications
        only while the loop that owns the connection runs.
        """
        loop = asyncio.get_running_loop()
        listener = self._listeners.get(loop)
        if listener is not None and not listener.is_closed():
            return False
        lock = self._listener_locks.setdefault(loop, asyncio.Lock())
        async with lock:
            listener = self._listeners.get(loop)
            if listener is not None and not listener.is_closed():
                return False
            await self._pool()  # the schema exists (and the server answers) before listening

            def cannot_listen(exc: BaseException, attempts: int) -> ConnectionError:
                again = f", {attempts} times in a row" if attempts > 1 else ""
                how = _closed_how(exc, None) or exc
                return self._connection_error(f"cannot LISTEN on PostgreSQL ({self._where()}): {how}{again}", cause=exc)

            conn = await self._opened_again_if_cut(
                lambda: self._uncut(self._open_listener(), _terminate), "LISTEN", cannot_listen
            )
            with self._lock:
                self._listeners[loop] = conn
            self._release_closed_loops()
            return True

    async def _opened_again_if_cut(
        self,
        open_once: Callable[[], Awaitable[T]],
        what: str,
        refusal: Callable[[BaseException, int], ConnectionError],
    ) -> T:
        """``open_once()``, made again when the server ends its session part-way, up to ``_CONNECT_ATTEMPTS`` in all.

        A session ended as it is set up (``pg_terminate_backend``, an idle
        timeout) says nothing of the server: a fresh one usually works. Any
        other driver error, or the last try's, becomes ``refusal(error, tries)``;
        sitq's own errors (a refused schema) pass as they are.
        """
        attempt = 1
        while True:
            try:
                return await open_once()
            except SitqError:  # sitq's ConnectionError is an OSError too: as it is
                raise
            except (TimeoutError, *_DRIVER_ERRORS) as exc:
                closed = _closed_how(exc, None)
                if closed is None or attempt >= _CONNECT_ATTEMPTS:
                    raise refusal(exc, attempt) from exc
                attempt += 1
                log.info("PostgreSQL %s: %s; connecting again", what, closed)

    async def _uncut(self, opening: Awaitable[T], dispose: Callable[[T], None]) -> T:
        """Await a connect that a cancelled caller must not cut off half-way.

        asyncpg cancelled in its TLS step leaves a future whose error nobody
        retrieves ("Future exception was never retrieved" at exit, asyncpg
        #1211): the connect runs as a task of its own, a caller cancelled
        meanwhile leaves it to finish, ``dispose`` then closes what it
        opened, and ``close()`` waits (a bounded time) for this loop's connects
        still in flight before it closes what is registered.
        """
        task = asyncio.ensure_future(opening)
        self._opening.add(task)
        task.add_done_callback(self._opening.discard)
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            task.add_done_callback(functools.partial(_dispose_unwanted, dispose))
            raise

    async def _open_listener(self) -> Connection:
        conn: Connection = await asyncpg.connect(
            self.dsn, timeout=self.connect_timeout, server_settings=self._server_settings, record_class=_Row
        )
        try:
            await conn.add_listener(self._sql.work_channel, self._on_work)
            await conn.add_listener(self._sql.result_channel, self._on_results)
            conn.add_termination_listener(self._on_listener_lost)
        except BaseException:
            conn.terminate()
            raise
        return conn

    def _on_listener_lost(self, _conn: object) -> None:
        # Notices sent while no connection listens are gone: every waiter re-reads (and listens again).
        self.notifier.notify_all()

    def _on_work(self, _conn: object, _pid: int, _channel: str, _payload: object) -> None:
        self.notifier.notify_many([_WORK_KEY])

    def _on_results(self, _conn: object, _pid: int, _channel: str, payload: object) -> None:
        self.notifier.notify_many(("sitq", "result", task_id) for task_id in _announced_ids(str(payload or "")))

    async def next_eta(self, queues: Sequence[str] | None = None) -> datetime | None:
        names = checks.queue_names(queues)
        if names == []:
            return None

        async def body(conn: Connection) -> datetime | None:
            if names is None:
                value: datetime | None = await conn.fetchval(self._sql.next_eta)
            else:
                value = await conn.fetchval(self._sql.next_eta_in, names)
            return _aware(value)

        return await self._call("next_eta", body, transaction=False)

    async def list_tasks(
        self,
        *,
        status: str | None = None,
        queue: str | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[Task]:
        wanted = checks.status_filter(status)
        if queue is not None and not isinstance(queue, str):
            raise ValidationError("queue must be a string or None", parameter="queue", value=queue)
        count, skip = checks.page(limit, offset)

        async def body(conn: Connection) -> list[Task]:
            rows = await conn.fetch(self._sql.list_tasks, wanted, queue, count, skip)
            return [_row_to_task(row, 0) for row in rows]

        return await self._call("list_tasks", body, transaction=False)

    async def counts(self, *, queue: str | None = None) -> dict[str, int]:
        if queue is not None and not isinstance(queue, str):
            raise ValidationError("queue must be a string or None", parameter="queue", value=queue)

        async def body(conn: Connection) -> dict[str, int]:
            found = {status.value: 0 for status in TaskStatus}
            for row in await conn.fetch(self._sql.counts, queue):
                found[row[0]] = int(row[1])
            return found

        return await self._call("counts", body, transaction=False)

    async def purge(self, *, older_than: datetime | None = None) -> int:
        """In id order, ``_PURGE_CHUNK_ROWS`` tasks per transaction, as sitq-sqlite does.

        Each chunk locks its rows in id order, as requeue_many and the
        worker's statements do, so none of them deadlocks with a purge; a
        purge of a million tasks neither holds a million row locks until it
        ends nor keeps a requeue or cancel of one of them waiting that long.
        The chunks committed before an error stay deleted.
        """
        cutoff = None if older_than is None else checks.aware(older_than, "older_than")
        size = _PURGE_CHUNK_ROWS
        sql = self._sql

        def chunk(after: str | None) -> Callable[[Connection], Awaitable[tuple[int, int, str | None]]]:
            async def body(conn: Connection) -> tuple[int, int, str | None]:
                if after is None:
                    row = await conn.fetchrow(sql.purge, cutoff, size)
                else:
                    row = await conn.fetchrow(sql.purge_after, cutoff, size, after)
                return int(row[0]), int(row[1]), row[2]

            return body

        deleted = 0
        after: str | None = None
        while True:
            gone, locked, last = await self._call("purge", chunk(after))  # moved on only once committed
            deleted += gone
            if locked < size:
                return deleted
            after = last


def _text_size(text: str | None) -> int:
    """The UTF-8 size of ``text`` as a statement carries it, counted exactly only when large enough to matter."""
    if not text:
        return 0
    return len(text) if len(text) < 1 << 16 else len(text.encode("utf-8", "surrogatepass"))


def _outcome_size(outcome: Outcome) -> int:
    """What one outcome adds to a ``finish_set`` statement, in bytes (see ``_STATEMENT_BYTES``)."""
    return (
        len(outcome.value or b"")
        + _text_size(outcome.error)
        + _text_size(outcome.traceback)
        + _text_size(outcome.task_id)
        + _text_size(outcome.lease_token)
        + _ROW_BYTES
    )


def _spans(sizes: Sequence[int], bound: int) -> list[tuple[int, int]]:
    """Consecutive ``(start, end)`` spans of ``sizes`` of at most ``bound`` in all; a larger item goes alone."""
    spans: list[tuple[int, int]] = []
    start = total = 0
    for index, size in enumerate(sizes):
        if index > start and total + size > bound:
            spans.append((start, index))
            start, total = index, 0
        total += size
    spans.append((start, len(sizes)))
    return spans


def _result_notices(task_ids: Sequence[str]) -> list[str]:
    """The NOTIFY payloads that announce results of ``task_ids``, each at most ``_NOTIFY_PAYLOAD_MAX`` bytes.

    Ids are joined by newlines (as sitq always sent them, so listeners of
    earlier versions read these too). An id holding a newline goes in a
    payload of its own, that newline first: no joined payload starts with one
    (ids are not empty), so ``_announced_ids`` reads it as one id instead of
    several others. An id too long for any payload is left out: nothing can
    carry it, and a NOTIFY the server refuses would roll back the finish or
    cancel that announces it. Its waiters see the result at their periodic
    re-read (as they do a notice lost with a listener's connection).
    """
    payloads: list[str] = []
    chunk: list[str] = []
    size = 0
    for task_id in task_ids:
        length = len(task_id.encode())
        if "\n" in task_id:
            if length + 1 <= _NOTIFY_PAYLOAD_MAX:
                payloads.append("\n" + task_id)
                continue
        elif length <= _NOTIFY_PAYLOAD_MAX:
            grown = size + 1 + length if chunk else length  # the chunk's bytes, joined
            if grown > _NOTIFY_PAYLOAD_MAX:
                payloads.append("\n".join(chunk))
                chunk, grown = [], length
            chunk.append(task_id)
            size = grown
            continue
        log.debug("result of task %.80r... not announced: its id (%d bytes) does not fit a NOTIFY", task_id, length)
    if chunk:
        payloads.append("\n".join(chunk))
    return payloads


def _announced_ids(payload: str) -> list[str]:
    """The task ids one result NOTIFY announces (see ``_result_notices``)."""
    if payload.startswith("\n"):
        return [payload[1:]]
    return payload.split("\n") if payload else []


def _configured(cls: type[PostgresBackend], options: dict[str, Any]) -> PostgresBackend:
    """A new, unconnected backend of ``cls`` with the given configuration (see ``PostgresBackend.__reduce__``)."""
    backend = cls.__new__(cls)
    PostgresBackend.__init__(backend, **options)
    return backend


def _close_dead_pool(pool: Pool) -> None:
    """Close each server connection of a pool whose event loop has closed.

    ``Pool.terminate()`` stops at the first connection ("Event loop is
    closed" is raised after its socket is closed), so each is closed on its own.
    """
    for holder in getattr(pool, "_holders", ()):
        conn = getattr(holder, "_con", None)
        if conn is not None:
            _close_dead_connection(conn)


def _dispose_unwanted(dispose: Callable[[Any], None], opened: asyncio.Task[Any]) -> None:
    """A connect whose caller gave up: close what it opened; take its error (nobody else will)."""
    if opened.cancelled():
        return
    if opened.exception() is None:
        dispose(opened.result())


class _Releases:
    """Wakes the calls of one pool waiting for one of its connections to come back (see ``_Leased``)."""

    __slots__ = ("_event",)

    def __init__(self) -> None:
        self._event: asyncio.Event | None = None

    def released(self) -> None:
        """A connection went back to the pool: every call waiting for one tries again."""
        event, self._event = self._event, None
        if event is not None:
            event.set()

    async def wait(self, seconds: float) -> None:
        """Until a connection goes back to the pool, at most ``seconds``."""
        if self._event is None:
            self._event = asyncio.Event()
        with contextlib.suppress(TimeoutError):
            await within(self._event.wait(), seconds)


class _Leased:
    """A pooled connection that a cancelled caller never waits for.

    asyncpg gives a connection back by resetting it on the server, and a
    cancelled query first waits for the server to confirm the cancel: on a
    stalled network either waits for the operating system's TCP timeout,
    so ``queue.counts()`` under a 2 s timeout took 20 s. A cancelled caller
    leaves at once and the connection goes back in the background: asyncpg
    still asks the server to cancel the statement (so a write cut short is
    not committed later, once a lock it waited for goes), and a give-back
    that takes longer than ``_RELEASE_TIMEOUT`` drops the connection.

    When the server refuses the pool a new connection for want of slots
    (the role's ``CONNECTION LIMIT``, the server's ``max_connections``:
    ``TooManyConnectionsError``) while the pool has connections of its own,
    the call waits for one of them to come back, up to ``wait`` seconds,
    instead of failing: a lease renewal that overlapped a claim otherwise
    failed, and a few such failures cost a live worker its leases.

    A class, not an ``asynccontextmanager``: an async generator used while a
    loop shuts down (a user's async generator cleaning up with a sitq call)
    made asyncio warn that it was scheduled after ``shutdown_asyncgens()``.
    """

    __slots__ = ("_conn", "_pool", "_releases", "_wait")

    def __init__(self, pool: Pool, releases: _Releases, wait: float) -> None:
        self._pool = pool
        self._releases = releases
        self._wait = wait
        self._conn: Connection | None = None

    async def __aenter__(self) -> Connection:
        deadline = time.monotonic() + self._wait
        while True:
            try:
                self._conn = await self._pool.acquire()
                return self._conn
            except asyncpg.TooManyConnectionsError as exc:
                left = deadline - time.monotonic()
                if self._pool.get_size() == 0 or left <= 0:  # none of its own to wait for, or waited enough
                    raise
                log.debug(
                    "connection limit reached with %d pooled connection(s) open; waiting for one: %s",
                    self._pool.get_size(),
                    exc,
                )
                # woken when one goes back; retried a second later anyway (another process may free a slot)
                await self._releases.wait(min(left, _FULL_RETRY))

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: Any) -> None:
        conn, self._conn = self._conn, None
        giving_back = _give_back_later(self._pool, conn, self._releases)
        if exc_type is not None and issubclass(exc_type, asyncio.CancelledError):
            return
        if exc_type is not None:
            # the body's error is the one to raise, not a failure to give the connection back
            try:
                await asyncio.shield(giving_back)
            except Exception as failure:  # asyncpg terminated the connection: the pool opens another
                log.debug("giving a connection back failed: %s", failure)
            return
        await asyncio.shield(giving_back)


_giving_back: set[asyncio.Task[None]] = set()  # referenced until done (the loop keeps only weak references)


def _give_back_later(pool: Pool, conn: Connection, releases: _Releases) -> asyncio.Task[None]:
    """Give ``conn`` back to ``pool`` in a task of its own, at most ``_RELEASE_TIMEOUT`` long (then it is dropped).

    A caller cancelled meanwhile leaves it to finish. The task cancelled
    itself drops the connection: ``asyncio.run`` ending cancels every task,
    this one (and asyncpg's own inner release task) even before it ran, and
    the pool then counted the connection as in use for good, so closing it
    waited out ``_CLOSE_TIMEOUT`` (an unstopped worker: 5 s more at exit).
    """
    task = asyncio.get_running_loop().create_task(
        pool.release(conn, timeout=_RELEASE_TIMEOUT), name="sitq-postgres-give-back"
    )
    _giving_back.add(task)
    task.add_done_callback(functools.partial(_given_back, conn, releases))
    return task


def _given_back(conn: Connection, releases: _Releases, task: asyncio.Task[None]) -> None:
    """After a give-back: a cancelled or failed one drops the connection; waiting calls try again."""
    _giving_back.discard(task)
    try:
        failure: BaseException | None = asyncio.CancelledError() if task.cancelled() else task.exception()
        if failure is not None:
            with contextlib.suppress(Exception):  # released already, or terminated by asyncpg itself
                conn.terminate()
            log.debug("a connection's give-back failed; it was dropped: %r", failure)
    finally:
        releases.released()


def _terminate(opened: Pool | Connection) -> None:
    opened.terminate()


def _close_dead_connection(conn: Any) -> None:
    with contextlib.suppress(Exception):  # the socket is closed before the closed loop refuses the rest
        conn.terminate()


def _terminate_elsewhere(owner: asyncio.AbstractEventLoop, terminate: Callable[[], None]) -> None:
    """Drop connections that belong to another event loop without awaiting them.

    A loop running in another thread terminates them itself; a closed loop's
    connections are closed here, one by one (see ``_close_dead_pool``).
    """
    if owner.is_closed():
        target = getattr(terminate, "__self__", None)
        if isinstance(target, asyncpg.Pool):
            _close_dead_pool(target)
        elif target is not None:
            _close_dead_connection(target)
        return
    if owner.is_running():
        with contextlib.suppress(RuntimeError):  # it closed in the meantime
            owner.call_soon_threadsafe(terminate)
        return
    with contextlib.suppress(RuntimeError):
        terminate()


@overload
def _aware(value: datetime) -> datetime: ...


@overload
def _aware(value: datetime | None) -> datetime | None: ...


def _aware(value: datetime | None) -> datetime | None:
    """A timestamptz as read back: asyncpg returns 'infinity' (what ``datetime.max`` is stored as) naive."""
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


def _row_to_result(row: Any) -> Result:
    """A ``Result`` from a row of RESULT_COLUMNS."""
    fields = dict(row)
    for name in ("enqueued_at", "started_at", "finished_at"):
        fields[name] = _aware(fields[name])
    return Result(**fields)


def _row_to_task(row: Any, start: int) -> Task:
    """A ``Task`` from the TASK_COLUMNS of ``row``, beginning at column ``start``."""
    (
        task_id,
        payload,
        serializer,
        function_name,
        queue,
        priority,
        eta,
        max_retries,
        retry_backoff,
        timeout,
        max_lease_expiries,
        enqueued_at,
        status,
        attempts,
        lease_expiries,
        started_at,
        finished_at,
        worker_id,
        error,
        cancel_requested,
    ) = tuple(row)[start : start + 20]
    return Task(
        id=task_id,
        payload=bytes(payload),
        serializer=serializer,
        function_name=function_name,
        queue=queue,
        priority=priority,
        eta=_aware(eta),
        max_retries=max_retries,
        retry_backoff=retry_backoff,
        timeout=timeout,
        max_lease_expiries=max_lease_expiries,
        enqueued_at=_aware(enqueued_at),
        status=TaskStatus(status),
        attempts=attempts,
        lease_expiries=lease_expiries,
        started_at=_aware(started_at),
        finished_at=_aware(finished_at),
        worker_id=worker_id,
        error=error,
        cancel_requested=cancel_requested,
    )


def _described(exc: BaseException, timeout: float | None = None) -> str:
    """``Type: text`` of a driver error; a bare ``TimeoutError`` says what timed out instead of nothing."""
    text = str(exc)
    if not text and isinstance(exc, TimeoutError):
        text = "no answer in time" if timeout is None else f"no answer within connect_timeout={timeout:g}s"
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _fate_unknown(exc: BackendError, ids: list[str], where: str) -> ConnectionError:
    """The error of an enqueue whose connection was lost and could not be settled: it may be stored."""
    shown = ", ".join(ids[:3]) + (f" and {len(ids) - 3} more" if len(ids) > 3 else "")
    return ConnectionError(
        f"{exc.message}; the enqueue lost its connection and could not find out whether it was stored: "
        f"check before enqueueing again (task id(s) {shown}: queue.get_task(id))",
        operation="enqueue",
        backend_type="postgres",
        connection_details=where,
        cause=exc,
        context={"task_ids": ids},
    )


def _says_closed(exc: BaseException) -> bool:
    """asyncpg's own word that the connection under a call is gone (its proxy may no longer tell)."""
    if not isinstance(exc, asyncpg.InterfaceError):
        return False
    text = str(exc)
    return "connection is closed" in text or "connection was closed" in text


def _closed_how(exc: BaseException, conn: Connection | None) -> str | None:
    """Say "the connection was closed (by the server: why)" when ``exc`` means that; None for any other error.

    A session the server ends (``pg_terminate_backend``, a shutdown, an
    idle timeout) reaches a call as the server's reason, as asyncpg's
    ``ConnectionDoesNotExistError``, as an ``InterfaceError`` about a closed
    connection, or, when its goodbye came in while the connection lay idle
    in the pool, as an ``InternalClientError`` "cannot switch to state ...":
    asyncpg's protocol was left waiting for the end of an operation that
    never began. None of these says that the server is out of reach.
    """
    if not isinstance(exc, _DRIVER_ERRORS):
        return None
    if _refused_unsent(exc):  # the server's goodbye came in while it lay idle (asyncpg's state 2: see there)
        how = "by the server, while it lay idle" if "another operation (2)" in str(exc) else "before"
        return f"the connection was closed ({how}; the statement was not sent)"
    if not (
        isinstance(exc, (*_ENDED_BY_SERVER, asyncpg.exceptions.ConnectionDoesNotExistError))
        or _says_closed(exc)
        or (isinstance(exc, asyncpg.InternalClientError) and "cannot switch to state" in str(exc))
        or (conn is not None and _is_closed(conn))
    ):
        return None
    reason = _server_reason(exc)
    if reason:
        return f"the connection was closed (by the server: {reason})"
    return "the connection was closed (by the server or the network; no reason came with it)"


def _server_reason(exc: BaseException) -> str | None:
    """The server's reason for ending the session, from ``exc`` or the errors it was raised while handling.

    asyncpg raises "cannot call Transaction.__aexit__(): the underlying
    connection is closed" while handling the error that carried the reason
    ("terminating connection due to administrator command"): that one is
    its ``__context__``.
    """
    seen: set[int] = set()
    link: BaseException | None = exc
    while link is not None and id(link) not in seen:
        seen.add(id(link))
        if isinstance(link, _ENDED_BY_SERVER) and str(link):
            return str(link)
        if isinstance(link, asyncpg.exceptions.ConnectionDoesNotExistError):
            # "connection was closed in the middle of operation: <the server's reason>", when it came in time
            _, _, reason = str(link).partition(": ")
            if reason:
                return reason
        link = link.__cause__ or link.__context__
    return None


#: asyncpg refusing to begin an operation: raised before the operation writes anything to the server.
#: (Not 'cannot switch to "idle" state', which comes once an operation's answer is in.)
_REFUSED_TO_BEGIN = re.compile(r"cannot switch to state \d+; ")


def _refused_unsent(exc: BaseException) -> bool:
    """True when asyncpg refused a statement before sending it, the server having ended the session before.

    The server's goodbye to a session it ends (``pg_terminate_backend``, a
    shutdown, an idle timeout) is an error message. When it comes in while
    the connection lies idle (in the pool, or between two statements of a
    call), asyncpg's protocol takes it for a failed operation and waits for
    that operation's end, which never comes; until the closed socket is
    noticed a moment later, it refuses the next statement with
    InternalClientError "cannot switch to state 12; another operation (2)
    is in progress" before writing anything: that statement never reached
    the server, so its fate is known, not lost.
    """
    return isinstance(exc, asyncpg.InternalClientError) and _REFUSED_TO_BEGIN.match(str(exc)) is not None


def _drop(conn: Connection) -> None:
    """Close a pooled connection at once; the pool opens a new one for its next caller."""
    with contextlib.suppress(Exception):  # already closed, or already given back
        conn.terminate()


def _is_closed(conn: Connection) -> bool:
    """Whether ``conn`` is closed; False when even that cannot be told."""
    try:
        return bool(conn.is_closed())
    except Exception:
        return False
