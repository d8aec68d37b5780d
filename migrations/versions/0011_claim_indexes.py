"""The pending runs in the claim's order: a partial index (only pending runs are in it).

A claim reads each kind of runnable run from an index in its order, as far as its limit:
pending runs from this one, due timers from (status, wake_at). Before, one statement found and
sorted every runnable run per claim (bench/wake.py: ~7 ms with 10,000 runs due or pending).

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

PENDING_ONLY = sa.text("status = 'pending'")


def upgrade() -> None:
    op.create_index(
        "ix_durapipe_runs_pending",
        "durapipe_runs",
        [sa.text("coalesce(wake_at, created_at)"), "id"],
        postgresql_where=PENDING_ONLY,
        sqlite_where=PENDING_ONLY,
    )


def downgrade() -> None:
    op.drop_index("ix_durapipe_runs_pending", table_name="durapipe_runs")
