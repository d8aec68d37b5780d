"""An index on runs (created_at, id): `durapipe list` and the web UI's pages, newest first.

Without it, listing the newest 50 of 1,000,000 runs sorts them all (seconds); with it the
database walks the index backwards and stops after a page.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-30
"""

from __future__ import annotations

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_durapipe_runs_created", "durapipe_runs", ["created_at", "id"])


def downgrade() -> None:
    op.drop_index("ix_durapipe_runs_created", table_name="durapipe_runs")
