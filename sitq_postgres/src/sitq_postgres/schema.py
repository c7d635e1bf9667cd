"""The PostgreSQL schema of sitq: tables, indexes and statements, all inside one named schema.

Every object lives in a PostgreSQL schema of its own (``sitq`` unless the
backend is given another), so one database can hold several independent
queues and tests can use a throw-away schema each.
"""

from __future__ import annotations

import re

from sitq_core import checks
from sitq_core.errors import ValidationError, safe_repr
from sitq_core.models import LEASE_EXPIRED_ERROR

__all__ = [
    "COLUMNS",
    "EARLIER_COLUMNS",
    "MARK_KEY",
    "MARK_VALUE",
    "SCHEMA_VERSION",
    "TASK_COLUMNS",
    "UNMARKED_VERSIONS",
    "Statements",
    "column_problems",
    "is_null_default",
    "valid_schema",
    "version_number",
]

#: Stored in ``<schema>.meta``; bumped by every migration.
SCHEMA_VERSION = 1

#: The row of ``<schema>.meta`` that tells sitq's ``meta`` from an application's table of that name (which may
#: hold a ``schema_version`` row of its own). Written with the version when sitq makes its tables; a schema
#: made before it existed (version 1, no such row) is recognised by sitq's ``tasks`` or ``results`` beside it.
MARK_KEY = "made_by"
MARK_VALUE = "sitq-postgres"
#: Schema versions written before ``MARK_KEY`` existed: only those may lack it.
UNMARKED_VERSIONS = frozenset({1})

TASK_COLUMNS = (
    "id, payload, serializer, function_name, queue, priority, eta, max_retries, retry_backoff, "
    "timeout, max_lease_expiries, enqueued_at, status, attempts, lease_expiries, started_at, "
    "finished_at, worker_id, error, cancel_requested"
)
RESULT_COLUMNS = (
    "id, task_id, status, value, error, traceback, enqueued_at, started_at, finished_at, attempts, serializer"
)

#: The columns of sitq's tables at the current schema version, as ``Statements.ddl`` makes them (a test
#: compares the two on a real server). Every statement names its columns, so columns users add are fine
#: where an insert may leave them out (see ``column_problems``).
COLUMNS: dict[str, tuple[str, ...]] = {
    "meta": ("key", "value"),
    "tasks": (
        "seq",
        "id",
        "queue",
        "status",
        "priority",
        "due",
        "eta",
        "payload",
        "serializer",
        "function_name",
        "max_retries",
        "retry_backoff",
        "timeout",
        "max_lease_expiries",
        "enqueued_at",
        "attempts",
        "lease_expiries",
        "started_at",
        "finished_at",
        "worker_id",
        "error",
        "cancel_requested",
        "lease_token",
    ),
    "results": (
        "task_id",
        "id",
        "status",
        "value",
        "error",
        "traceback",
        "enqueued_at",
        "started_at",
        "finished_at",
        "attempts",
        "serializer",
    ),
}

#: The columns of sitq's tables at each schema version before the current one, as they were: a schema is
#: checked against the columns of its own version (in ``meta``) BEFORE a migration would run. A migration that
#: changes the columns copies the current ``COLUMNS`` here under the version it leaves behind (a test refuses
#: a SCHEMA_VERSION without them); otherwise every schema of that version would be refused as lacking the
#: columns its migration was about to add.
EARLIER_COLUMNS: dict[int, dict[str, tuple[str, ...]]] = {}

#: A column default that gives NULL, as ``information_schema.columns`` shows it: PostgreSQL drops a plain
#: ``DEFAULT NULL``, but keeps it on a domain-typed column as ``NULL::text`` or ``(NULL::text)::app.tier``.
_NULL_DEFAULT = re.compile(
    r"[\s(]*null[\s)]*(?:::\s*[\w\"][\w\s.\"]*(?:\(\s*\d+(?:\s*,\s*\d+)*\s*\))?(?:\[\])*[\s)]*)*", re.IGNORECASE
)


def is_null_default(default: str | None) -> bool:
    """True when a column's default is none at all or NULL (``NOT NULL DEFAULT NULL`` must still be filled)."""
    return default is None or _NULL_DEFAULT.fullmatch(default) is not None


