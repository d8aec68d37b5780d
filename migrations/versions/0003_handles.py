"""Child handles, continue-as-new and tags: run links (chain, detached) and a table of tags.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("durapipe_runs") as batch:
        batch.add_column(sa.Column("continued_from", sa.String(140)))
        batch.add_column(sa.Column("chain_id", sa.String(140)))
        batch.add_column(sa.Column("detached", sa.Boolean))
        batch.create_index("ix_durapipe_runs_chain", ["chain_id"])
    op.create_table(
        "durapipe_tags",
        sa.Column("run_id", sa.String(140), nullable=False),
        sa.Column("key", sa.String(64), nullable=False),
        sa.Column("value", sa.String(200), nullable=False),
        sa.PrimaryKeyConstraint("run_id", "key", name="pk_durapipe_tags"),
    )
    op.create_index("ix_durapipe_tags_key_value", "durapipe_tags", ["key", "value"])


def downgrade() -> None:
    op.drop_index("ix_durapipe_tags_key_value", table_name="durapipe_tags")
    op.drop_table("durapipe_tags")
    with op.batch_alter_table("durapipe_runs") as batch:
        batch.drop_index("ix_durapipe_runs_chain")
        batch.drop_column("detached")
        batch.drop_column("chain_id")
        batch.drop_column("continued_from")
