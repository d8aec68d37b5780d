"""JSON codec for inputs, results and errors."""

from __future__ import annotations

import dataclasses
import datetime as _dt
import enum
import json
import uuid
from typing import Any

from .errors import SerializationError

MAX_VALUE_BYTES = 1_000_000  # a step result or an input value, encoded


def _default(obj: Any) -> Any:
    if type(obj).__name__ == "Secret" and hasattr(obj, "reveal"):
        return "***"  # a secret is never stored
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return dataclasses.asdict(obj)
    dump = getattr(obj, "model_dump", None)
    if callable(dump):  # pydantic v2
        return dump(mode="json")
    if isinstance(obj, _dt.datetime | _dt.date):
        return obj.isoformat()
    if isinstance(obj, uuid.UUID):
        return str(obj)
    if isinstance(obj, enum.Enum):
        return obj.value
    if isinstance(obj, set | frozenset | tuple):
        return list(obj)
    raise TypeError(type(obj).__qualname__)


def dumps(value: Any, *, what: str = "value") -> str:
    try:
        text = json.dumps(value, default=_default, ensure_ascii=False, separators=(",", ":"))
    except TypeError as exc:
        raise SerializationError(
            f"{what} is not JSON-serialisable: it contains a {exc.args[0] if exc.args else type(value).__name__}; "
            "return JSON types, dataclasses or pydantic models"
        ) from None
    except ValueError as exc:
        raise SerializationError(f"{what} cannot be stored as JSON: {exc}") from None
    if len(text) > MAX_VALUE_BYTES and len(text.encode()) > MAX_VALUE_BYTES:
        raise SerializationError(
            f"{what} is {len(text.encode()):,} bytes encoded; the limit is {MAX_VALUE_BYTES:,} bytes. "
            "Store large data elsewhere and pass a reference"
        )
    return text


def loads(text: str | None) -> Any:
    if text is None:
        return None
    return json.loads(text)


def roundtrip(value: Any, *, what: str = "value") -> tuple[str, Any]:
    """Encode a value and decode it again, so live runs see what replays will see."""
    text = dumps(value, what=what)
    return text, json.loads(text)


def parse_cli_value(text: str) -> Any:
    """A CLI value: JSON when it parses, the plain string otherwise."""
    try:
        return json.loads(text)
    except ValueError:
        return text
