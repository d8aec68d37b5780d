"""Run timeouts and the recovery limit: durapipe_runs.deadline_at and .recoveries.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("durapipe_runs") as batch:
        batch.add_column(sa.Column("deadline_at", sa.Float, nullable=True))
        batch.add_column(
            sa.Column("recoveries", sa.Integer, nullable=False, server_default="0")
        )


def downgrade() -> None:
    with op.batch_alter_table("durapipe_runs") as batch:
        batch.drop_column("recoveries")
        batch.drop_column("deadline_at")
