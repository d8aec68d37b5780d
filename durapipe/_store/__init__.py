"""Storage: the only package that speaks SQL."""

from .postgres import create_database, drop_database
from .store import Store, open_store

__all__ = ["Store", "create_database", "drop_database", "open_store"]
