"""Messages and published state: durapipe_messages, durapipe_published.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

BIGID = sa.BigInteger().with_variant(sa.Integer, "sqlite")


def upgrade() -> None:
    op.create_table(
        "durapipe_messages",
        sa.Column("id", BIGID, autoincrement=True, nullable=False),
        sa.Column("run_id", sa.String(140), nullable=False),
        sa.Column("topic", sa.String(200), nullable=False),
        sa.Column("value", sa.Text, nullable=False),
        sa.Column("sender", sa.String(140)),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("consumed_seq", sa.Integer),
        sa.PrimaryKeyConstraint("id", name="pk_durapipe_messages"),
    )
    op.create_index(
        "ix_durapipe_messages_run_topic",
        "durapipe_messages",
        ["run_id", "topic", "consumed_seq"],
    )
    op.create_table(
        "durapipe_published",
        sa.Column("run_id", sa.String(140), nullable=False),
        sa.Column("key", sa.String(200), nullable=False),
        sa.Column("value", sa.Text, nullable=False),
        sa.Column("seq", sa.Integer, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
        sa.PrimaryKeyConstraint("run_id", "key", name="pk_durapipe_published"),
    )


def downgrade() -> None:
    op.drop_table("durapipe_published")
    op.drop_index("ix_durapipe_messages_run_topic", table_name="durapipe_messages")
    op.drop_table("durapipe_messages")
