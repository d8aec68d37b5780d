"""The Client's schedule methods: add, list, pause, resume, delete and trigger schedules."""

from __future__ import annotations

import builtins
import os
import socket
import time
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from . import _schedules as sch
from . import _serde
from ._definition import PipelineDef, load_target, registered
from ._ids import new_id
from ._schedules import Cron, Every
from .errors import InvalidInput, TargetNotFound

if TYPE_CHECKING:
    from ._store import Store


@dataclass(frozen=True, kw_only=True)
class ScheduleView:
    """A schedule as a program sees it (``Client.list_schedules``, ``durapipe schedule list``).

    Attributes:
        name: the schedule's name (a code-declared schedule is named after its pipeline).
        pipeline: the name of the pipeline it starts.
        target: where the pipeline is loaded from (``/path/file.py:name``, ``module:name``).
        kind: ``cron`` or ``every``.
        spec: the cron expression, or the interval in seconds.
        tz: the time zone of a cron expression (``UTC`` for intervals).
        description: ``cron '0 3 * * *' Europe/Berlin`` or ``every 15m``.
        inputs: the inputs of each run.
        overlap: ``skip``, ``queue`` or ``allow``.
        catch_up: ``none``, ``last`` or ``all``.
        source: ``code`` (declared with ``@dp.pipeline(schedule=...)``) or ``api`` (added).
        paused: it fires nothing until resumed.
        next_fire_at: its next tick (seconds since the epoch).
        last_tick_at: the tick (or trigger) time of the last run it started.
        last_run_id: that run's id.
        last_status: that run's status now.
        skipped: ticks it let pass without a run (overlap ``skip``, catch-up).
    """

    name: str
    pipeline: str
    target: str
    kind: str
    spec: str
    tz: str
    description: str
    inputs: dict[str, Any]
    overlap: str
    catch_up: str
    source: str
    paused: bool
    next_fire_at: float
    last_tick_at: float | None
    last_run_id: str | None
    last_status: str | None
    skipped: int

    @classmethod
    def of(cls, row: Any) -> ScheduleView:
        return cls(
            name=row.name,
            pipeline=row.pipeline,
            target=row.target,
            kind=row.kind,
            spec=row.spec,
            tz=row.tz,
            description=sch.describe(row.kind, row.spec, row.tz),
            inputs=_serde.loads(row.inputs) or {},
            overlap=row.overlap,
            catch_up=row.catch_up,
            source=row.source,
            paused=bool(row.paused),
            next_fire_at=row.next_fire_at,
            last_tick_at=row.last_tick_at,
            last_run_id=row.last_run_id,
            last_status=row.last_status,
            skipped=row.skipped,
        )

    def to_json(self) -> dict[str, Any]:
        """The schedule as a dict of JSON values (as ``durapipe schedule list --json`` prints it)."""
        return asdict(self)


def _who() -> dict[str, Any]:
    return {"host": socket.gethostname(), "pid": os.getpid()}


