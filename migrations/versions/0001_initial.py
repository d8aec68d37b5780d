"""Initial schema: runs, events, inputs, logs, workers, holds.

Revision ID: 0001
Revises:
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

BIGID = sa.BigInteger().with_variant(sa.Integer, "sqlite")


def upgrade() -> None:
    op.create_table(
        "durapipe_runs",
        sa.Column("id", sa.String(140), nullable=False),
        sa.Column("pipeline", sa.String(200), nullable=False),
        sa.Column("version", sa.String(100), nullable=False),
        sa.Column("entrypoint", sa.Text, nullable=False),
        sa.Column("pinned", sa.Boolean, nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("inputs", sa.Text, nullable=False),
        sa.Column("output", sa.Text),
        sa.Column("error", sa.Text),
        sa.Column("parent_run_id", sa.String(140)),
        sa.Column("parent_step", sa.String(200)),
        sa.Column("root_run_id", sa.String(140), nullable=False),
        sa.Column("depth", sa.Integer, nullable=False),
        sa.Column("prefix", sa.String(400), nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
        sa.Column("finished_at", sa.Float),
        sa.Column("wake_at", sa.Float),
        sa.Column("waiting_for", sa.Text),
        sa.Column("lease_owner", sa.String(140)),
        sa.Column("lease_expires_at", sa.Float),
        sa.Column("attempt", sa.Integer, nullable=False),
        sa.Column("requested", sa.String(20)),
        sa.PrimaryKeyConstraint("id", name="pk_durapipe_runs"),
    )
    op.create_index("ix_durapipe_runs_status_wake", "durapipe_runs", ["status", "wake_at"])
    op.create_index("ix_durapipe_runs_lease", "durapipe_runs", ["lease_expires_at"])
    op.create_index("ix_durapipe_runs_parent", "durapipe_runs", ["parent_run_id"])
    op.create_index("ix_durapipe_runs_root", "durapipe_runs", ["root_run_id"])
    op.create_index("ix_durapipe_runs_pipeline", "durapipe_runs", ["pipeline", "status"])

    op.create_table(
        "durapipe_events",
        sa.Column("run_id", sa.String(140), nullable=False),
        sa.Column("seq", sa.Integer, nullable=False),
        sa.Column("kind", sa.String(40), nullable=False),
        sa.Column("step", sa.String(200)),
        sa.Column("name", sa.String(200)),
        sa.Column("label", sa.String(200)),
        sa.Column("at", sa.Float, nullable=False),
        sa.Column("attempt", sa.Integer, nullable=False),
        sa.Column("data", sa.Text),
        sa.PrimaryKeyConstraint("run_id", "seq", name="pk_durapipe_events"),
    )

    op.create_table(
        "durapipe_inputs",
        sa.Column("id", BIGID, autoincrement=True, nullable=False),
        sa.Column("run_id", sa.String(140), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("value", sa.Text, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("consumed_seq", sa.Integer),
        sa.PrimaryKeyConstraint("id", name="pk_durapipe_inputs"),
    )
    op.create_index("ix_durapipe_inputs_run_name", "durapipe_inputs", ["run_id", "name", "consumed_seq"])

    op.create_table(
        "durapipe_logs",
        sa.Column("id", BIGID, autoincrement=True, nullable=False),
        sa.Column("run_id", sa.String(140), nullable=False),
        sa.Column("root_run_id", sa.String(140), nullable=False),
        sa.Column("step", sa.String(200)),
        sa.Column("prefix", sa.String(400), nullable=False),
        sa.Column("stream", sa.String(10), nullable=False),
        sa.Column("at", sa.Float, nullable=False),
        sa.Column("line", sa.Text, nullable=False),
        sa.Column("attempt", sa.Integer, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_durapipe_logs"),
    )
    op.create_index("ix_durapipe_logs_root", "durapipe_logs", ["root_run_id", "id"])

    op.create_table(
        "durapipe_workers",
        sa.Column("id", sa.String(40), nullable=False),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("pid", sa.Integer, nullable=False),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("pipelines", sa.Text, nullable=False),
        sa.Column("concurrency", sa.Integer, nullable=False),
        sa.Column("started_at", sa.Float, nullable=False),
        sa.Column("heartbeat_at", sa.Float, nullable=False),
        sa.Column("stopped_at", sa.Float),
        sa.PrimaryKeyConstraint("id", name="pk_durapipe_workers"),
    )

    op.create_table(
        "durapipe_holds",
        sa.Column("pipeline", sa.String(200), nullable=False),
        sa.Column("version", sa.String(100), nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.PrimaryKeyConstraint("pipeline", "version", name="pk_durapipe_holds"),
    )


def downgrade() -> None:
    for name in ("durapipe_holds", "durapipe_workers", "durapipe_logs", "durapipe_inputs", "durapipe_events", "durapipe_runs"):
        op.drop_table(name)
