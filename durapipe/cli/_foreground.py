"""Running a run tree here, in the terminal: live output, answers typed at a prompt, Ctrl-C."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from typing import Any

from .. import _serde
from .._client import AdminClient
from .._console import LiveConsole, running_status, visible
from .._engine import last_handled_failure
from .._kinds import ACTIVE, RunStatus
from .._local import drive_tree, local_runner
from ..errors import DurapipeError
from ._app import _err, _out, _settle_heap


class _Foreground:
    """A runner for one run tree in this process, with Ctrl-C turned into a clean stop."""

    def __init__(self, client: AdminClient, pipelines: list[Any], timestamps: bool) -> None:
        self.client = client
        self.console = LiveConsole(timestamps=timestamps)
        self.runner = local_runner(
            client.store,
            pipelines,
            on_record=self.console.record,
            on_input=self._on_input if sys.stdin.isatty() else None,
            on_tick=self.console.flush,
        )
        self.interrupted = False
        self.asking: list[tuple[str, str]] = []
        self.reading = False
        self._sending: set[asyncio.Future[Any]] = set()

    async def start(self) -> None:
        await self.runner.start()
        _settle_heap()

    def _on_input(self, run_id: str, name: str, prompt: str | None, waiting: bool) -> None:
        """A person at the terminal can answer an input the run waits for."""
        key = (run_id, name)
        if waiting:
            self.asking.append(key)
            if len(self.asking) == 1:
                self._prompt()
        elif key in self.asking:  # answered some other way (`durapipe input`)
            shown = self.asking[0] == key
            self.asking.remove(key)
            if shown:
                self.console.answered(typed=False)
            if not self.asking:
                self._stop_reading()
            elif shown:
                self._prompt()

    def _prompt(self) -> None:
        _run_id, name = self.asking[0]
        # Through the console, which keeps it on screen while the status line and log lines change.
        self.console.prompt(f"answer for '{name}' (JSON or text) > ")
        if not self.reading:
            asyncio.get_running_loop().add_reader(sys.stdin.fileno(), self._on_stdin)
            self.reading = True

    def _stop_reading(self) -> None:
        if self.reading:
            asyncio.get_running_loop().remove_reader(sys.stdin.fileno())
            self.reading = False

    def _on_stdin(self) -> None:
        line = sys.stdin.readline()
        if not line:
            self._stop_reading()
            return
        if not self.asking:
            return
        self.console.answered(typed=True)
        run_id, name = self.asking[0]
        try:
            value = _serde.parse_cli_value(line.rstrip("\n"))
            _serde.dumps(value, what=f"input {name!r}")
        except DurapipeError as exc:
            _err(f"error: {exc}")
            self._prompt()
            return
        self.asking.pop(0)
        if self.asking:
            self._prompt()
        else:
            self._stop_reading()
        task = asyncio.ensure_future(self._deliver(run_id, name, value))
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    async def _deliver(self, run_id: str, name: str, value: Any) -> None:
        await self.client.send_input(run_id, name, value)
        self.runner.nudge(run_id)

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(1)
            procs = self.runner.running_commands()
            self.console.status(running_status(procs, now=time.monotonic()))

    def _on_sigint(self) -> None:
        if self.interrupted:
            os._exit(130)
        self.interrupted = True
        _err("Stopping (Ctrl-C again to exit at once; the run stays resumable)...")
        self.runner.interrupt_all("stop_now")

    async def drive(self, row: Any, *, resumed: str | None = None, cancel: bool = False) -> str:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGINT, self._on_sigint)
        loop.add_signal_handler(signal.SIGTERM, self._on_sigint)
        ticker = asyncio.ensure_future(self._tick()) if self.console.tty else None
        try:
            return await drive_tree(self.runner, row, resumed=resumed, cancel=cancel)
        finally:
            if ticker is not None:
                ticker.cancel()
            self.console.close()
            self._stop_reading()
            loop.remove_signal_handler(signal.SIGINT)
            loop.remove_signal_handler(signal.SIGTERM)
            await self.runner.close()

    async def report(self, client: AdminClient, run_id: str, status: str) -> int:
        run_id = (await client.live_row(run_id)).id  # a chain (continue-as-new): its last link
        view = await client.get(run_id)
        if view.status == RunStatus.COMPLETED:
            _out(json.dumps(view.output, ensure_ascii=False))
            return 0
        if view.status == RunStatus.STOPPED:
            _err(f"run {run_id} stopped")  # the run's log printed how to continue it
            return 130 if self.interrupted else 1
        if view.status in ACTIVE:
            # Not finished here (a failed write dropped it, or its pipeline was held): the log
            # above says why. It is not lost: a worker or a resume continues it.
            _err(
                f"run {run_id} is {view.status}: it was not finished here; "
                f"`durapipe resume {run_id}` continues it, or a worker does (`durapipe show {run_id}`)"
            )
            return 1
        err = view.error or {}
        handled = (
            last_handled_failure(await client.history(run_id))
            if view.status == RunStatus.FAILED and err.get("step")
            else None
        )
        hints: dict[str, str] = {
            RunStatus.FAILED: f"fix the cause, then `durapipe resume {run_id}` retries the failed step"
            if handled is None
            else f"the pipeline handled the failure of step {handled[0].label or handled[0].step}"
            " and went on, so `durapipe resume` would not retry it; start a new run",
            RunStatus.BLOCKED: f"restore code that makes the recorded calls, then `durapipe resume {run_id}`",
            RunStatus.TIMED_OUT: "a timed-out run cannot be resumed; start a new run (with a longer --timeout)",
        }
        hint = hints.get(view.status, f"`durapipe show {run_id}` has the details")
        _err(
            f"run {run_id} {view.status}: {err.get('type', 'Error')}: {visible(str(err.get('message', '')))} — {hint}"
        )
        return 1
