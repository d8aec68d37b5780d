"""``dp.Queue``: a named line of runs with limits the claim enforces (``durapipe/_store/queues.py``).

A queue is declared in code (registered when its module is imported: a worker or the CLI
loading it writes it to the database) or with ``durapipe queue set``. The limits live in the
database, so every worker on every machine enforces the same ones.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, overload

from typing_extensions import ParamSpec, TypeVar

from ._kinds import EventKind, RunStatus
from ._records import unleased_event
from ._store.queues import QueueLimits
from .errors import ConfigError, InvalidInput

if TYPE_CHECKING:
    from ._definition import PipelineDef
    from ._store import Store

P = ParamSpec("P")
R = TypeVar("R")

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)?\s*(ms|s|m|h|d)\s*$")
_declared: dict[str, Queue] = {}


def parse_window(window: str | float) -> float:
    """A rate window: seconds, or ``"30s"``, ``"1m"``, ``"1h"``, ``"d"`` (one of the unit)."""
    if isinstance(window, bool):
        raise ConfigError(f"a rate window is seconds or a duration like '1m', not {window!r}")
    if isinstance(window, int | float):
        secs = float(window)
    elif isinstance(window, str) and (m := _DURATION.match(window)):
        secs = float(m.group(1) or 1) * _UNITS[m.group(2)]
    else:
        raise ConfigError(
            f"a rate window is seconds or a duration like '30s', '1m', '1h', not {window!r}"
        )
    if not math.isfinite(secs) or secs <= 0:
        raise ConfigError(f"a rate window must be longer than 0 seconds, not {window!r}")
    return secs


def parse_rate(text: str) -> tuple[int, float]:
    """``"N/DUR"`` as the command line takes it (``10/1m``, ``5/s``) -> (N, seconds)."""
    count, sep, window = text.partition("/")
    if not sep or not count.strip().isdigit():
        raise ConfigError(
            f"a rate is N/DURATION, e.g. 10/1m or 5/s (N starts per window), not {text!r}"
        )
    n = int(count)
    if n <= 0:
        raise ConfigError(f"a rate allows at least 1 start per window, not {text!r}")
    return n, parse_window(window)


def _positive(name: str, value: int | None) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"a queue's {name} is a whole number, not {value!r}")
    if value <= 0:
        raise ConfigError(
            f"a queue's {name} must be at least 1, not {value} (leave it out for no limit)"
        )
    return value


def limits_of(
    name: str,
    concurrency: int | None,
    key_concurrency: int | None,
    rate: tuple[int, str | float] | None,
    priority: bool,
) -> QueueLimits:
    """A queue's settings, checked (ConfigError, saying what is wrong)."""
    check_name(name)
    window: float | None = None
    count: int | None = None
    if rate is not None:
        if not isinstance(rate, tuple) or len(rate) != 2:
            raise ConfigError(f"a queue's rate is (N, window), e.g. (10, '1m'), not {rate!r}")
        count = _positive("rate", rate[0])
        window = parse_window(rate[1])
    if not isinstance(priority, bool):
        raise ConfigError(f"a queue's priority is True or False, not {priority!r}")
    return QueueLimits(
        name=name,
        concurrency=_positive("concurrency", concurrency),
        key_concurrency=_positive("key_concurrency", key_concurrency),
        rate_limit=count,
        rate_window=window,
        priority=priority,
    )


def check_name(name: object) -> str:
    if not isinstance(name, str) or not name.strip() or len(name) > 200 or "\x00" in name:
        raise ConfigError(f"a queue's name is 1-200 characters of text, not {name!r}")
    return name


@dataclass(frozen=True, init=False)
class Queue:
    """A named queue of runs, with limits every worker enforces together.

    ::

        deploys = dp.Queue("deploys", concurrency=1, rate=(10, "1m"), priority=True)

        await client.start(deploy, queue=deploys, key="prod", priority=5, env="prod")
        await deploys.run_subpipeline(deploy, env="prod")             # a child run, queued

    A run started on a queue waits (``queued``) until a worker's claim takes it off; the claim
    counts in the database, under a lock on the queue, so the limits hold across every worker
    and machine. A run taken off the queue holds its slot until it ends, stops or blocks —
    also while it sleeps or waits for an input. Declaring the queue in a module registers it
    when the module is imported; a worker loading that module writes it to the database.

    Args:
        name: the queue's name.
        concurrency: at most this many of its runs at once (taken off the queue and not yet
            ended); None: no limit.
        key_concurrency: at most this many at once per key (runs started with ``key=``);
            default 1 (one deploy per environment); None: no limit per key.
        rate: ``(N, window)``: at most N runs taken off the queue in any window (seconds, or
            ``"30s"``, ``"1m"``, ``"1h"``); None: no limit.
        priority: runs may be started with a priority (higher first; FIFO within one).

    Raises:
        ConfigError: a limit below 1, a malformed rate, or the name declared before with
            other settings.
    """

    name: str
    concurrency: int | None
    key_concurrency: int | None
    rate: tuple[int, float] | None
    priority: bool

    def __init__(
        self,
        name: str,
        *,
        concurrency: int | None = None,
        key_concurrency: int | None = 1,
        rate: tuple[int, str | float] | None = None,
        priority: bool = False,
    ) -> None:
        lim = limits_of(name, concurrency, key_concurrency, rate, priority)
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "concurrency", lim.concurrency)
        object.__setattr__(self, "key_concurrency", lim.key_concurrency)
        rated = None
        if lim.rate_limit is not None and lim.rate_window is not None:
            rated = (lim.rate_limit, lim.rate_window)
        object.__setattr__(self, "rate", rated)
        object.__setattr__(self, "priority", lim.priority)
        before = _declared.get(name)
        if before is not None and before != self:
            raise ConfigError(
                f"queue {name!r} is declared twice with different settings; declare it once"
            )
        _declared[name] = self

    @property
    def limits(self) -> QueueLimits:
        """The settings as the database stores them."""
        return QueueLimits(
            name=self.name,
            concurrency=self.concurrency,
            key_concurrency=self.key_concurrency,
            rate_limit=self.rate[0] if self.rate else None,
            rate_window=self.rate[1] if self.rate else None,
            priority=self.priority,
        )

    def with_options(self, *, key: str | None = None, priority: int | None = None) -> Enqueue:
        """This queue with a key and/or priority for the children started through it::

        await deploys.with_options(key="prod").run_subpipeline(deploy, env="prod")
        """
        return Enqueue(queue=self, key=key, priority=priority)

    @overload
    async def run_subpipeline(
        self, pipeline: PipelineDef[P, R], /, *args: P.args, **inputs: P.kwargs
    ) -> R: ...
    @overload
    async def run_subpipeline(self, pipeline: str, /, *args: Any, **inputs: Any) -> Any: ...

    async def run_subpipeline(self, pipeline: Any, /, *args: Any, **inputs: Any) -> Any:
        """``dp.run_subpipeline`` with the child waiting in this queue for a slot."""
        return await Enqueue(queue=self).run_subpipeline(pipeline, *args, **inputs)