def version_number(value: object) -> int | None:
    """A ``meta.schema_version`` value as its number, or None when it is none (garbled, ``'0'``, missing).

    Only ASCII digits count: ``' 2'``, ``'-1'`` and ``'1.0'`` are no version
    sitq wrote, and ``str.isdigit`` also takes ``'²'``, which ``int`` refuses.
    """
    if not isinstance(value, str) or not value.isascii() or not value.isdigit():
        return None
    number = int(value)
    return number if number >= 1 else None


def column_problems(version: int, found: dict[str, dict[str, bool]]) -> tuple[list[str], list[str]]:
    """(sitq's table names held by tables sitq did not make, what keeps sitq from using its own tables).

    ``found`` maps each of sitq's tables present to its columns, each with
    whether an insert may leave it out (nullable, a default other than NULL,
    an identity or a generated column); ``version`` is the schema version its
    ``meta`` holds. The tables are compared with the columns of that version;
    a table holding fewer than half of them is not sitq's at all. The wording
    is the SQLite backend's. A missing table is no problem here: the DDL makes
    it again (a read-only connect says it is missing).
    """
    if version > SCHEMA_VERSION:  # refused as newer than this sitq-postgres, not as changed
        return [], []
    own = EARLIER_COLUMNS[version] if 0 < version < SCHEMA_VERSION else COLUMNS
    foreign: list[str] = []
    changes: list[str] = []
    for table, need in own.items():
        columns = found.get(table)
        if columns is None:
            continue
        missing = [name for name in need if name not in columns]
        if len(missing) * 2 > len(need):
            foreign.append(table)
            continue
        unknown = [name for name in columns if name not in need]
        required = [name for name in unknown if not columns[name]]
        changes += checks.table_changes(table, missing=missing, unknown=unknown, required=required)
    if foreign:  # not sitq's tables: what a missing one would add says nothing
        return sorted(foreign), []
    return [], changes


_IDENTIFIER = re.compile(r"[a-z_][a-z0-9_]{0,40}")
ACTIVE = "status IN ('queued', 'running')"
FINAL = "status IN ('success', 'failed', 'cancelled')"
_LEASE_EXPIRED_SQL = "'" + LEASE_EXPIRED_ERROR.replace("'", "''") + "'"  # a claim's error for an expired lease


def valid_schema(schema: object) -> str:
    """A schema name sitq can use unquoted-safe: lowercase letters, digits and ``_``, at most 41 characters."""
    if not isinstance(schema, str) or _IDENTIFIER.fullmatch(schema) is None:
        raise ValidationError(
            f"schema must be a lowercase identifier ([a-z_][a-z0-9_]*, at most 41 characters), got {safe_repr(schema)}",
            parameter="schema",
            value=schema,
        )
    if schema.startswith("pg_") or schema == "information_schema":
        raise ValidationError(
            "schema must not be a system schema (information_schema, or a name starting with 'pg_'), "
            f"got {safe_repr(schema)}",
            parameter="schema",
            value=schema,
        )
    return schema


