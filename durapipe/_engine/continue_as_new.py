"""``dp.continue_as_new``: end this run and start its successor, with a fresh history.

The successor is a new run of the same pipeline with new inputs; it is created in the same
transaction that ends this run (status ``continued``, a ``run_continued`` event naming the
successor), so a crash leaves either neither or both. The runs of a chain share a ``chain_id``
(the first run's id): ``Client.result``, ``stop`` and ``cancel`` given any id of the chain act on
its live link. The write is done by the execution's settle (``durapipe._execution``), where
every ending of a run is written.
"""

from __future__ import annotations

from typing import Any, NoReturn

from .._definition import registered
from ..errors import ConfigError, InvalidInput, RunInterrupted
from .context import current
from .journaled import begin


class ContinueAsNew(RunInterrupted):
    """Unwinds the pipeline after ``dp.continue_as_new``: the run ends ``continued``."""

    def __init__(self, inputs: dict[str, Any], key: str) -> None:
        super().__init__("durapipe: continue as new")
        self.inputs = inputs
        self.key = key


async def continue_as_new(**inputs: Any) -> NoReturn:
    """End this run and start its successor with these inputs and a fresh history.

    ::

        @dp.pipeline()
        async def poller(checked: int = 0) -> None:
            for _ in range(24):
                await check_once()
                await dp.sleep(3600)
            await dp.continue_as_new(checked=checked + 24)   # never returns

    The call never returns: it unwinds the pipeline (its ``finally`` blocks run, and journaled
    calls there do nothing), and this run ends with status ``continued``; in the same
    transaction a new run of the same pipeline (on the code deployed now) starts with these
    inputs, this run's tags and its place in a run tree. ``durapipe show`` links the two,
    ``durapipe list`` shows the live link of a chain, and ``durapipe result --wait``,
    ``Client.result``, ``stop`` and ``cancel`` follow the chain from any of its ids. Use it to
    keep the history of a run that loops forever bounded.

    Args:
        **inputs: the successor's inputs, checked against the pipeline's parameters.

    Raises:
        InvalidInput: inputs the pipeline does not accept (nothing is started, this run goes on).
        NotInPipeline: called outside a running pipeline.
    """
    ctx, branch = current("continue_as_new")
    pdef = registered(ctx.pipeline)
    if pdef is None:
        raise ConfigError(
            f"dp.continue_as_new: pipeline {ctx.pipeline!r} is not loaded in this process"
        )
    try:
        inputs = pdef.bind_inputs(inputs)
    except InvalidInput as exc:
        raise InvalidInput(f"dp.continue_as_new: {exc}") from None
    call = begin(ctx, branch, "run", "continue_as_new", None)
    stop = ContinueAsNew(inputs, call.key)
    ctx.continued = stop
    raise stop
