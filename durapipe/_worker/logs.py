"""Log shipping: the runs' log lines, buffered and written to the database (and a log file)."""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import Callable
from typing import Any

from .._engine import LogRecord
from .._store import Store

log = logging.getLogger("durapipe.worker")

LOG_BACKLOG_BYTES = 16 * 1024 * 1024


def _open_private(path: str) -> Any:
    """Open ``path`` to append, created readable by its owner only (0600, like the SQLite
    database): the log holds every line the runs print."""
    return open(  # noqa: SIM115 - closed in LogShipper.close
        path, "a", encoding="utf-8", opener=lambda p, flags: os.open(p, flags, 0o600)
    )


class LogShipper:
    """Buffers the runs' log records; the journal takes them with its history writes, and
    :meth:`loop` writes what is left every 0.2 s (kept for retry while the database is away)."""

    def __init__(
        self,
        store: Store,
        *,
        log_file: str | None,
        on_record: Callable[[LogRecord], None] | None,
        on_tick: Callable[[], None] | None,
    ) -> None:
        self.store = store
        self.on_record = on_record
        self.on_tick = on_tick
        self._buf: list[dict[str, Any]] = []
        self._file = _open_private(log_file) if log_file else None

    def emit(self, rec: LogRecord) -> None:
        self._buf.append(
            {
                "run_id": rec.run_id,
                "root_run_id": rec.root_run_id,
                "step": rec.step,
                "prefix": rec.prefix,
                "stream": rec.stream,
                "at": rec.at,
                "line": rec.line,
                "attempt": rec.attempt,
            }
        )
        if self._file:  # JSON lines: one object per line, as `durapipe logs --json`
            row = self._buf[-1]
            self._file.write(
                "".join(
                    json.dumps({**row, "line": line}, ensure_ascii=False) + "\n"
                    for line in rec.line.split("\n")
                )
            )
        if self.on_record is not None:
            self.on_record(rec)

    async def loop(self) -> None:
        while True:
            await asyncio.sleep(0.2)
            if self.on_tick is not None:
                self.on_tick()
            await self.flush()

    def take(self) -> list[dict[str, Any]]:
        rows, self._buf = self._buf, []
        return rows

    def requeue(self, rows: list[dict[str, Any]]) -> None:
        self._buf[:0] = _newest(rows)

    async def flush(self) -> None:
        if not self._buf:
            return
        rows, self._buf = self._buf, []
        try:
            await self.store.write_logs(rows)
        except Exception as exc:
            log.warning("could not store %d log lines: %s", len(rows), exc)
            self._buf[:0] = _newest(rows)
        if self._file:
            self._file.flush()

    def close(self) -> None:
        if self._file:
            self._file.close()


def _newest(rows: list[dict[str, Any]], budget: int = LOG_BACKLOG_BYTES) -> list[dict[str, Any]]:
    """The newest log rows worth ``budget`` bytes: what is kept for retry while the database is
    away (a row can hold many lines of exec output, so the cap is on size, not on rows)."""
    total = 0
    for i in range(len(rows) - 1, -1, -1):
        total += len(rows[i]["line"]) + 64
        if total > budget:
            return rows[i + 1 :]
    return rows
