"""Schedules as values: ``dp.Cron`` and ``dp.Every``, their checks, and their ticks.

A schedule's times are computed here, from what its row stores (``kind``, ``spec``, ``tz``), by
every worker alike: cron expressions by ``cronsim`` (a maintained parser; its DST rules are the
ones we document), fixed intervals by arithmetic on the epoch. Nothing here touches the database.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import KW_ONLY, dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from .errors import InvalidInput

OVERLAPS = ("skip", "queue", "allow")
CATCH_UPS = ("none", "last", "all")
MISSED_GRACE_MAX = 60.0  # a tick later than this (or half its period) counts as missed
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,99}$")
_UNITS = {"w": 604800, "d": 86400, "h": 3600, "m": 60, "s": 1}
_PART = re.compile(r"([0-9]+)([wdhms])")
_FIELDS = ("minute", "hour", "day-of-month", "month", "day-of-week")


def check_name(name: str) -> str:
    """A schedule name: 1-100 letters, digits, ``_ . -``, starting with a letter or digit."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise InvalidInput(
            f"schedule name {name!r} is not usable: 1-100 letters, digits and _ . - "
            "starting with a letter or digit"
        )
    return name


def parse_every(value: str | float | int) -> int:
    """``15m``, ``1h30m``, ``2d``, ``90s`` or a number of seconds -> whole seconds (at least 1)."""
    if isinstance(value, bool):
        raise InvalidInput(f"interval {value!r} is not a duration")
    if isinstance(value, int | float):
        if not math.isfinite(value) or value < 1 or value != int(value):
            raise InvalidInput(
                f"interval {value!r}: give whole seconds, 1 or more (or e.g. '15m', '1h30m')"
            )
        return int(value)
    body = str(value).strip()
    if body.isdigit():
        seconds = int(body)
    else:
        parts = _PART.findall(body)
        if not parts or "".join(n + u for n, u in parts) != body:
            raise InvalidInput(
                f"interval {value!r} does not parse: use whole numbers with units w, d, h, m, s, "
                "e.g. 30s, 15m, 1h30m, 2d"
            )
        seconds = sum(int(n) * _UNITS[u] for n, u in parts)
    if seconds < 1:
        raise InvalidInput(f"interval {value!r}: a schedule fires at most once a second")
    return seconds


def check_tz(tz: str) -> ZoneInfo:
    """The IANA time zone ``tz`` (``Europe/Berlin``, ``UTC``)."""
    try:
        if not isinstance(tz, str) or not tz or "\x00" in tz:
            raise ValueError
        return ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise InvalidInput(
            f"time zone {tz!r} is unknown: give an IANA name such as UTC, Europe/Berlin or "
            "America/New_York"
        ) from None


def check_cron(expr: str, tz: str = "UTC") -> None:
    """Check a five-field cron expression; the error names the field that is wrong."""
    from cronsim import CronSim, CronSimError

    zone = check_tz(tz)
    if not isinstance(expr, str) or not expr.strip():
        raise InvalidInput("cron expression is empty: give five fields, e.g. '0 3 * * *'")
    fields = expr.split()
    if len(fields) != 5:
        raise InvalidInput(
            f"cron expression {expr!r} has {len(fields)} fields, not 5 "
            "(minute hour day-of-month month day-of-week), e.g. '0 3 * * *'"
        )
    try:
        CronSim(expr, datetime.now(zone))
    except CronSimError as exc:
        what = str(exc)
        for i, name in enumerate(_FIELDS):
            if name.replace("-", " ") in what.lower().replace("-", " "):
                raise InvalidInput(
                    f"cron expression {expr!r}: the {name} field {fields[i]!r} is not valid ({what})"
                ) from None
        raise InvalidInput(f"cron expression {expr!r} is not valid: {what}") from None


def check_policy(overlap: str, catch_up: str) -> None:
    if overlap not in OVERLAPS:
        raise InvalidInput(f"overlap {overlap!r} is unknown; one of: {', '.join(OVERLAPS)}")
    if catch_up not in CATCH_UPS:
        raise InvalidInput(f"catch-up {catch_up!r} is unknown; one of: {', '.join(CATCH_UPS)}")


@dataclass(frozen=True)
class Cron:
    """A schedule by cron expression, for ``@dp.pipeline(schedule=...)`` and ``Client.add_schedule``.

    ::

        @dp.pipeline(schedule=dp.Cron("0 3 * * *", tz="Europe/Berlin"))
        async def nightly() -> None: ...

    Five fields (minute hour day-of-month month day-of-week), evaluated by ``cronsim`` in the
    time zone ``tz``. Around DST changes it behaves as cron does: a time skipped when clocks go
    forward fires once right after the change; a time repeated when they go back fires once
    (a wildcard hour, as in ``*/30 * * * *``, fires in both).

    Attributes:
        expr: the cron expression, e.g. ``"*/15 * * * *"``.
        tz: an IANA time zone name (default ``UTC``).
        overlap: a tick while the previous run still goes: ``skip`` it, ``queue`` it (it
            starts when that run ends), or ``allow`` both to run.
        catch_up: ticks missed while no worker ran: ``none``, only the ``last``, or ``all``.
        inputs: the inputs of every run it starts.
    """

    expr: str
    _: KW_ONLY
    tz: str = "UTC"
    overlap: Literal["skip", "queue", "allow"] = "skip"
    catch_up: Literal["none", "last", "all"] = "last"
    inputs: dict[str, Any] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        check_cron(self.expr, self.tz)
        check_policy(self.overlap, self.catch_up)

    @property
    def kind(self) -> str:
        return "cron"

    @property
    def spec(self) -> str:
        return " ".join(self.expr.split())