class Statements:
    """Every SQL statement of the backend, with the schema name filled in (built once per backend)."""

    def __init__(self, schema: str) -> None:
        s = f'"{schema}"'
        self.schema = schema
        self.work_channel = f"sitq_{schema}_work"
        self.result_channel = f"sitq_{schema}_results"
        self.lock_key = f"sitq:{schema}"
        #: sitq's indexes on ``tasks`` by name. They hold no data of their own, so one found missing (an
        #: index a later sitq-postgres added, or one dropped) is made again at connect by a role that may
        #: (see ``PostgresBackend._create_schema``), without a schema version of its own.
        self.indexes = {
            # the claim of a worker serving every queue, and ``next_eta`` without queues
            "tasks_claim": (
                f"CREATE INDEX IF NOT EXISTS tasks_claim ON {s}.tasks (priority DESC, due, seq) WHERE {ACTIVE}"
            ),
            # the claim of a worker serving named queues (--queues): each queue read in claim order
            "tasks_claim_queue": (
                f"CREATE INDEX IF NOT EXISTS tasks_claim_queue ON {s}.tasks (queue, priority DESC, due, seq) "
                f"WHERE {ACTIVE}"
            ),
            "tasks_listing": f"CREATE INDEX IF NOT EXISTS tasks_listing ON {s}.tasks (enqueued_at, seq)",
            "tasks_finished": f"CREATE INDEX IF NOT EXISTS tasks_finished ON {s}.tasks (finished_at) WHERE {FINAL}",
        }
        #: Run only when ``schema_exists`` says no: PostgreSQL checks CREATE on the database before it looks
        #: whether the schema exists, so a role with CREATE on a schema made beforehand (its owner, or one
        #: granted it) but not on the database was refused by ``IF NOT EXISTS`` alone.
        self.schema_exists = "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_namespace WHERE nspname = $1)"
        self.create_schema = f"CREATE SCHEMA IF NOT EXISTS {s}"
        #: sitq's tables and indexes, made in the schema once it exists.
        self.ddl = (
            f"CREATE TABLE IF NOT EXISTS {s}.meta (key text PRIMARY KEY, value text NOT NULL)",
            f"""
            CREATE TABLE IF NOT EXISTS {s}.tasks (
                seq                bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,  -- enqueue order
                id                 text NOT NULL UNIQUE,
                queue              text NOT NULL,
                status             text NOT NULL
                                   CHECK (status IN ('queued', 'running', 'success', 'failed', 'cancelled')),
                priority           bigint NOT NULL,
                due                timestamptz,  -- eta when queued, lease expiry when running, NULL when final
                eta                timestamptz NOT NULL,
                payload            bytea NOT NULL,
                serializer         text NOT NULL,
                function_name      text NOT NULL,
                max_retries        bigint NOT NULL,
                retry_backoff      double precision NOT NULL,
                timeout            double precision,
                max_lease_expiries bigint NOT NULL,
                enqueued_at        timestamptz NOT NULL,
                attempts           bigint NOT NULL DEFAULT 0,
                lease_expiries     bigint NOT NULL DEFAULT 0,
                started_at         timestamptz,
                finished_at        timestamptz,
                worker_id          text,
                error              text,
                cancel_requested   boolean NOT NULL DEFAULT false,
                lease_token        text
            )
            """,
            *self.indexes.values(),
            f"""
            CREATE TABLE IF NOT EXISTS {s}.results (
                task_id     text PRIMARY KEY,
                id          text NOT NULL,
                status      text NOT NULL,
                value       bytea,
                error       text,
                traceback   text,
                enqueued_at timestamptz,
                started_at  timestamptz,
                finished_at timestamptz,
                attempts    bigint NOT NULL,
                serializer  text NOT NULL
            )
            """,
        )
        self.version = f"SELECT value FROM {s}.meta WHERE key = 'schema_version'"
        # (the schema version, whether sitq's mark is there) in one read
        self.meta_state = (
            f"SELECT (SELECT value FROM {s}.meta WHERE key = 'schema_version'), "
            f"EXISTS (SELECT 1 FROM {s}.meta WHERE key = '{MARK_KEY}' AND value = '{MARK_VALUE}')"
        )
        self.set_mark = (
            f"INSERT INTO {s}.meta (key, value) VALUES ('{MARK_KEY}', '{MARK_VALUE}') "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value"
        )
        self.index_names = "SELECT indexname FROM pg_indexes WHERE schemaname = $1 AND tablename = 'tasks'"
        # each column of sitq's tables, and whether an insert may leave it out (a domain's default counts)
        self.table_columns = (
            "SELECT c.table_name, c.column_name, c.is_nullable = 'YES' OR c.is_identity = 'YES' "
            "OR c.is_generated = 'ALWAYS', coalesce(c.column_default, d.domain_default) "
            "FROM information_schema.columns AS c LEFT JOIN information_schema.domains AS d "
            "ON d.domain_catalog = c.domain_catalog AND d.domain_schema = c.domain_schema "
            "AND d.domain_name = c.domain_name "
            "WHERE c.table_schema = $1 AND c.table_name = ANY($2::text[]) ORDER BY c.table_name, c.ordinal_position"
        )
        self.set_version = (
            f"INSERT INTO {s}.meta (key, value) VALUES ('schema_version', $1) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value"
        )
        # One statement (atomic by itself) inserts the rows and notifies the workers once.
        self.insert = (
            f"WITH ins AS (INSERT INTO {s}.tasks ({TASK_COLUMNS}, due) "
            "SELECT v.id, v.payload, v.serializer, v.function_name, v.queue, v.priority, v.eta, v.max_retries, "
            "v.retry_backoff, v.timeout, v.max_lease_expiries, v.enqueued_at, 'queued', v.attempts, "
            "v.lease_expiries, v.started_at, v.finished_at, v.worker_id, v.error, v.cancel_requested, v.eta "
            "FROM unnest($1::text[], $2::bytea[], $3::text[], $4::text[], $5::text[], $6::bigint[], "
            "$7::timestamptz[], $8::bigint[], $9::float8[], $10::float8[], $11::bigint[], $12::timestamptz[], "
            "$13::bigint[], $14::bigint[], $15::timestamptz[], $16::timestamptz[], $17::text[], $18::text[], "
            "$19::boolean[]) WITH ORDINALITY AS v(id, payload, serializer, function_name, queue, priority, eta, "
            "max_retries, retry_backoff, timeout, max_lease_expiries, enqueued_at, attempts, lease_expiries, "
            "started_at, finished_at, worker_id, error, cancel_requested, ord) ORDER BY v.ord RETURNING 1) "
            "SELECT c.n, pg_notify($20, '') FROM (SELECT count(*) AS n FROM ins) AS c"
        )
        self.existing_ids = f"SELECT id FROM {s}.tasks WHERE id = ANY($1::text[]) LIMIT 1"
        claim_where = f"{ACTIVE} AND due <= $1"
        claim_order = "ORDER BY priority DESC, due, seq LIMIT $2 FOR UPDATE SKIP LOCKED"
        self.candidates = (
            f"SELECT seq, status, lease_expiries, max_lease_expiries, cancel_requested FROM {s}.tasks "
            f"WHERE {claim_where} {claim_order}"
        )
        # Named queues: each one read in the order of tasks_claim_queue (queue, priority DESC, due, seq), at most
        # $2 rows, and those merged into the claim order. "queue = ANY($3)" over tasks_claim read every active
        # task of the other queues (a Seq Scan and a sort once the table was large). Rows are locked, SKIP
        # LOCKED, inside each queue's read, so rows that other claims hold are passed over there and do not cut
        # a queue's share short; with several queues up to $2 rows a queue are locked until the claim commits,
        # of which the first $2 are claimed. The names are distinct (checks.queue_names): no row comes twice.
        # The queue is matched as "= ANY(ARRAY[name])" and ordered on: a plain "queue = name" makes the queue a
        # constant to the planner, so tasks_claim gives the order too, and when the statistics say one queue
        # holds every task (the very case of a worker on a rare queue) it read tasks_claim to the end, filtering.
        in_queue = "queue = ANY(ARRAY[q.name])"
        self.candidates_in = (
            "SELECT c.seq, c.status, c.lease_expiries, c.max_lease_expiries, c.cancel_requested "
            "FROM unnest($3::text[]) AS q(name) CROSS JOIN LATERAL (SELECT seq, status, lease_expiries, "
            f"max_lease_expiries, cancel_requested, priority, due FROM {s}.tasks WHERE {claim_where} AND {in_queue} "
            "ORDER BY queue, priority DESC, due, seq LIMIT $2 FOR UPDATE SKIP LOCKED) AS c "
            "ORDER BY c.priority DESC, c.due, c.seq LIMIT $2"
        )
        self.claim = (
            f"UPDATE {s}.tasks AS t SET status = 'running', worker_id = $1, lease_token = v.token, due = $2, "
            "attempts = t.attempts + 1, lease_expiries = t.lease_expiries + (t.status = 'running')::int, "
            f"error = CASE WHEN t.status = 'running' THEN {_LEASE_EXPIRED_SQL} ELSE t.error END, "
            "started_at = $3 FROM unnest($4::bigint[], $5::text[]) AS v(seq, token) WHERE t.seq = v.seq "
            f"RETURNING t.seq, t.lease_token, {', '.join('t.' + c.strip() for c in TASK_COLUMNS.split(','))}"
        )
        self.poison = (
            f"UPDATE {s}.tasks SET status = 'failed', due = NULL, lease_token = NULL, finished_at = $1, "
            "lease_expiries = lease_expiries + 1, error = 'lease expired after ' || attempts || ' attempts' "
            "WHERE seq = ANY($2::bigint[]) "
            "RETURNING id, error, enqueued_at, started_at, finished_at, attempts, serializer, function_name"
        )
        # A running task whose cancel was requested and whose worker is gone (lease expired): cancelled.
        self.cancel_expired = (
            f"UPDATE {s}.tasks SET status = 'cancelled', due = NULL, lease_token = NULL, finished_at = $1, "
            "lease_expiries = lease_expiries + 1, error = 'cancelled' WHERE seq = ANY($2::bigint[]) "
            "RETURNING id, error, enqueued_at, started_at, finished_at, attempts, serializer, function_name"
        )
        # A queued task whose cancel was requested (sitq before its cancel rule queued a retry or a give-back of
        # such a task again, and an old worker may still do so during a rolling deploy): cancelled, unrun, as
        # cancel() ends a queued task (attempts as they are).
        self.cancel_queued_requested = (
            f"UPDATE {s}.tasks SET status = 'cancelled', due = NULL, lease_token = NULL, finished_at = $1, "
            "error = 'cancelled' WHERE seq = ANY($2::bigint[]) "
            "RETURNING id, error, enqueued_at, started_at, finished_at, attempts, serializer, function_name"
        )
        # Statements that update many task rows lock them in id order first (the "locked" CTE), so a
        # heartbeat and a finish of overlapping tasks cannot deadlock on each other.
        self.heartbeat = (
            "WITH v AS (SELECT * FROM unnest($2::text[], $3::text[]) AS v(id, token)), "
            f"locked AS MATERIALIZED (SELECT t.id FROM {s}.tasks AS t JOIN v ON t.id = v.id ORDER BY t.id "
            f"FOR UPDATE OF t) UPDATE {s}.tasks AS t SET due = $1 FROM v JOIN locked USING (id) "
            "WHERE t.id = v.id AND t.lease_token = v.token "
            "AND t.status = 'running' RETURNING t.id, t.cancel_requested"
        )
        fence = "id = $1 AND lease_token = $2 AND status = 'running'"
        self.finish = (
            f"UPDATE {s}.tasks SET status = $3, due = NULL, lease_token = NULL, finished_at = $4, error = $5, "
            f"started_at = coalesce($6, started_at) WHERE {fence} "
            "RETURNING enqueued_at, started_at, finished_at, attempts, serializer"
        )
        # Many final outcomes for distinct tasks (the worker's common batch): one statement.
        self.finish_set = (
            "WITH v AS (SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::timestamptz[], $5::text[], "
            "$6::timestamptz[], $7::bytea[], $8::text[]) AS v(id, token, kind, finished_at, error, started_at, value, "
            f"traceback)), locked AS MATERIALIZED (SELECT t.id FROM {s}.tasks AS t JOIN v ON t.id = v.id "
            f"ORDER BY t.id FOR UPDATE OF t), done AS (UPDATE {s}.tasks AS t SET status = v.kind, due = NULL, "
            "lease_token = NULL, finished_at = v.finished_at, error = v.error, "
            "started_at = coalesce(v.started_at, t.started_at) FROM v JOIN locked USING (id) WHERE t.id = v.id "
            "AND t.lease_token = v.token AND t.status = 'running' "
            "RETURNING t.id, v.kind, v.value, v.error, v.traceback, t.enqueued_at, t.started_at, t.finished_at, "
            f"t.attempts, t.serializer), stored AS (INSERT INTO {s}.results ({RESULT_COLUMNS}) "
            "SELECT id, id, kind, value, error, traceback, enqueued_at, started_at, finished_at, attempts, serializer "
            "FROM done ON CONFLICT (task_id) DO UPDATE SET id = excluded.id, status = excluded.status, "
            "value = excluded.value, error = excluded.error, traceback = excluded.traceback, "
            "enqueued_at = excluded.enqueued_at, started_at = excluded.started_at, "
            "finished_at = excluded.finished_at, attempts = excluded.attempts, serializer = excluded.serializer) "
            "SELECT id FROM done"
        )
        self.retry = (
            f"UPDATE {s}.tasks SET status = 'queued', eta = $3, due = $3, error = $4, lease_token = NULL "
            f"WHERE {fence} AND NOT cancel_requested RETURNING seq"  # a cancel requested: it ends cancelled
        )
        self.release = (
            f"UPDATE {s}.tasks SET status = 'queued', due = least(eta, $3), lease_token = NULL, "
            # a first attempt given back unstarted (no $4) says so again: no start, no worker
            "started_at = CASE WHEN $4::timestamptz IS NOT NULL THEN $4 WHEN attempts <= 1 THEN NULL "
            "ELSE started_at END, "
            "worker_id = CASE WHEN $4::timestamptz IS NULL AND attempts <= 1 THEN NULL ELSE worker_id END, "
            f"attempts = greatest(attempts - 1, 0) WHERE {fence} AND NOT cancel_requested RETURNING seq"
        )
        self.store_result = (
            f"INSERT INTO {s}.results ({RESULT_COLUMNS}) VALUES ($1, $1, $2, $3, $4, $5, $6, $7, $8, $9, $10) "
            "ON CONFLICT (task_id) DO UPDATE SET id = excluded.id, status = excluded.status, value = excluded.value, "
            "error = excluded.error, traceback = excluded.traceback, enqueued_at = excluded.enqueued_at, "
            "started_at = excluded.started_at, finished_at = excluded.finished_at, attempts = excluded.attempts, "
            "serializer = excluded.serializer"
        )
        # cancel: a queued task ends cancelled, a running one gets its cancel requested, in ONE statement that
        # decides on the row it locked. Two ("if queued", then "if running") let a worker's retry or give-back
        # that committed between them make the first see the task running and the second see it queued: the
        # cancel changed nothing and said False. Waiting on the row's lock, this statement looks again at the
        # version committed meanwhile (READ COMMITTED), its WHERE and its SET alike. Returns the new status.
        ended = {
            "status": "'cancelled'",
            "due": "NULL",
            "lease_token": "NULL",
            "finished_at": "$2",
            "error": "'cancelled'",
        }
        if_queued = ", ".join(f"{c} = CASE WHEN status = 'queued' THEN {v} ELSE {c} END" for c, v in ended.items())
        self.cancel = (
            f"UPDATE {s}.tasks SET {if_queued}, cancel_requested = cancel_requested OR status = 'running' "
            "WHERE id = $1 AND status IN ('queued', 'running') "
            "RETURNING status, enqueued_at, started_at, finished_at, attempts, serializer"
        )
        self.requeue = (
            f"UPDATE {s}.tasks SET status = 'queued', eta = $2, due = $2, attempts = 0, lease_expiries = 0, "
            "error = NULL, cancel_requested = false, lease_token = NULL, worker_id = NULL, started_at = NULL, "
            "finished_at = NULL WHERE id = $1 AND status IN ('failed', 'cancelled') RETURNING seq"
        )
        # requeue_many: the failed/cancelled ones of many ids, locked in id order first (as "locked" above), their
        # results deleted in the same statement; returns the ids requeued
        self.requeue_set = (
            f"WITH locked AS MATERIALIZED (SELECT id FROM {s}.tasks WHERE id = ANY($1::text[]) "
            "AND status IN ('failed', 'cancelled') ORDER BY id FOR UPDATE), "
            f"done AS (UPDATE {s}.tasks AS t SET status = 'queued', eta = $2, due = $2, attempts = 0, "
            "lease_expiries = 0, error = NULL, cancel_requested = false, lease_token = NULL, worker_id = NULL, "
            "started_at = NULL, finished_at = NULL FROM locked WHERE t.id = locked.id "
            "AND t.status IN ('failed', 'cancelled') RETURNING t.id), "
            f"gone AS (DELETE FROM {s}.results WHERE task_id IN (SELECT id FROM done)) SELECT id FROM done"
        )
        self.delete_result = f"DELETE FROM {s}.results WHERE task_id = $1"
        self.get_task = f"SELECT {TASK_COLUMNS} FROM {s}.tasks WHERE id = $1"
        self.get_result = f"SELECT {RESULT_COLUMNS} FROM {s}.results WHERE task_id = $1"
        self.get_results = f"SELECT {RESULT_COLUMNS} FROM {s}.results WHERE task_id = ANY($1::text[])"
        self.next_eta = f"SELECT min(due) FROM {s}.tasks WHERE {ACTIVE}"
        # Named queues: the earliest due of each (queue, priority) lane of tasks_claim_queue, the lanes found
        # by skipping from one priority to the next lower one (a probe of the index each), so an idle worker
        # reads a few index entries per lane, not the active tasks of other queues (nor all of its own).
        lane = f"FROM {s}.tasks AS t WHERE t.{ACTIVE} AND t.queue = ANY(ARRAY[l.queue])"
        self.next_eta_in = (
            "WITH RECURSIVE lanes(queue, priority) AS ("
            f"SELECT l.queue, (SELECT t.priority {lane} ORDER BY t.queue, t.priority DESC LIMIT 1) "
            "FROM unnest($1::text[]) AS l(queue) "
            f"UNION ALL SELECT l.queue, (SELECT t.priority {lane} AND t.priority < l.priority "
            "ORDER BY t.queue, t.priority DESC LIMIT 1) FROM lanes AS l WHERE l.priority IS NOT NULL) "
            f"SELECT min((SELECT t.due {lane} AND t.priority = l.priority ORDER BY t.queue, t.priority DESC, t.due "
            "LIMIT 1)) FROM lanes AS l WHERE l.priority IS NOT NULL"
        )
        self.list_tasks = (
            f"SELECT {TASK_COLUMNS} FROM {s}.tasks WHERE ($1::text IS NULL OR status = $1) "
            "AND ($2::text IS NULL OR queue = $2) ORDER BY enqueued_at, seq LIMIT $3 OFFSET $4"
        )
        self.counts = f"SELECT status, count(*) FROM {s}.tasks WHERE ($1::text IS NULL OR queue = $1) GROUP BY status"
        # purge: at most $2 final tasks (finished before $1, when given) and their results, the rows locked in id
        # order first (as "locked" above: a plain DELETE locked them in physical order, and deadlocked with a
        # requeue_many of the same tasks). Returns (tasks deleted, rows locked, the last id locked): a chunk that
        # locked fewer than $2 was the last; purge_after goes on past the last id of the chunk before, so the
        # tasks a purge keeps (a queued backlog) are read once in all, not once per chunk.
        cutoff = "($1::timestamptz IS NULL OR {}finished_at < $1)"
        purge = (
            f"WITH locked AS MATERIALIZED (SELECT id FROM {s}.tasks WHERE {FINAL} AND {cutoff.format('')}{{after}} "
            f"ORDER BY id LIMIT $2 FOR UPDATE), gone AS (DELETE FROM {s}.tasks AS t USING locked "
            f"WHERE t.id = locked.id AND t.{FINAL} AND {cutoff.format('t.')} RETURNING t.id), "
            f"dropped AS (DELETE FROM {s}.results WHERE task_id IN (SELECT id FROM gone)) "
            "SELECT (SELECT count(*) FROM gone), (SELECT count(*) FROM locked), (SELECT max(id) FROM locked)"
        )
        self.purge = purge.format(after="")
        self.purge_after = purge.format(after=" AND id > $3")
        self.notify = "SELECT pg_notify($1, $2)"
        # A result notice: the caller keeps payloads under the limit in UTF-8 (see _result_notices); one that the
        # server's encoding makes longer is left unsent rather than refused, which would roll the finish back.
        self.notify_result = "SELECT pg_notify($1, $2) WHERE octet_length($2) < 8000"
