"""The rules tags follow (dp.tag, ``--tag key=value``, ``Client.start(tags=)``, ``list --tag``).

A module of its own, without the engine: the client and the CLI check tags before they open the
database; ``durapipe/_engine/tags.py`` has ``dp.tag`` itself.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from . import _serde
from .errors import InvalidInput

MAX_KEY = 64
MAX_VALUE = 200
_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-]{0,63}\Z")


def check_tag(key: Any, value: Any, *, where: str = "tag") -> tuple[str, str]:
    """``(key, value)`` as stored, or InvalidInput saying what is wrong with it.

    A key is a short identifier (1-64 letters, digits, ``_ . -``, starting with a letter or
    ``_``); a value is text of at most 200 characters (numbers and booleans are taken as text).
    """
    if not isinstance(key, str) or not _KEY.match(key):
        raise InvalidInput(
            f"{where} key {key!r} is not a short identifier: 1-{MAX_KEY} letters, digits, "
            "_ . - starting with a letter or _ (e.g. env=prod)"
        )
    if isinstance(value, bool):
        value = "true" if value else "false"
    elif isinstance(value, int | float):
        value = str(value)
    if not isinstance(value, str):
        raise InvalidInput(
            f"{where} {key}: a value is text, not {type(value).__name__} (e.g. {key}=prod)"
        )
    if len(value) > MAX_VALUE or not _serde.storable_text(value):
        raise InvalidInput(
            f"{where} {key}: a value is at most {MAX_VALUE} characters of valid Unicode without NUL bytes"
        )
    return key, value


def check_tags(tags: Mapping[str, Any] | None, *, where: str = "tag") -> dict[str, str]:
    """Every tag checked (:func:`check_tag`). -> ``{key: value}``."""
    if tags is None:
        return {}
    if not isinstance(tags, Mapping):
        raise InvalidInput(f"tags are a dict of key to value, not {type(tags).__name__}")
    return dict(check_tag(k, v, where=where) for k, v in tags.items())


def parse_tags(pairs: list[str] | None, *, option: str = "--tag") -> dict[str, str]:
    """``--tag key=value`` options (repeatable) as ``{key: value}``."""
    out: dict[str, str] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep:
            raise InvalidInput(f"{option} {pair!r} is not KEY=VALUE (e.g. {option} env=prod)")
        k, v = check_tag(key, value, where=option)
        out[k] = v
    return out
