"""The SQLite schema of sitq's tasks and results, its version, and time conversions.

Times are stored as INTEGER microseconds since the Unix epoch (UTC): exact
round trips (no float rounding), cheap comparisons, and cheap indexing.
"""

from __future__ import annotations

import re
import sqlite3
from datetime import UTC, datetime, timedelta

from sitq_core import checks

__all__ = [
    "ACTIVE",
    "SCHEMA_VERSION",
    "TASK_COLUMNS",
    "ForeignSchemaError",
    "check_not_foreign",
    "create_schema",
    "from_us",
    "holds_sitq_tables",
    "is_null_default",
    "missing_indexes",
    "to_us",
]

#: Recorded in ``PRAGMA user_version``; bumped by every schema migration.
SCHEMA_VERSION = 1

#: The statuses a worker may still claim (the claim index covers exactly these).
ACTIVE = "status IN ('queued', 'running')"

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)

TASK_COLUMNS = (
    "id, payload, serializer, function_name, queue, priority, eta, max_retries, retry_backoff, "
    "timeout, max_lease_expiries, enqueued_at, status, attempts, lease_expiries, started_at, "
    "finished_at, worker_id, error, cancel_requested"
)

_CLAIM_INDEX = f"""
    CREATE INDEX IF NOT EXISTS tasks_claim
        ON tasks (queue, priority DESC, due, seq) WHERE {ACTIVE}
    """

#: The indexes of the current version, by name: made again when missing (they hold no data of their own).
_INDEXES = {"tasks_claim": _CLAIM_INDEX}

_DDL = (
    """
    CREATE TABLE IF NOT EXISTS tasks (
        seq                INTEGER PRIMARY KEY,   -- enqueue order (the rowid)
        id                 TEXT    NOT NULL UNIQUE,
        queue              TEXT    NOT NULL,
        status             TEXT    NOT NULL
                           CHECK (status IN ('queued', 'running', 'success', 'failed', 'cancelled')),
        priority           INTEGER NOT NULL,
        due                INTEGER,               -- eta when queued, lease expiry when running, NULL when final
        eta                INTEGER NOT NULL,
        payload            BLOB    NOT NULL,
        serializer         TEXT    NOT NULL,
        function_name      TEXT    NOT NULL,
        max_retries        INTEGER NOT NULL,
        retry_backoff      REAL    NOT NULL,
        timeout            REAL,
        max_lease_expiries INTEGER NOT NULL,
        enqueued_at        INTEGER NOT NULL,
        attempts           INTEGER NOT NULL DEFAULT 0,
        lease_expiries     INTEGER NOT NULL DEFAULT 0,
        started_at         INTEGER,
        finished_at        INTEGER,
        worker_id          TEXT,
        error              TEXT,
        cancel_requested   INTEGER NOT NULL DEFAULT 0,
        lease_token        TEXT
    )
    """,
    _CLAIM_INDEX,
    """
    CREATE TABLE IF NOT EXISTS results (
        task_id     TEXT    PRIMARY KEY,
        id          TEXT    NOT NULL,
        status      TEXT    NOT NULL,
        value       BLOB,
        error       TEXT,
        traceback   TEXT,
        enqueued_at INTEGER,
        started_at  INTEGER,
        finished_at INTEGER,
        attempts    INTEGER NOT NULL,
        serializer  TEXT    NOT NULL
    )
    """,
)


class ForeignSchemaError(Exception):
    """The file is not sitq's: tables of sitq's names it did not create, only other tables, or a foreign version.

    With ``changes``: sitq's own tables, changed by hand so that sitq cannot use
    them (a column it needs is gone, a column added without a default must be
    filled by every insert, a table is missing); each entry says which.
    """

    def __init__(
        self, tables: list[str], *, other: bool = False, version: int = 0, changes: list[str] | None = None
    ) -> None:
        super().__init__(tables)
        self.tables = tables
        self.other = other  # only tables of other names
        self.version = version  # a user_version set by something else (0: none)
        self.changes = changes or []  # what keeps sitq from using its own (changed) tables

    def describe(self) -> str:
        listed = ", ".join(self.tables) or "no tables"
        if self.changes:
            return "holds sitq's tables, changed so that sitq cannot use them: " + "; ".join(self.changes)
        if self.version:
            return f"has user_version {self.version} but not sitq's tables ({listed})"
        if self.other:
            return f"holds other tables ({listed}) and none of sitq's: it looks like another application's database"
        return f"already holds table(s) {listed} that sitq did not create"


