"""``dp.gather``: journaled calls run concurrently, each branch in its own step-key namespace."""

from __future__ import annotations

import asyncio
import contextvars
import inspect
from collections.abc import Awaitable
from typing import Any

from ..errors import RunInterrupted
from .context import _BRANCH, Branch, current


async def gather(
    *aws: Awaitable[Any], return_exceptions: bool = False, limit: int | None = None
) -> list[Any]:
    """Run journaled calls concurrently, each in its own deterministic step-key namespace.

    ::

        a, b = await dp.gather(dp.exec("make", "test-a"), dp.exec("make", "test-b"))

    Use it instead of ``asyncio.gather``: each branch gets its own place in the history, so
    replay matches calls to branches whatever order they finished in.

    Args:
        *aws: coroutines: calls like ``my_step(x)``, ``dp.exec(...)``, ``dp.run_subpipeline(...)``.
        return_exceptions: return exceptions in the result list instead of raising the first.
        limit: at most this many branches run at once.

    Returns:
        The results in the order of ``aws``.

    Raises:
        TypeError: an argument is a task or future, not a coroutine.
        NotInPipeline: called outside a running pipeline.
    """
    try:
        ctx, branch = current("gather")
        if limit is not None and limit < 1:
            raise ValueError("dp.gather(limit=...) must be 1 or more")
        for aw in aws:
            if not asyncio.iscoroutine(aw):
                raise TypeError(
                    "dp.gather takes coroutines (calls like my_step(x) or dp.exec(...)), not tasks or futures"
                )
    except BaseException:
        for aw in aws:  # refused: they will never run, so no "never awaited" warnings
            if asyncio.iscoroutine(aw):
                aw.close()
        raise
    # It records nothing itself, but takes a key: its branches' keys are under it.
    key = branch.next_key()
    ctx.check(key)
    sem = asyncio.Semaphore(limit) if limit else None
    loop = asyncio.get_running_loop()

    async def run_branch(aw: Awaitable[Any]) -> Any:
        if sem is None:
            return await aw
        async with sem:
            return await aw

    tasks: list[asyncio.Task[Any]] = []
    ctx.gathers += 1
    try:
        for i, aw in enumerate(aws):
            b = Branch(f"{key}/{i}", None)
            cv = contextvars.copy_context()
            cv.run(_BRANCH.set, b)
            t = loop.create_task(run_branch(aw), context=cv)
            b.task = t
            tasks.append(t)
        if return_exceptions:
            results = list(await asyncio.gather(*tasks, return_exceptions=True))
            for r in results:  # control flow (stop, suspend, lost lease) is never a result
                if isinstance(r, RunInterrupted):
                    raise r
            return results
        try:
            return list(await asyncio.gather(*tasks))
        except BaseException:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise
    finally:
        ctx.gathers -= 1
        for aw in aws:  # a branch cancelled before it began never awaits its call: close it
            if inspect.getcoroutinestate(aw) == inspect.CORO_CREATED:  # type: ignore[arg-type]
                aw.close()  # type: ignore[attr-defined]
