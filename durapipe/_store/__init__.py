"""Storage: the only package that speaks SQL."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

# Imported on first use (PEP 562): `from durapipe._store import schema` or `.url` (the CLI's
# --help and its errors) need neither the Store's queries nor the PostgreSQL driver.
if TYPE_CHECKING:
    from .postgres import create_database, drop_database
    from .store import Store, open_store

_LAZY = {
    "Store": ".store",
    "open_store": ".store",
    "create_database": ".postgres",
    "drop_database": ".postgres",
}

__all__ = ["Store", "create_database", "drop_database", "open_store"]


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from importlib import import_module

    value = getattr(import_module(_LAZY[name], __name__), name)
    globals()[name] = value
    return value