def check_not_foreign(conn: sqlite3.Connection) -> int:
    """Refuse a file that is not sitq's (before touching it); returns its schema version (0: sitq's tables to create).

    Refused, with nothing written: ``tasks``/``results`` tables made by
    something else; a file that holds other tables and none of sitq's (another
    application's database given by mistake); a non-zero ``user_version``
    without sitq's tables; sitq's tables changed so that sitq cannot use them
    (see :func:`_changes`). A version above :data:`SCHEMA_VERSION` on sitq's own
    tables raises :class:`SchemaTooNewError`, and a negative one, which no
    sitq-sqlite writes, :class:`SchemaVersionUnknownError`. A dump (``iterdump()``, ``.dump``,
    ``.recover``) does not carry ``user_version``, so a file restored from one
    has sitq's tables at version 0: tables sitq can use are taken as its own.
    """
    version = int(conn.execute("PRAGMA user_version").fetchone()[0])
    tables = [
        row[0]
        for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")
    ]
    ours = [name for name in ("results", "tasks") if name in tables]
    if version == 0 and not ours:
        if tables:
            raise ForeignSchemaError(sorted(tables), other=True)
        return version
    if version != 0 and "tasks" not in tables:  # a version, but not sitq's tables: another application's file
        raise ForeignSchemaError(sorted(tables), version=version)
    if version > SCHEMA_VERSION:
        raise SchemaTooNewError(version)
    if version < 0:  # no sitq-sqlite writes one: its tables' version is unknown, so nothing is rewritten
        raise SchemaVersionUnknownError(version)
    foreign, changes = _changes(conn, version)
    if foreign:
        raise ForeignSchemaError(foreign)
    if changes:
        raise ForeignSchemaError(ours, changes=changes)
    return version


def _changes(conn: sqlite3.Connection, version: int) -> tuple[list[str], list[str]]:
    """(sitq's table names held by tables sitq did not make, what keeps sitq from using its own tables).

    sitq names every column it reads and writes (no ``SELECT *``, no insert
    without a column list), so a column added to its tables is fine as long as
    an insert that leaves it out is accepted (it may be NULL or has a DEFAULT
    other than NULL). A table holding fewer than half of sitq's columns is not
    sitq's at all. The tables are compared with those of the file's own
    ``version`` (0: a file restored from a dump, compared with the current
    one): a file of an earlier version is checked before its migration runs.
    """
    foreign: list[str] = []
    changes: list[str] = []
    for table, own in _own_columns(version).items():
        info = conn.execute(f"PRAGMA table_info({table})").fetchall()  # cid, name, type, notnull, dflt_value, pk
        if not info:
            changes.append(f"table {table} is missing")
            continue
        known = {name.casefold() for name in own}
        present = {row[1].casefold() for row in info}
        missing = [name for name in own if name.casefold() not in present]
        if len(missing) * 2 > len(own):
            foreign.append(table)
            continue
        unknown = [row[1] for row in info if row[1].casefold() not in known]
        required = [row[1] for row in info if row[1].casefold() not in known and row[3] and is_null_default(row[4])]
        changes += checks.table_changes(table, missing=missing, unknown=unknown, required=required)
    if foreign:  # not sitq's tables: what a missing one would add says nothing
        return sorted(foreign), []
    return [], changes


def _columns(conn: sqlite3.Connection, table: str) -> list[str]:
    return [row[1] for row in conn.execute(f"PRAGMA table_info({table})")]


#: A column default that gives NULL (SQLite keeps it as written: NULL, (null), CAST(NULL AS TEXT)).
_NULL_DEFAULT = re.compile(
    r"[\s(]*(?:null|cast\s*\(\s*null\s+as\s+[\w\s\"]*(?:\([\d\s,]*\))?\s*\))[\s)]*", re.IGNORECASE
)


