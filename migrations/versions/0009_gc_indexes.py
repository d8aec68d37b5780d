"""Indexes for `durapipe gc`: runs by when they finished, log lines by their run.

Without them every batch of gc read every run (to find the old finished ones) and every log
line (to delete a run's lines): minutes per batch with a year of history (bench/history.py).

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-30
"""

from __future__ import annotations

from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_durapipe_runs_finished", "durapipe_runs", ["finished_at"])
    op.create_index("ix_durapipe_logs_run", "durapipe_logs", ["run_id"])


def downgrade() -> None:
    op.drop_index("ix_durapipe_logs_run", table_name="durapipe_logs")
    op.drop_index("ix_durapipe_runs_finished", table_name="durapipe_runs")
