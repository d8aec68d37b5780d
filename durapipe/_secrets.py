"""Secrets: values read from the environment that never reach the console, logs or history."""

from __future__ import annotations

import json
import os
from typing import Any

from .errors import ConfigError

MASK = "***"
_KNOWN: set[str] = set()  # every secret value read in this process, for scrubbing
# Every form of every known secret that text can carry, longest first: the raw value, the value
# as Python's repr shows it (an error message quoting it with !r), and both of those as JSON
# escapes them, once and twice (a PEM key or a JSON blob holds `"`, `\` or newlines, so the
# encoded history, a log line printing JSON, or JSON inside JSON never holds the raw form).
_FORMS: list[str] = []


def _forms(value: str) -> set[str]:
    found = {value, repr(value)[1:-1]}
    for _ in range(2):
        found |= {json.dumps(f, ensure_ascii=a)[1:-1] for f in found for a in (False, True)}
    return found


class Secret:
    """A secret value. ``str()`` and ``repr()`` show it masked; ``reveal()`` gives the value.

    Pass it to ``dp.exec`` in ``argv`` or ``env`` and the command gets the real value while the
    console, the logs and the history show ``***``.
    """

    __slots__ = ("name", "_value")

    def __init__(self, name: str, value: str) -> None:
        self.name = name
        self._value = value

    def reveal(self) -> str:
        """The secret's value, unmasked."""
        return self._value

    def __str__(self) -> str:
        return MASK

    def __repr__(self) -> str:
        return f"<secret {self.name}: {MASK}>"


def secret(name: str) -> Secret:
    """Read the secret ``name`` from the environment (never journaled: it is read on every replay)."""
    value = os.environ.get(name)
    if value is None:
        raise ConfigError(
            f"secret {name!r} is not set: export {name}=... in the environment of the worker or `durapipe run`"
        )
    # Masking a one- or two-character value would garble everything else.
    if len(value) >= 3 and value not in _KNOWN:
        _KNOWN.add(value)
        _FORMS[:] = sorted(set(_FORMS) | _forms(value), key=len, reverse=True)
    return Secret(name, value)


def reveal(value: object) -> str:
    return value.reveal() if isinstance(value, Secret) else str(value)


def present(text: str) -> bool:
    """Whether ``text`` holds any form (raw or escaped) of a known secret."""
    if not _FORMS:  # no secret declared: every journaled value passes here
        return False
    return any(f in text for f in _FORMS)


def scrub(text: str) -> str:
    """Replace every known secret value in ``text``, raw or escaped, with ***.

    For plain text (log lines, messages). JSON text goes through ``_serde``, which masks the
    strings inside the value instead, so the text stays valid JSON."""
    for f in _FORMS:
        if f in text:
            text = text.replace(f, MASK)
    return text


def mask_value(value: Any) -> Any:
    """A decoded JSON value with every string scrubbed (keys too); a number spelling a secret
    becomes ``***`` as well."""
    if isinstance(value, str):
        return scrub(value)
    if isinstance(value, dict):
        return {scrub(k) if isinstance(k, str) else k: mask_value(v) for k, v in value.items()}
    if isinstance(value, list):
        return [mask_value(v) for v in value]
    if isinstance(value, int | float) and not isinstance(value, bool) and present(repr(value)):
        return MASK
    return value


def _partial(text: str) -> int:
    """The length of the longest end of ``text`` that could be the start of a secret's form."""
    best = 0
    for f in _FORMS:
        i = text.find(f[0], max(0, len(text) - len(f) + 1))
        while i >= 0 and len(text) - i > best:
            if f.startswith(text[i:]):
                best = len(text) - i
                break
            i = text.find(f[0], i + 1)
    return best


class StreamMask:
    """Masks a stream handed on in pieces (an exec's output), so a secret cut by a piece boundary
    is masked as well: an end of a piece that could be the start of a secret is held back (from
    the start of its line, so lines stay whole) until the next piece says whether it is one."""

    __slots__ = ("held",)

    def __init__(self) -> None:
        self.held = ""

    def feed(self, text: str) -> str:
        """The part of ``held + text`` that is safe to hand on, masked."""
        if self.held:
            text, self.held = self.held + text, ""
        if not _FORMS:
            return text
        text = scrub(text)
        keep = _partial(text)
        if keep:
            cut = len(text) - keep
            line_start = text.rfind("\n", 0, cut) + 1
            if line_start:
                cut = line_start
            text, self.held = text[:cut], text[cut:]
        return text

    def end(self) -> str:
        """What is still held, masked: the stream has ended."""
        text, self.held = self.held, ""
        return scrub(text)
