"""Run our Alembic migrations from code (``durapipe db upgrade`` and SQLite's first use)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

VERSION_TABLE = "durapipe_alembic_version"


def migrations_dir() -> Path:
    """The migrations folder: inside the wheel, or the repository's top-level one."""
    here = Path(__file__).resolve().parent.parent
    shipped = here / "_migrations"
    if (shipped / "env.py").exists():
        return shipped
    repo = here.parent / "migrations"
    if (repo / "env.py").exists():
        return repo
    raise RuntimeError(
        f"durapipe's migrations are missing (looked in {shipped} and {repo}); reinstall durapipe"
    )


def alembic_config(connection: Any = None) -> Any:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(migrations_dir()))
    cfg.attributes["connection"] = connection
    return cfg


def upgrade_head(sync_conn: Any) -> None:
    from alembic import command

    command.upgrade(alembic_config(sync_conn), "head")


def head_revision() -> str:
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None
    return head
