"""``dp.patched``: which side of a code change a run is on. It takes no step key."""

from __future__ import annotations

from .._kinds import EventKind
from .context import current


async def patched(patch_id: str) -> bool:
    """True when this run reaches here on code that has the change ``patch_id``.

    A run that recorded its history before the change was deployed replays with ``False``
    (take the old path); a run passing this point live records a marker and gets ``True``.
    It takes no step key, so adding it never makes old histories nondeterministic::

        if await dp.patched("notify-v2"):
            await notify_v2()
        else:
            await notify_v1()
    """
    ctx, _branch = current("patched")
    if patch_id in ctx.patches:
        return ctx.patches[patch_id]
    if not ctx._at_frontier():
        # Replaying history recorded before this code existed. The answer holds for the rest
        # of the run, so the old path is taken everywhere, also past the end of the history.
        ctx.patches[patch_id] = False
        return False
    ctx.patches[patch_id] = True
    if ctx.dry:
        return True
    await ctx.write(ctx.event(EventKind.PATCH_MARKER, name=patch_id))
    return True
