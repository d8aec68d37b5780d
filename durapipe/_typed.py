"""Typed values: stored values decoded to the types their function annotates.

A step's result, a pipeline's inputs and a child's output are stored as JSON (``_serde``
encodes dataclasses, pydantic models, ``datetime``, ``Decimal``, ``UUID``, ``Enum``, ``Path``,
``bytes`` as base64, sets and tuples by what they are). On the way back they are decoded by the
annotation of the function that produced or takes them, with a pydantic ``TypeAdapter`` cached
per function, so ``-> Invoice`` gives back an ``Invoice``. The live path decodes the stored JSON
too: a typed value a run sees live equals the one it sees on replay.

Un-annotated values and plain JSON types (``str``, ``int``, ``float``, ``bool``, ``None``,
``list``, ``dict``, ``Any``) are left as they are: no adapter, nothing on the hot path.
"""

from __future__ import annotations

import inspect
import types
import typing
from collections.abc import Callable
from typing import Any

from .errors import InvalidInput, SerializationError

# An adapter is built for ``tuple[T]`` rather than ``T``: pydantic refuses a config for a model
# or dataclass itself, and the wrapper's config (bytes as base64, as ``_serde`` writes them)
# reaches the stdlib dataclasses inside it.
_CONFIG: Any = None
_PLAIN = frozenset({str, int, float, bool, type(None), dict, list, object, Any})

# Per function: its result's adapter (None when it needs none), its parameters' adapters
# (decoded when a run starts), its scalar parameters' converters (applied before it is stored).
_RESULTS: dict[Callable[..., Any], Any] = {}
_PARAMS: dict[Callable[..., Any], dict[str, Any]] = {}
_SCALARS: dict[Callable[..., Any], dict[str, Any]] = {}
_SCALAR_TYPES = (str, int, float, bool)


def _plain(tp: Any) -> bool:
    """Whether values of ``tp`` are JSON values already (decoding would change nothing)."""
    if tp in _PLAIN or tp is inspect.Parameter.empty:
        return True
    origin = typing.get_origin(tp)
    if origin is typing.Annotated:
        return _plain(typing.get_args(tp)[0])
    if origin in (dict, list, typing.Union, types.UnionType):
        return all(_plain(a) for a in typing.get_args(tp) if a is not Ellipsis)
    if origin is typing.Literal:
        return True
    return False


def _adapter(tp: Any) -> Any:
    global _CONFIG
    from pydantic import ConfigDict, TypeAdapter

    if _CONFIG is None:
        _CONFIG = ConfigDict(ser_json_bytes="base64", val_json_bytes="base64")
    return TypeAdapter(tuple[tp], config=_CONFIG)


def _hints(fn: Callable[..., Any]) -> dict[str, Any]:
    try:
        return typing.get_type_hints(fn, include_extras=True)
    except Exception:  # a name the annotations use is not importable: values stay untyped
        return {}


def result_adapter(fn: Callable[..., Any]) -> Any:
    """The adapter of ``fn``'s return annotation, or None when its values need no decoding."""
    try:
        return _RESULTS[fn]
    except KeyError:
        pass
    tp = _hints(fn).get("return", inspect.Parameter.empty)
    if inspect.iscoroutinefunction(fn) and typing.get_origin(tp) in (
        typing.Coroutine,
        typing.Awaitable,
    ):
        tp = typing.get_args(tp)[-1]
    found = None if _plain(tp) else _adapter(tp)
    _RESULTS[fn] = found
    return found


def param_adapters(fn: Callable[..., Any]) -> dict[str, Any]:
    """The adapters of ``fn``'s annotated parameters that need decoding, by name."""
    try:
        return _PARAMS[fn]
    except KeyError:
        pass
    hints = _hints(fn)
    found: dict[str, Any] = {}
    for name, param in inspect.signature(fn).parameters.items():
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        tp = hints.get(name, inspect.Parameter.empty)
        if not _plain(tp):
            found[name] = (_adapter(tp), tp)
    _PARAMS[fn] = found
    return found


def _scalar(tp: Any) -> bool:
    """``str``, ``int``, ``float``, ``bool``, or one of them or None."""
    if tp in _SCALAR_TYPES:
        return True
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return len(args) == 1 and args[0] in _SCALAR_TYPES
    return False