@dataclass(frozen=True, kw_only=True)
class Enqueue:
    """Where a child run waits: a queue, with a key and a priority (``Queue.with_options``)."""

    queue: Queue
    key: str | None = None
    priority: int | None = None

    @overload
    async def run_subpipeline(
        self, pipeline: PipelineDef[P, R], /, *args: P.args, **inputs: P.kwargs
    ) -> R: ...
    @overload
    async def run_subpipeline(self, pipeline: str, /, *args: Any, **inputs: Any) -> Any: ...

    async def run_subpipeline(self, pipeline: Any, /, *args: Any, **inputs: Any) -> Any:
        """``dp.run_subpipeline`` with the child waiting in the queue for a slot."""
        from ._engine.child import start_and_wait

        place = placement(self.queue.limits, key=self.key, priority=self.priority)
        return await start_and_wait(pipeline, args, inputs, place)


@dataclass(frozen=True, kw_only=True)
class QueueView:
    """A queue as ``Client.queues`` and ``durapipe queues`` see it.

    Attributes:
        name: the queue's name.
        concurrency: its limit of runs at once, or None.
        key_concurrency: its limit of runs at once per key, or None.
        rate: ``(N, window seconds)``, or None.
        priority: whether runs carry priorities.
        depth: runs waiting in it.
        running: runs taken off it holding a slot (running, sleeping, waiting, or released
            for another worker).
        oldest_waiting_at: when the oldest waiting run was started (seconds since the epoch).
        taken_in_window: with a rate: runs taken off it in the current window.
    """

    name: str
    concurrency: int | None
    key_concurrency: int | None
    rate: tuple[int, float] | None
    priority: bool
    depth: int
    running: int
    oldest_waiting_at: float | None
    taken_in_window: int | None

    @classmethod
    def of(cls, lim: QueueLimits, stats: dict[str, Any]) -> QueueView:
        rate = None
        if lim.rate_limit is not None and lim.rate_window is not None:
            rate = (lim.rate_limit, lim.rate_window)
        return cls(
            name=lim.name,
            concurrency=lim.concurrency,
            key_concurrency=lim.key_concurrency,
            rate=rate,
            priority=lim.priority,
            **stats,
        )


def declared(name: str) -> Queue | None:
    """The queue of this name declared in this process (by importing its module), if any."""
    return _declared.get(name)


def all_declared() -> list[Queue]:
    return list(_declared.values())


def placement(limits: QueueLimits, *, key: str | None, priority: int | None) -> dict[str, Any]:
    """The columns of a run started on a queue, checked against the queue's settings."""
    if key is not None and (not isinstance(key, str) or not key or len(key) > 200 or "\x00" in key):
        raise InvalidInput(f"a queue key is 1-200 characters of text, not {key!r}")
    if priority is not None:
        if isinstance(priority, bool) or not isinstance(priority, int):
            raise InvalidInput(f"a priority is a whole number, not {priority!r}")
        if not limits.priority:
            raise InvalidInput(
                f"queue {limits.name!r} does not order runs by priority; declare it with "
                f"priority=True (or `durapipe queue set {limits.name} --priority`)"
            )
        if abs(priority) > 2**31 - 1:
            raise InvalidInput(f"a priority is between -2147483647 and 2147483647, not {priority}")
    return {
        "queue": limits.name,
        "queue_key": key,
        "priority": priority or 0,
        "status": "queued",
    }


async def cancel_queued(store: Store, row: Any, *, now: float) -> bool:
    """Cancel a run still waiting in its queue (it never ran). -> False: it left the line."""
    return await store.finish_unleased(
        row.id,
        status=RunStatus.CANCELLED,
        event=unleased_event(EventKind.RUN_CANCELLED, row.attempt),
        now=now,
        expect=(RunStatus.QUEUED,),
    )
