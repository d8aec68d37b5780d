"""Queues: the queues' limits, and a run's queue, key, priority and when it left the line.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "durapipe_queues",
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("concurrency", sa.Integer),
        sa.Column("key_concurrency", sa.Integer),
        sa.Column("rate_limit", sa.Integer),
        sa.Column("rate_window", sa.Float),
        sa.Column("priority", sa.Boolean, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_durapipe_queues"),
    )
    op.add_column("durapipe_runs", sa.Column("queue", sa.String(200)))
    op.add_column("durapipe_runs", sa.Column("queue_key", sa.String(200)))
    op.add_column("durapipe_runs", sa.Column("priority", sa.Integer))
    op.add_column("durapipe_runs", sa.Column("dequeued_at", sa.Float))
    op.create_index("ix_durapipe_runs_queue_taken", "durapipe_runs", ["queue", "dequeued_at"])
    op.create_index(
        "ix_durapipe_runs_queue_line",
        "durapipe_runs",
        ["queue", "status", sa.text("priority DESC"), "created_at", "id"],
    )


def downgrade() -> None:
    op.drop_index("ix_durapipe_runs_queue_line", table_name="durapipe_runs")
    op.drop_index("ix_durapipe_runs_queue_taken", table_name="durapipe_runs")
    with op.batch_alter_table("durapipe_runs") as batch:
        for col in ("dequeued_at", "priority", "queue_key", "queue"):
            batch.drop_column(col)
    op.drop_table("durapipe_queues")