@dataclass(frozen=True)
class Every:
    """A schedule at a fixed interval, for ``@dp.pipeline(schedule=...)`` and ``Client.add_schedule``.

    ::

        @dp.pipeline(schedule=dp.Every("15m"))
        async def sync_accounts() -> None: ...

    Ticks are whole multiples of the interval since the Unix epoch (UTC), so ``Every("1h")``
    fires on the hour and every worker agrees on the ticks; DST does not move them.

    Attributes:
        interval: ``"30s"``, ``"15m"``, ``"1h30m"``, ``"2d"``, or whole seconds (1 or more).
        overlap: as for :class:`Cron`.
        catch_up: as for :class:`Cron`.
        inputs: the inputs of every run it starts.
    """

    interval: str | int
    _: KW_ONLY
    overlap: Literal["skip", "queue", "allow"] = "skip"
    catch_up: Literal["none", "last", "all"] = "last"
    inputs: dict[str, Any] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        parse_every(self.interval)
        check_policy(self.overlap, self.catch_up)

    @property
    def kind(self) -> str:
        return "every"

    @property
    def spec(self) -> str:
        return str(parse_every(self.interval))

    @property
    def tz(self) -> str:
        return "UTC"


Schedule = Cron | Every


# ---------------------------------------------------------------------- ticks


def next_tick(kind: str, spec: str, tz: str, after: float) -> float:
    """The first tick of the schedule strictly after ``after`` (seconds since the epoch)."""
    if kind == "every":
        step = int(spec)
        return (math.floor(after / step) + 1) * step
    from cronsim import CronSim

    zone = ZoneInfo(tz)
    start = datetime.fromtimestamp(after, UTC).astimezone(zone)
    return next(CronSim(spec, start)).timestamp()


def ticks_between(
    kind: str, spec: str, tz: str, first: float, until: float, *, most: int = 1000
) -> list[float]:
    """The ticks from ``first`` (itself a tick) up to and including ``until``, in order (at
    most ``most`` of them: the rest come next time)."""
    out: list[float] = []
    t = first
    while t <= until and len(out) < most:
        out.append(t)
        t = next_tick(kind, spec, tz, t)
    return out


def last_tick(kind: str, spec: str, tz: str, until: float) -> float:
    """The last tick at or before ``until``."""
    if kind == "every":
        step = int(spec)
        return float(math.floor(until / step) * step)
    from cronsim import CronSim

    zone = ZoneInfo(tz)
    start = datetime.fromtimestamp(until, UTC).astimezone(zone)
    before = next(CronSim(spec, start, reverse=True)).timestamp()
    after = next_tick(kind, spec, tz, before)
    return after if after <= until else before


def count_ticks(kind: str, spec: str, tz: str, first: float, upto: float) -> int:
    """How many ticks from ``first`` (a tick) to ``upto`` (counted up to 100,000)."""
    if upto < first:
        return 0
    if kind == "every":
        return int((upto - first) // int(spec)) + 1
    return len(ticks_between(kind, spec, tz, first, upto, most=100_000))


def missed_grace(kind: str, spec: str, tz: str, tick: float) -> float:
    """How late a tick may start and still count as on time: half its period, at most 60 s."""
    period = next_tick(kind, spec, tz, tick) - tick
    return min(MISSED_GRACE_MAX, period / 2)


def describe(kind: str, spec: str, tz: str) -> str:
    """``cron '0 3 * * *' Europe/Berlin`` / ``every 15m``: as ``schedule list`` shows it."""
    if kind == "every":
        secs = int(spec)
        out = ""
        for unit, size in _UNITS.items():
            if unit == "w":
                continue
            n, secs = divmod(secs, size)
            if n:
                out += f"{n}{unit}"
        return f"every {out}"
    return f"cron '{spec}'" + (f" {tz}" if tz != "UTC" else "")


def tick_run_id(name: str, tick: float) -> str:
    """The run id of a schedule's tick: the same for every worker that tries to start it."""
    stamp = datetime.fromtimestamp(tick, UTC).strftime("%Y%m%dT%H%M%SZ")
    return f"{name}:{stamp}"


def schedule_row(
    *,
    name: str,
    pipeline: str,
    target: str,
    schedule: Schedule,
    inputs: str,
    source: str,
    now: float,
) -> dict[str, Any]:
    """The row of a new schedule; its first tick is the first after ``now``."""
    return {
        "name": name,
        "pipeline": pipeline,
        "target": target,
        "kind": schedule.kind,
        "spec": schedule.spec,
        "tz": schedule.tz,
        "inputs": inputs,
        "overlap": schedule.overlap,
        "catch_up": schedule.catch_up,
        "source": source,
        "paused": False,
        "next_fire_at": next_tick(schedule.kind, schedule.spec, schedule.tz, now),
        "last_tick_at": None,
        "last_run_id": None,
        "skipped": 0,
        "created_at": now,
        "updated_at": now,
    }


def run_builder(
    *, version: str, entrypoint: str, pinned: bool, by: dict[str, Any], now: Callable[[], float]
) -> Callable[[Any, float, str], tuple[dict[str, Any], list[dict[str, Any]]]]:
    """What the store calls, under the schedule's lock, to make the run of a tick: a pending
    run of the schedule's pipeline at this version, with the schedule's inputs."""
    from ._records import scheduled_run

    def build(row: Any, tick: float, run_id: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        return scheduled_run(
            run_id=run_id,
            schedule=row.name,
            tick=tick,
            pipeline=row.pipeline,
            version=version,
            entrypoint=entrypoint,
            pinned=pinned,
            inputs=row.inputs,
            now=now(),
            by=by,
        )

    return build