class ScheduleMethods:
    """Mixed into :class:`~durapipe.Client`: its schedule methods."""

    store: Store

    async def add_schedule(
        self, name: str, pipeline: PipelineDef | str, schedule: Cron | Every
    ) -> ScheduleView:
        """Add a schedule that starts runs of ``pipeline`` (``durapipe schedule add``).

        ::

            await client.add_schedule("nightly", "jobs.py:backup", dp.Cron("0 3 * * *", tz="Europe/Berlin"))
            await client.add_schedule("sync", sync_accounts, dp.Every("15m", inputs={"full": False}))

        Workers carrying the pipeline fire it: each tick starts exactly one run, whose id is
        ``NAME:YYYYMMDDTHHMMSSZ`` (the tick in UTC). Its first tick is the first after now.

        Args:
            name: the schedule's name: 1-100 letters, digits, ``_ . -``.
            pipeline: a ``@dp.pipeline`` or a target ``FILE.py:NAME`` / ``module:NAME``.
            schedule: ``dp.Cron(...)`` or ``dp.Every(...)``, with its inputs and policies.

        Raises:
            ConfigError: a schedule of that name exists, the pipeline cannot be loaded, or
                the inputs do not fit it.
        """
        sch.check_name(name)
        if not isinstance(schedule, Cron | Every):
            raise InvalidInput(
                f"{schedule!r} is not a schedule: give dp.Cron(...) or dp.Every(...)"
            )
        pdef = _resolve(pipeline)
        inputs = _serde.dumps(pdef.bind_inputs(dict(schedule.inputs)), what="the inputs")
        row = sch.schedule_row(
            name=name,
            pipeline=pdef.name,
            target=pdef.entrypoint,
            schedule=schedule,
            inputs=inputs,
            source="api",
            now=time.time(),
        )
        if not await self.store.add_schedule(row):
            raise InvalidInput(
                f"a schedule named {name!r} exists; pick another name, or "
                f"`durapipe schedule delete {name}` first"
            )
        return await self.get_schedule(name)

    async def get_schedule(self, name: str) -> ScheduleView:
        """The schedule named ``name``.

        Raises:
            ConfigError: there is no such schedule.
        """
        row = await self.store.get_schedule(_known_name(name))
        if row is None:
            raise _no_such(name)
        return ScheduleView.of(row)

    async def list_schedules(self) -> builtins.list[ScheduleView]:
        """Every schedule, by name (``durapipe schedule list``)."""
        return [ScheduleView.of(r) for r in await self.store.list_schedules()]

    async def pause_schedule(self, name: str) -> None:
        """Fire nothing of this schedule until it is resumed (its runs go on).

        Raises:
            ConfigError: there is no such schedule.
        """
        if not await self.store.set_schedule_paused(_known_name(name), True, now=time.time()):
            raise _no_such(name)

    async def resume_schedule(self, name: str) -> None:
        """Fire the schedule again, from its first tick after now (ticks that passed while it
        was paused are not caught up).

        Raises:
            ConfigError: there is no such schedule.
        """
        if not await self.store.set_schedule_paused(_known_name(name), False, now=time.time()):
            raise _no_such(name)

    async def delete_schedule(self, name: str) -> None:
        """Delete the schedule (the runs it started stay). A code-declared schedule comes back
        when a worker next loads its module, unless the code no longer declares it.

        Raises:
            ConfigError: there is no such schedule.
        """
        if not await self.store.delete_schedule(_known_name(name)):
            raise _no_such(name)

    async def trigger_schedule(self, name: str) -> str:
        """Start one run of the schedule now, whatever its ticks, pause and overlap; -> its id.

        The run records the schedule and now as its scheduled time, and becomes the schedule's
        last run.

        Raises:
            ConfigError: there is no such schedule, or its pipeline cannot be loaded here.
        """
        row = await self.store.get_schedule(_known_name(name))
        if row is None:
            raise _no_such(name)
        try:
            pdef = load_target(row.target)
        except TargetNotFound as exc:
            raise TargetNotFound(
                f"schedule {name!r}: its pipeline cannot be loaded here ({exc})"
            ) from None
        run_id = f"{name}:{new_id('run')}"
        build = sch.run_builder(
            version=pdef.version,
            entrypoint=pdef.entrypoint,
            pinned=pdef.pin,
            by={**_who(), "trigger": True},
            now=time.time,
        )
        if not await self.store.trigger_schedule(name, run_id=run_id, now=time.time(), build=build):
            raise _no_such(name)
        return run_id


def _resolve(pipeline: PipelineDef | str) -> PipelineDef:
    if isinstance(pipeline, PipelineDef):
        return pipeline
    if isinstance(pipeline, str):
        if ":" not in pipeline and not pipeline.endswith(".py"):
            found = registered(pipeline)
            if found is not None:
                return found
        return load_target(pipeline)
    raise InvalidInput(f"{pipeline!r} is not a pipeline: give a @dp.pipeline or FILE.py:NAME")


def _known_name(name: str) -> str:
    if not isinstance(name, str) or not _serde.storable_text(name):
        raise _no_such(name)
    return name


def _no_such(name: object) -> InvalidInput:
    return InvalidInput(f"no schedule named {name!r}; `durapipe schedule list` shows them")
