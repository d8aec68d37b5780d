"""JSON codec for inputs, results and errors."""

from __future__ import annotations

import dataclasses
import datetime as _dt
import enum
import json
import uuid
from typing import Any

from . import _secrets
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
    # Decimal, Path, bytes (base64), timedelta, time...: what pydantic can write as JSON (and
    # durapipe._typed reads back by the annotation).
    from pydantic_core import PydanticSerializationError, to_jsonable_python

    try:
        return to_jsonable_python(obj, bytes_mode="base64")
    except (PydanticSerializationError, UnicodeDecodeError):
        raise TypeError(type(obj).__qualname__) from None


def storable_text(value: object) -> bool:
    """Whether ``value`` is a str both databases can store and compare: valid Unicode (no lone
    surrogate, as bytes that are not UTF-8 become in argv or stdin) and no NUL character."""
    if not isinstance(value, str) or "\x00" in value:
        return False
    if value.isascii():
        return True
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _encode(value: Any) -> str:
    return json.dumps(
        value, default=_default, ensure_ascii=False, separators=(",", ":"), allow_nan=False
    )


def mask_json(text: str) -> str:
    """JSON text with every known secret masked inside its strings (raw or escaped), still
    valid JSON: masking the encoded text itself would miss a value held in escaped form (a PEM
    key's newlines, a JSON blob's quotes) and could cut an escape in two."""
    if not _secrets.present(text):  # the common case: one scan, nothing decoded
        return text
    return _encode(_secrets.mask_value(json.loads(text)))


def dumps(value: Any, *, what: str = "value", limit: int | None = None) -> str:
    """``value`` as JSON, with secrets masked; refuses what JSON cannot hold (NaN, ±inf, other
    types) with a SerializationError naming ``what``."""
    try:
        text = mask_json(_encode(value))
    except TypeError as exc:
        raise SerializationError(
            f"{what} is not JSON-serialisable: it contains a value of type {exc.args[0] if exc.args else type(value).__name__}; "
            "return JSON types, dataclasses or pydantic models"
        ) from None
    except ValueError as exc:
        if "Out of range float" in str(exc) or "not JSON compliant" in str(exc):
            raise SerializationError(
                f"{what} contains a float that is not finite (nan, inf or -inf), which JSON "
                "cannot hold; return None or a string such as 'nan' instead"
            ) from None
        raise SerializationError(f"{what} cannot be stored as JSON: {exc}") from None
    except RecursionError:
        raise SerializationError(f"{what} is nested too deeply to be stored as JSON") from None
    if text.isascii():  # O(1) in CPython: the common case costs nothing
        size = len(text)
    else:
        try:
            size = len(text.encode())
        except UnicodeEncodeError as exc:  # json leaves lone surrogates as they are
            raise SerializationError(
                f"{what} contains text that is not valid Unicode ({exc.object[exc.start : exc.start + 4]!r}, "
                "as bytes that are not UTF-8 become); it cannot be stored"
            ) from None
    if size > (limit or MAX_VALUE_BYTES):
        raise SerializationError(
            f"{what} is {size:,} bytes encoded; the limit is {limit or MAX_VALUE_BYTES:,} bytes. "
            "Store large data elsewhere and pass a reference"
        )
    return text


def loads(text: str | None) -> Any:
    if text is None:
        return None
    return json.loads(text)


def _not_json(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def parse_cli_value(text: str) -> Any:
    """A CLI value: JSON when it parses, the plain string otherwise (``NaN``, ``Infinity``
    are not JSON: they stay strings)."""
    try:
        return json.loads(text, parse_constant=_not_json)
    except ValueError:
        return text
    except RecursionError:  # JSON all right, but deeper than Python's parser goes
        raise SerializationError("the value is nested too deeply to be read as JSON") from None
