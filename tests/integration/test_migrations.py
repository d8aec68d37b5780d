"""`upgrade head` on an empty database gives exactly the tables the code uses."""

from __future__ import annotations

import warnings
from typing import Any

import pytest

from durapipe._store.migrate import head_revision
from durapipe._store.schema import metadata
from durapipe._store.store import SCHEMA_REVISION

PENDING = "ix_durapipe_runs_pending"  # partial, on an expression


async def _index_sql(store: Any, name: str) -> str:
    if store.is_sqlite:
        sql = "SELECT sql FROM sqlite_master WHERE type = 'index' AND name = :n"
    else:
        sql = "SELECT indexdef FROM pg_indexes WHERE indexname = :n"

    def go(conn: Any) -> str:
        from sqlalchemy import text

        return str(conn.execute(text(sql), {"n": name}).scalar())

    return await store.run_read(go)


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

    with warnings.catch_warnings():  # SQLAlchemy does not reflect SQLite's on an expression
        warnings.filterwarnings("ignore", "Skipped unsupported reflection of expression-based")
        changes = await store.run_read(diff)
    # The one index the models do not declare (durapipe/_store/schema.py says why): by its SQL.
    extra = [c for c in changes if c[0] == "remove_index" and c[1].name == PENDING]
    assert len(extra) == (0 if store.is_sqlite else 1), changes  # SQLite's is not reflected
    changes = [c for c in changes if c not in extra]
    assert " ".join((await _index_sql(store, PENDING)).split()).lower() == (
        "create index ix_durapipe_runs_pending on "
        + ("" if store.is_sqlite else "public.")
        + "durapipe_runs "
        + ("" if store.is_sqlite else "using btree ")
        + "(coalesce(wake_at, created_at), id) where "
        + ("status = 'pending'" if store.is_sqlite else "((status)::text = 'pending'::text)")
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
