"""A step's start and completion in one row: `durapipe_events.started_at`.

A step that completes before its start was written (the common case: a trivial step) used to
store two rows, `step_started` and `step_completed`, in one commit. It now stores one: the
`step_completed` row with the start's time in `started_at`; readers give back both events as
before (the start with the seq before the completion's). Older rows (started_at NULL) read as
they are.

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("durapipe_events", sa.Column("started_at", sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("durapipe_events") as batch:
        batch.drop_column("started_at")
