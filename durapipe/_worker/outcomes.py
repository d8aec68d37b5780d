"""Child outcomes asked for together: one read answers every run waiting for a child.

A parent that gathers N children has N waits, and each looks again whenever the run is nudged
(a child ended, another process committed). Asked one by one, that was N reads of the
database per nudge: with 10,000 children, the parent's worker spent its time reading the same
rows over and over. Here the questions asked in the same moment (the waits a nudge wakes run
one after the other on the loop) are collected and answered by one read of all their rows.
"""

from __future__ import annotations

import asyncio
from typing import Any

from .._kinds import TERMINAL
from .._store import Store


class ChildOutcomes:
    """``await get(child_id)``: the child's row if it has ended (its chain's live link), else
    None. Calls made while a read is pending join the next one."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._asked: dict[str, list[asyncio.Future[Any]]] = {}
        self._flush: asyncio.Task[None] | None = None

    async def get(self, child_id: str) -> Any | None:
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._asked.setdefault(child_id, []).append(fut)
        if self._flush is None:
            self._flush = asyncio.ensure_future(self._read())
        return await fut

    async def _read(self) -> None:
        try:
            # Let the other waits the same nudge woke ask too (each takes a few loop turns).
            for _ in range(3):
                await asyncio.sleep(0)
        finally:
            asked, self._asked = self._asked, {}
            self._flush = None
        try:
            rows = await self.store.live_links(list(asked))
        except BaseException as exc:  # each waiter handles it (looks again at its next poll)
            for futs in asked.values():
                for f in futs:
                    if f.done():
                        continue
                    if isinstance(exc, Exception):
                        f.set_exception(exc)
                    else:
                        f.cancel()
            if not isinstance(exc, Exception):
                raise
            return
        for cid, futs in asked.items():
            row = rows.get(cid)
            value = row if row is not None and row.status in TERMINAL else None
            for f in futs:
                if not f.done():
                    f.set_result(value)
