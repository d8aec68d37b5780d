"""Turn the plain URLs users write into SQLAlchemy async URLs."""

from __future__ import annotations

import os
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

from ..errors import ConfigError

DEFAULT_URL = "sqlite:///durapipe.db"


@dataclass(frozen=True, kw_only=True)
class DatabaseURL:
    raw: str
    sqlalchemy: str
    dialect: str  # "sqlite" | "postgresql"
    path: str | None = None  # SQLite file


def resolve_url(url: str | None) -> DatabaseURL:
    raw = url or os.environ.get("DURAPIPE_DATABASE_URL") or DEFAULT_URL
    scheme, sep, rest = raw.partition("://")
    if not sep:
        raise ConfigError(
            f"database URL {raw!r} has no scheme; use sqlite:///path.db or "
            "postgresql://user:password@host:port/dbname"
        )
    base = scheme.split("+", 1)[0].lower()
    if base == "sqlite":
        if not rest.startswith("/"):
            raise ConfigError(
                f"SQLite URL {raw!r} must look like sqlite:///relative.db or sqlite:////abs/path.db"
            )
        path = rest[1:]
        if not path or path == ":memory:":
            raise ConfigError(
                "an in-memory SQLite database cannot be shared between processes; give a file: sqlite:///durapipe.db"
            )
        return DatabaseURL(
            raw=raw, sqlalchemy=f"sqlite+pysqlite:///{path}", dialect="sqlite", path=path
        )
    if base in ("postgresql", "postgres"):
        return DatabaseURL(raw=raw, sqlalchemy=f"postgresql+asyncpg://{rest}", dialect="postgresql")
    raise ConfigError(
        f"unsupported database URL scheme {scheme!r}: use sqlite:/// or postgresql://"
    )


def redact(url: str) -> str:
    """The URL without its password, for messages."""
    scheme, sep, rest = url.partition("://")
    if "@" in rest and ":" in rest.split("@", 1)[0]:
        user = rest.split("@", 1)[0].split(":", 1)[0]
        rest = f"{user}:***@{rest.split('@', 1)[1]}"
    return f"{scheme}{sep}{rest}"


def pg_database_name(url: str) -> str:
    """The database a postgresql:// URL names (its path), or "" when it names none."""
    try:
        return unquote(urlsplit(url).path.lstrip("/"))
    except ValueError:
        return ""