def is_null_default(default: str | None) -> bool:
    """True when a column's default (as ``PRAGMA table_info`` gives it) is none at all or NULL.

    ``NOT NULL DEFAULT NULL`` passes as "has a DEFAULT", yet an insert that
    leaves the column out fails just as without one.
    """
    return default is None or _NULL_DEFAULT.fullmatch(default) is not None


#: The columns of sitq's tables at each schema version before the current one, as they were: a file is
#: checked against the columns of its own version, BEFORE its migration runs (create_schema). A migration that
#: changes the columns of ``tasks`` or ``results`` copies their current lists here under the version it leaves
#: behind (a test refuses a SCHEMA_VERSION without them); otherwise every file of that version would be
#: refused as lacking the new columns that its migration was about to add.
_EARLIER_COLUMNS: dict[int, dict[str, list[str]]] = {}

_OWN_COLUMNS: dict[str, list[str]] = {}


def _own_columns(version: int) -> dict[str, list[str]]:
    """The column names of sitq's own tables at schema ``version`` (the current ones for 0 or the current)."""
    if 0 < version < SCHEMA_VERSION:
        return _EARLIER_COLUMNS[version]
    # The current version, read once from the DDL (in an in-memory database). Also for version 0 (a dump, which
    # carries no user_version): a dump of an earlier version is refused as lacking the newer columns rather
    # than taken as current (create_schema would mark it current without migrating it).
    if not _OWN_COLUMNS:
        scratch = sqlite3.connect(":memory:")
        try:
            for statement in _DDL:
                scratch.execute(statement)
            _OWN_COLUMNS.update({table: _columns(scratch, table) for table in ("tasks", "results")})
        finally:
            scratch.close()
    return _OWN_COLUMNS


def holds_sitq_tables(conn: sqlite3.Connection) -> bool:
    """True when the database already has sitq's tables (at any schema version)."""
    if int(conn.execute("PRAGMA user_version").fetchone()[0]) != 0:
        return (
            conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'tasks'").fetchone() is not None
        )
    return _changes(conn, 0) == ([], [])


class SchemaTooNewError(Exception):
    """The file was written by a newer sitq-sqlite (higher schema version)."""

    def __init__(self, found: int) -> None:
        super().__init__(found)
        self.found = found


class SchemaVersionUnknownError(Exception):
    """The file holds sitq's tables under a ``user_version`` no sitq-sqlite writes (a negative one)."""

    def __init__(self, found: int) -> None:
        super().__init__(found)
        self.found = found


def create_schema(conn: sqlite3.Connection) -> int:
    """Create or check the schema inside the caller's write transaction; returns the version found."""
    found = int(conn.execute("PRAGMA user_version").fetchone()[0])
    if found > SCHEMA_VERSION:
        raise SchemaTooNewError(found)
    if found < 0:  # set since check_not_foreign looked: never rewritten as if the file were new
        raise SchemaVersionUnknownError(found)
    if found == SCHEMA_VERSION:
        # a current file whose index was dropped (a user tidying indexes, a partial restore): every claim
        # names tasks_claim, so without it every reserve fails; an index holds no data, so re-making it is safe
        for name in missing_indexes(conn):
            conn.execute(_INDEXES[name])
        return found
    # Version 0: a new (or foreign, empty) file. Migrations from older versions go here.
    for statement in _DDL:
        conn.execute(statement)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
    return found


def missing_indexes(conn: sqlite3.Connection) -> list[str]:
    """The names of this version's indexes the file lacks (read only: one look at ``sqlite_master``)."""
    present = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
    return [name for name in _INDEXES if name not in present]


def to_us(value: datetime) -> int:
    """An aware datetime as integer microseconds since the epoch (exact)."""
    return (value - _EPOCH) // _MICROSECOND


def from_us(value: int) -> datetime:
    """Integer microseconds since the epoch as an aware UTC datetime."""
    return _EPOCH + timedelta(microseconds=value)
