"""Schedules: the durapipe_schedules table; a run's schedule and scheduled time.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "durapipe_schedules",
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("pipeline", sa.String(200), nullable=False),
        sa.Column("target", sa.Text, nullable=False),
        sa.Column("kind", sa.String(10), nullable=False),
        sa.Column("spec", sa.String(200), nullable=False),
        sa.Column("tz", sa.String(64), nullable=False),
        sa.Column("inputs", sa.Text, nullable=False),
        sa.Column("overlap", sa.String(10), nullable=False),
        sa.Column("catch_up", sa.String(10), nullable=False),
        sa.Column("source", sa.String(10), nullable=False),
        sa.Column("paused", sa.Boolean, nullable=False),
        sa.Column("next_fire_at", sa.Float, nullable=False),
        sa.Column("last_tick_at", sa.Float),
        sa.Column("last_run_id", sa.String(140)),
        sa.Column("skipped", sa.Integer, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_durapipe_schedules"),
    )
    op.create_index("ix_durapipe_schedules_due", "durapipe_schedules", ["paused", "next_fire_at"])
    with op.batch_alter_table("durapipe_runs") as batch:
        batch.add_column(sa.Column("schedule", sa.String(100)))
        batch.add_column(sa.Column("scheduled_at", sa.Float))


def downgrade() -> None:
    with op.batch_alter_table("durapipe_runs") as batch:
        batch.drop_column("scheduled_at")
        batch.drop_column("schedule")
    op.drop_index("ix_durapipe_schedules_due", table_name="durapipe_schedules")
    op.drop_table("durapipe_schedules")
