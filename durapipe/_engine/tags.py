"""``dp.tag``: label the running run (``key=value``), journaled; and the rules tags follow.

Tags are a run's searchable labels: ``durapipe start --tag env=prod``, ``Client.start(...,
tags=)``, ``await dp.tag(customer="acme")`` during the run; ``durapipe list --tag env=prod``
finds runs by them (several tags AND together). A key holds one value; setting it again
replaces the value. A run continued with ``dp.continue_as_new`` hands its tags to its successor.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from .. import _serde
from .._kinds import EventKind, Family
from ..errors import InvalidInput
from .context import current
from .journaled import begin

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


async def tag(**tags: str | int | float | bool) -> None:
    """Set tags on the running run: ``await dp.tag(customer="acme", tier="gold")``.

    Journaled (replay sets nothing again); the tags are stored with the call's event in one
    write, so ``durapipe list --tag customer=acme`` finds the run from then on. A key set again
    gets its new value. Keys are short identifiers; values are text (numbers and booleans are
    taken as text), at most 200 characters.

    Raises:
        InvalidInput: no tags, or a key or value that is not usable.
        NotInPipeline: called outside a running pipeline.
    """
    checked = check_tags(tags, where="dp.tag")
    if not checked:
        raise InvalidInput("dp.tag needs at least one tag, e.g. await dp.tag(env='prod')")
    ctx, branch = current("tag")
    call = begin(ctx, branch, Family.TAG, "tag", None)
    if call.done is not None:
        return
    await ctx.write(call.event(EventKind.TAG_SET, _serde.dumps({"tags": checked})), tags=checked)
