"""Tables. The migrations in ``migrations/`` create exactly these (a test checks it)."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Float,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    text,
)

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = MetaData(naming_convention=NAMING)

# Times are float seconds since the epoch (UTC): portable, cheap to compare, exact enough.

runs = Table(
    "durapipe_runs",
    metadata,
    Column("id", String(140), primary_key=True),
    Column("pipeline", String(200), nullable=False),
    Column("version", String(100), nullable=False),
    Column("entrypoint", Text, nullable=False),
    Column("pinned", Boolean, nullable=False, default=False),
    Column("status", String(20), nullable=False),
    Column("inputs", Text, nullable=False),
    Column("output", Text),
    Column("error", Text),
    Column("parent_run_id", String(140)),
    Column("parent_step", String(200)),
    Column("root_run_id", String(140), nullable=False),
    Column("depth", Integer, nullable=False, default=0),
    Column("prefix", String(400), nullable=False),  # console prefix, e.g. deploy.build_image_1
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    Column("finished_at", Float),
    Column("wake_at", Float),
    Column("waiting_for", Text),  # JSON: what a sleeping/waiting run waits for (display)
    Column("lease_owner", String(140)),
    Column("lease_expires_at", Float),
    Column("attempt", Integer, nullable=False, default=0),  # fencing token, bumped by every claim
    Column("requested", String(20)),  # 'stop' | 'stop_now' | 'cancel'
    # Continue-as-new and child handles (migration 0003):
    Column("continued_from", String(140)),  # the run this one continues (dp.continue_as_new)
    Column("chain_id", String(140)),  # the first run of its continue-as-new chain
    Column("detached", Boolean),  # a child started detached=True: it outlives its parent
    Index("ix_durapipe_runs_chain", "chain_id"),
    # Run timeouts and the recovery limit (migration 0004).
    Column("deadline_at", Float),  # the run times out at this instant (its timeout, recorded)
    # Claims of the run whose previous holder died holding it; reset by `durapipe resume`.
    Column("recoveries", Integer, nullable=False, default=0, server_default="0"),
    # A schedule's tick (migration 0007): the schedule that started the run, and the tick's time.
    Column("schedule", String(100)),
    Column("scheduled_at", Float),
    Index("ix_durapipe_runs_status_wake", "status", "wake_at"),
    Index("ix_durapipe_runs_lease", "lease_expires_at"),
    Index("ix_durapipe_runs_parent", "parent_run_id"),
    Index("ix_durapipe_runs_root", "root_run_id"),
    Index("ix_durapipe_runs_pipeline", "pipeline", "status"),
    # Newest first (`durapipe list`, the web UI's pages): walked backwards, no sort of every run.
    Index("ix_durapipe_runs_created", "created_at", "id"),
    # Queues (durapipe/_store/queues.py, migration 0008): the queue a run waits in, its key
    # (per-key limits), its priority (higher first), and when a claim took it off the queue.
    Column("queue", String(200)),
    Column("queue_key", String(200)),
    Column("priority", Integer),
    Column("dequeued_at", Float),
    # A queue's slots and rate window: its runs by status, and by when a claim took them.
    Index("ix_durapipe_runs_queue_taken", "queue", "dequeued_at"),
    # `durapipe gc` (migration 0009): the oldest finished runs, a batch at a time.
    Index("ix_durapipe_runs_finished", "finished_at"),
)
# The line of a queue in the claim's order (higher priority first, then oldest first): the
# claim reads the head of the line from this index without sorting (bench/queues.py).
Index(
    "ix_durapipe_runs_queue_line",
    runs.c.queue,
    runs.c.status,
    runs.c.priority.desc(),
    runs.c.created_at,
    runs.c.id,
)
# Pending runs in the claim's order also have an index of their own, partial (only pending runs
# are in it): `ix_durapipe_runs_pending` on (coalesce(wake_at, created_at), id) WHERE status =
# 'pending', created by migration 0011 and checked by tests/integration/test_migrations.py. It
# is not declared here: SQLAlchemy loads both dialects' modules to read a partial index's
# options, ~20 ms more for every CLI command. The claim names its condition by PENDING_ONLY.
PENDING_ONLY = text("status = 'pending'")

events = Table(
    "durapipe_events",
    metadata,
    Column("run_id", String(140), nullable=False),
    Column("seq", Integer, nullable=False),
    Column("kind", String(40), nullable=False),
    Column("step", String(200)),  # the step key, e.g. "3" or "5/1/2"
    Column("name", String(200)),  # what was called: function name, "exec", input name
    Column("label", String(200)),  # display name, e.g. "exec_1"
    Column("at", Float, nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("data", Text),  # JSON
    # Set on a step_completed row that also stands for the step's start (seq - 1): the time
    # the step started. Readers give back both events (journal_sql.expand).
    Column("started_at", Float),
    PrimaryKeyConstraint("run_id", "seq"),
)

inputs = Table(
    "durapipe_inputs",
    metadata,
    Column(
        "id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    ),
    Column("run_id", String(140), nullable=False),
    Column("name", String(200), nullable=False),
    Column("value", Text, nullable=False),
    Column("created_at", Float, nullable=False),
    Column("consumed_seq", Integer),  # the seq of the input_received event that took it
    Index("ix_durapipe_inputs_run_name", "run_id", "name", "consumed_seq"),
)

logs = Table(
    "durapipe_logs",
    metadata,
    Column(
        "id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    ),
    Column("run_id", String(140), nullable=False),
    Column("root_run_id", String(140), nullable=False),
    Column("step", String(200)),
    Column("prefix", String(400), nullable=False),
    Column("stream", String(10), nullable=False),  # out | err | info | warn | error
    Column("at", Float, nullable=False),
    Column("line", Text, nullable=False),
    Column("attempt", Integer, nullable=False),
    Index("ix_durapipe_logs_root", "root_run_id", "id"),
    Index("ix_durapipe_logs_run", "run_id"),  # gc deletes a run's lines (migration 0009)
)

workers = Table(
    "durapipe_workers",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("host", String(255), nullable=False),
    Column("pid", Integer, nullable=False),
    Column("kind", String(20), nullable=False),  # worker | run
    Column("pipelines", Text, nullable=False),  # JSON {name: version}
    Column("concurrency", Integer, nullable=False),
    Column("started_at", Float, nullable=False),
    Column("heartbeat_at", Float, nullable=False),
    Column("stopped_at", Float),
)

holds = Table(
    "durapipe_holds",
    metadata,
    Column("pipeline", String(200), nullable=False),
    Column("version", String(100), nullable=False, default=""),  # "" = every version
    Column("created_at", Float, nullable=False),
    PrimaryKeyConstraint("pipeline", "version"),
)

# Messages (dp.send / Client.send -> dp.recv): kept until the addressed run takes one, which
# sets consumed_seq to the seq of the event that took it, in that event's transaction.
messages = Table(
    "durapipe_messages",
    metadata,
    Column(
        "id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    ),
    Column("run_id", String(140), nullable=False),  # the addressee
    Column("topic", String(200), nullable=False),
    Column("value", Text, nullable=False),  # JSON
    Column("sender", String(140)),  # the run that sent it (None: a client)
    Column("created_at", Float, nullable=False),
    Column("consumed_seq", Integer),
    Index("ix_durapipe_messages_run_topic", "run_id", "topic", "consumed_seq"),
)

# Published state (dp.set_event): the latest value of each key of a run, written with its event.
published = Table(
    "durapipe_published",
    metadata,
    Column("run_id", String(140), nullable=False),
    Column("key", String(200), nullable=False),
    Column("value", Text, nullable=False),  # JSON
    Column("seq", Integer, nullable=False),  # the seq of the event_set event that wrote it
    Column("updated_at", Float, nullable=False),
    PrimaryKeyConstraint("run_id", "key"),
)

# A run's tags (`--tag key=value`, dp.tag): one value per key; `list --tag` finds runs by them.
tags = Table(
    "durapipe_tags",
    metadata,
    Column("run_id", String(140), nullable=False),
    Column("key", String(64), nullable=False),
    Column("value", String(200), nullable=False),
    PrimaryKeyConstraint("run_id", "key"),
    Index("ix_durapipe_tags_key_value", "key", "value"),
)

# Where a forked run came from (durapipe fork): one row per fork, written with the new run.
forks = Table(
    "durapipe_forks",
    metadata,
    Column("run_id", String(140), primary_key=True),  # the new run
    Column("source_run_id", String(140), nullable=False),  # the run it was forked from
    Column("step", String(200), nullable=False),  # the fork point: the first call run again
    Column("created_at", Float, nullable=False),
    Column("created_by", String(200), nullable=False),
    Index("ix_durapipe_forks_source", "source_run_id"),
)

# Schedules (migration 0007): one row each, with the next tick to fire. A worker carrying the
# pipeline fires a due tick by advancing next_fire_at and inserting the tick's run (its id
# derived from name and tick) in one transaction; see durapipe/_store/schedules.py.
schedules = Table(
    "durapipe_schedules",
    metadata,
    Column("name", String(100), primary_key=True),
    Column("pipeline", String(200), nullable=False),
    Column("target", Text, nullable=False),  # FILE.py:NAME or module:NAME it was declared by
    Column("kind", String(10), nullable=False),  # cron | every
    Column("spec", String(200), nullable=False),  # the cron expression, or the interval in s
    Column("tz", String(64), nullable=False),
    Column("inputs", Text, nullable=False),  # JSON
    Column("overlap", String(10), nullable=False),  # skip | queue | allow
    Column("catch_up", String(10), nullable=False),  # none | last | all
    Column("source", String(10), nullable=False),  # code (declared) | api (schedule add)
    Column("paused", Boolean, nullable=False, default=False),
    Column("next_fire_at", Float, nullable=False),
    Column("last_tick_at", Float),  # the scheduled time of the last run it started
    Column("last_run_id", String(140)),
    Column("skipped", Integer, nullable=False, default=0),  # ticks skipped (overlap, catch-up)
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    Index("ix_durapipe_schedules_due", "paused", "next_fire_at"),
)

queues = Table(
    "durapipe_queues",
    metadata,
    Column("name", String(200), primary_key=True),
    Column("concurrency", Integer),  # runs taken off it and not ended, at most; None = no limit
    Column("key_concurrency", Integer),  # ... per key (runs started with a key); None = no limit
    Column("rate_limit", Integer),  # at most this many taken off it per rate_window seconds
    Column("rate_window", Float),
    Column("priority", Boolean, nullable=False, default=False),  # runs may carry priorities
    Column("updated_at", Float, nullable=False),
)

# The vocabulary (statuses, event kinds, requests) lives in durapipe/_kinds.py; these names stay
# here for the code that reads them as ``schema.X``.
from .._kinds import (  # noqa: E402
    ACTIVE,
    ALL_STATUSES,
    RESUMABLE_EXTRA,
    RUN_ENDS,
    SUSPENDABLE,
    TERMINAL,
    TIMELINE_KINDS,
    WAIT_ENDS,
    WAIT_STARTS,
)

__all__ = [
    "ACTIVE",
    "ALL_STATUSES",
    "RESUMABLE_EXTRA",
    "RUN_ENDS",
    "SUSPENDABLE",
    "TERMINAL",
    "TIMELINE_KINDS",
    "WAIT_ENDS",
    "WAIT_STARTS",
    "events",
    "forks",
    "holds",
    "inputs",
    "logs",
    "messages",
    "metadata",
    "published",
    "queues",
    "runs",
    "workers",
    "tags",
    "schedules",
]
