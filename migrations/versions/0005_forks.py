"""Forks: where a forked run came from (durapipe fork).

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "durapipe_forks",
        sa.Column("run_id", sa.String(140), nullable=False),
        sa.Column("source_run_id", sa.String(140), nullable=False),
        sa.Column("step", sa.String(200), nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("created_by", sa.String(200), nullable=False),
        sa.PrimaryKeyConstraint("run_id", name="pk_durapipe_forks"),
    )
    op.create_index("ix_durapipe_forks_source", "durapipe_forks", ["source_run_id"])


def downgrade() -> None:
    op.drop_index("ix_durapipe_forks_source", table_name="durapipe_forks")
    op.drop_table("durapipe_forks")
