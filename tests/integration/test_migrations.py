"""`upgrade head` on an empty database gives exactly the tables the code uses."""

from __future__ import annotations

import warnings
from typing import Any

import pytest

from durapipe._store.migrate import head_revision
from durapipe._store.schema import metadata
from durapipe._store.store import SCHEMA_REVISION

PENDING = "ix_durapipe_runs_pending"  # on an expression


def test_schema_revision_constant_is_alembic_head() -> None:
    assert head_revision() == SCHEMA_REVISION


@pytest.mark.asyncio
async def test_migrated_database_matches_the_models(store: Any) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    def diff(sync_conn: Any) -> list[Any]:
        ctx = MigrationContext.configure(
            sync_conn, opts={"version_table": "durapipe_alembic_version", "compare_type": True}
        )
        return list(compare_metadata(ctx, metadata))

    with warnings.catch_warnings():
        # SQLAlchemy does not reflect SQLite's indexes on an expression: checked by their SQL.
        # (alembic then leaves them out of the comparison, and says so)
        warnings.filterwarnings("ignore", "Skipped unsupported reflection of expression-based")
        warnings.filterwarnings("ignore", "autogenerate skipping metadata-specified expression")
        changes = await store.run_read(diff)
    if store.is_sqlite:
        sql = await store.run_read(
            lambda c: c.exec_driver_sql(
                "SELECT sql FROM sqlite_master WHERE type = 'index' AND name = ?", (PENDING,)
            ).scalar()
        )
        assert " ".join(sql.split()) == (
            f"CREATE INDEX {PENDING} ON durapipe_runs (coalesce(wake_at, created_at), id) "
            "WHERE status = 'pending'"
        )
    assert changes == []
    assert await store.schema_revision() == SCHEMA_REVISION


@pytest.mark.asyncio
async def test_sqlite_file_is_private_to_its_owner(tmp_path: Any) -> None:
    import os
    import stat

    from durapipe._store import open_store

    s = await open_store(f"sqlite:///{tmp_path / 'new.db'}")
    await s.close()
    mode = stat.S_IMODE(os.stat(tmp_path / "new.db").st_mode)
    assert mode == 0o600
