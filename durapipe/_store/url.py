"""Turn the plain URLs users write into SQLAlchemy async URLs."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from urllib.parse import parse_qsl, quote, unquote, urlsplit

from ..errors import ConfigError

DEFAULT_URL = "sqlite:///durapipe.db"


@dataclass(frozen=True, kw_only=True)
class DatabaseURL:
    raw: str
    sqlalchemy: str
    dialect: str  # "sqlite" | "postgresql"
    path: str | None = None  # SQLite file


# What a password looks like wherever it can be written: after "user:" and before the LAST "@"
# of a URL (a password holding an unencoded "@" leaks its tail otherwise), and as the value of a
# password= query parameter or libpq keyword (quoted or not).
_USERINFO = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.-]*://[^:/?#@\s]*:)[^\s]*@")
_KEYWORD = re.compile(r"(?i)(?P<head>\b(?:ssl)?password\s*=\s*)(?:'(?:\\.|[^'\\])*'?|[^\s&#]*)")
_KNOWN: set[str] = set()  # every database password seen by this process (and its pieces)
_SSLMODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")


def redact(text: str) -> str:
    """``text`` (a URL, a libpq keyword string, a driver's error message) with no part of any
    database password left in it: passwords in URL and keyword form become ***, and so does
    every password (or piece of one) this process was given, wherever it appears."""
    text = _USERINFO.sub(lambda m: m["head"] + "***@", text)
    text = _KEYWORD.sub(lambda m: m["head"] + "***", text)
    for secret in sorted(_KNOWN, key=len, reverse=True):
        if secret in text:
            text = text.replace(secret, "***")
    return text


def _remember(raw: str) -> None:
    """Note the passwords ``raw`` holds, so :func:`redact` masks them wherever they show up."""
    found: list[str] = []
    _, sep, rest = raw.partition("://")
    if sep and "@" in rest:
        userinfo = rest[: rest.rindex("@")]
        if ":" in userinfo:
            found.append(userinfo.split(":", 1)[1])
    for m in _KEYWORD.finditer(raw):
        value = m.group(0)[len(m["head"]) :]
        found.append(value.strip("'"))
    for value in found:
        for form in {value, unquote(value), quote(unquote(value), safe="")}:
            # The whole password, and each piece a driver may have cut it into at a delimiter.
            for piece in [form, *re.split(r"[@/?#:&=\s]+", form)]:
                if len(piece) >= 4 or (piece == form and len(piece) >= 3):
                    _KNOWN.add(piece)


def resolve_url(url: str | None) -> DatabaseURL:
    raw = url or os.environ.get("DURAPIPE_DATABASE_URL") or DEFAULT_URL
    _remember(raw)
    scheme, sep, rest = raw.partition("://")
    if not sep:
        raise ConfigError(
            f"database URL {redact(raw)!r} has no scheme; use sqlite:///path.db or "
            "postgresql://user:password@host:port/dbname"
        )
    base = scheme.split("+", 1)[0].lower()
    if base == "sqlite":
        if not rest.startswith("/"):
            raise ConfigError(
                f"SQLite URL {redact(raw)!r} must look like sqlite:///relative.db or sqlite:////abs/path.db"
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
        _check_pg(raw, rest)
        return DatabaseURL(raw=raw, sqlalchemy=f"postgresql+asyncpg://{rest}", dialect="postgresql")
    raise ConfigError(
        f"unsupported database URL scheme {scheme!r}: use sqlite:/// or postgresql://"
    )


def _check_pg(raw: str, rest: str) -> None:
    """Refuse what the driver would choke on with a traceback (or misread) before connecting."""
    shown = redact(raw)
    authority = rest.split("/", 1)[0].split("?", 1)[0]
    if authority.count("@") > 1:
        raise ConfigError(
            f"database URL {shown!r}: the user or password holds an unencoded '@'; "
            "percent-encode it as %40 (and ':' '/' '?' '#' as %3A %2F %3F %23)"
        )
    try:
        parts = urlsplit(raw)
        hostport = parts.netloc.rsplit("@", 1)[-1]
        for host in hostport.split(","):  # libpq allows host1:port1,host2:port2
            port = host.rsplit("]", 1)[-1].rpartition(":")[2] if ":" in host else ""
            if port and not (port.isascii() and port.isdigit() and 1 <= int(port) <= 65535):
                raise ValueError(f"port {port!r}")
        query = parse_qsl(parts.query, keep_blank_values=True)
    except ValueError as exc:
        raise ConfigError(
            f"database URL {shown!r} is not valid ({redact(str(exc))}); a port is a number "
            "from 1 to 65535: postgresql://user:password@host:5432/dbname"
        ) from None
    for key, value in query:
        if key == "sslmode" and value not in _SSLMODES:
            raise ConfigError(
                f"database URL {shown!r}: sslmode={value!r} is not one of {', '.join(_SSLMODES)}"
            )


def pg_database_name(url: str) -> str:
    """The database a postgresql:// URL names (its path), or "" when it names none."""
    try:
        return unquote(urlsplit(url).path.lstrip("/"))
    except ValueError:
        return ""