def scalar_converters(fn: Callable[..., Any]) -> dict[str, Any]:
    """Converters for ``fn``'s parameters annotated ``str``/``int``/``float``/``bool``: a
    command line's ``--input n=5`` is the JSON 5, which a ``str`` parameter gets as ``"5"``."""
    try:
        return _SCALARS[fn]
    except KeyError:
        pass
    from pydantic import ConfigDict, TypeAdapter

    config = ConfigDict(coerce_numbers_to_str=True, allow_inf_nan=False)
    hints = _hints(fn)
    found = {
        name: (TypeAdapter(hints[name], config=config), hints[name])
        for name in inspect.signature(fn).parameters
        if name in hints and _scalar(hints[name])
    }
    _SCALARS[fn] = found
    return found


def decode(adapter: Any, value: Any, *, what: str) -> Any:
    """``value`` (a stored JSON value) as the type ``adapter`` was built for."""
    if adapter is None:
        return value
    from pydantic import ValidationError

    try:
        return adapter.validate_python((value,))[0]
    except ValidationError as exc:
        raise SerializationError(f"{what} does not fit its annotated type: {_why(exc)}") from None


def decode_inputs(
    fn: Callable[..., Any], inputs: dict[str, Any], *, pipeline: str
) -> dict[str, Any]:
    """A run's stored inputs, each decoded to the type of the parameter it fills."""
    adapters = param_adapters(fn)
    if not adapters:
        return inputs
    return {
        k: decode(adapters[k][0], v, what=f"input {k!r} of pipeline {pipeline!r}")
        if k in adapters
        else v
        for k, v in inputs.items()
    }


def check_inputs(
    fn: Callable[..., Any], inputs: dict[str, Any], *, pipeline: str
) -> dict[str, Any]:
    """Refuse an input that does not convert to its parameter's annotated type, in one line
    naming the input and the type (before anything is stored). -> the inputs, those annotated
    ``str``/``int``/``float``/``bool`` converted (``--input n=5`` for ``n: str`` is ``"5"``)."""
    from pydantic import ValidationError

    from . import _serde

    adapters = param_adapters(fn)
    scalars = scalar_converters(fn)
    if scalars:
        inputs = dict(inputs)
        for name, (conv, tp) in scalars.items():
            if name not in inputs:
                continue
            try:
                inputs[name] = conv.validate_python(inputs[name])
            except ValidationError as exc:
                raise InvalidInput(
                    f"input {name!r} of pipeline {pipeline!r} must be {_type_name(tp)}: "
                    f"{_why(exc, wrapped=False)}; got {_short(inputs[name])}"
                ) from None
    for name, value in inputs.items():
        try:  # what cannot be stored (a float that is not finite...), named by its input
            text = _serde.dumps(value, what=f"input {name!r} of pipeline {pipeline!r}")
        except SerializationError as exc:
            raise InvalidInput(str(exc)) from None
        if name not in adapters:
            continue
        adapter, tp = adapters[name]
        try:
            adapter.validate_python((_serde.loads(text),))
        except ValidationError as exc:
            raise InvalidInput(
                f"input {name!r} of pipeline {pipeline!r} must be {_type_name(tp)}: "
                f"{_why(exc)}; got {_short(inputs[name])}"
            ) from None
    return inputs


def _type_name(tp: Any) -> str:
    if isinstance(tp, type):
        return tp.__name__
    return str(tp).replace("typing.", "")


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _why(exc: Any, *, wrapped: bool = True) -> str:
    """A pydantic ValidationError's first complaint, in one line (where, what)."""
    errs = exc.errors(include_url=False)
    if not errs:
        return str(exc).splitlines()[0]
    first = errs[0]
    # [0] is the index in the tuple[T] wrapper; a scalar's union names its member: left out.
    loc = "" if not wrapped else ".".join(str(p) for p in first.get("loc", ())[1:])
    msg = str(first.get("msg", "invalid")).replace("\n", " ")
    more = f" (and {len(errs) - 1} more)" if len(errs) > 1 else ""
    return f"{loc}: {msg}{more}" if loc else f"{msg}{more}"
