"""Secrets: values read from the environment that never reach the console, logs or history."""

from __future__ import annotations

import os

from .errors import ConfigError

MASK = "***"
_KNOWN: set[str] = set()  # every secret value read in this process, for scrubbing


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
    if len(value) >= 3:  # masking a one- or two-character value would garble everything else
        _KNOWN.add(value)
    return Secret(name, value)


def reveal(value: object) -> str:
    return value.reveal() if isinstance(value, Secret) else str(value)


def scrub(text: str) -> str:
    """Replace every known secret value in ``text`` with ***."""
    if not _KNOWN:
        return text
    for v in _KNOWN:
        if v in text:
            text = text.replace(v, MASK)
    return text
