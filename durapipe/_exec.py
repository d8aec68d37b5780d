"""Running a command as a process group, streaming its lines, killing it cleanly."""

from __future__ import annotations

import asyncio
import collections
import os
import shlex
import signal
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

KEEP_BYTES = 64 * 1024  # of each stream, kept in the history; the full output goes to the logs
KILL_GRACE = 5.0  # seconds between SIGTERM and SIGKILL


@dataclass(frozen=True, kw_only=True)
class ExecResult:
    """What a finished command left: its exit code and (the tail of) its output."""

    stdout: str
    stderr: str
    exit_code: int
    duration: float = 0.0

    @property
    def ok(self) -> bool:
        return self.exit_code == 0


def quote(argv: Sequence[str]) -> str:
    return " ".join(shlex.quote(a) for a in argv)


class _Tail:
    """Keep the last KEEP_BYTES characters of a stream."""

    def __init__(self) -> None:
        self.parts: collections.deque[str] = collections.deque()
        self.size = 0
        self.dropped = False

    def add(self, text: str) -> None:
        self.parts.append(text)
        self.size += len(text)
        while self.size > KEEP_BYTES and len(self.parts) > 1:
            self.size -= len(self.parts.popleft())
            self.dropped = True

    def value(self) -> str:
        joined = "".join(self.parts)
        if len(joined) > KEEP_BYTES:
            joined = joined[-KEEP_BYTES:]
            self.dropped = True
        return joined


class Process:
    """A started command; ``kill()`` ends its whole process group."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.pid = proc.pid
        self.killed_by: str | None = None
        self.started = time.monotonic()
        self.prefix = ""  # the console prefix of the step running it

    def _signal(self, sig: int) -> None:
        try:
            os.killpg(self.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    async def kill(self, why: str, grace: float = KILL_GRACE) -> None:
        if self.killed_by is None:
            self.killed_by = why
        if self.proc.returncode is not None:
            self._signal(signal.SIGKILL)  # stragglers of the group
            return
        self._signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(self.proc.wait(), grace)
        except TimeoutError:
            pass
        self._signal(signal.SIGKILL)

    def kill_now(self) -> None:
        self._signal(signal.SIGKILL)


async def start(
    argv: Sequence[str], *, shell: bool, cwd: str | None, env: dict[str, str] | None
) -> Process:
    full_env = None
    if env is not None:
        full_env = dict(os.environ)
        full_env.update({str(k): str(v) for k, v in env.items()})
    if shell:
        proc = await asyncio.create_subprocess_shell(
            argv[0],
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            cwd=cwd,
            env=full_env,
            start_new_session=True,
        )
    else:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            cwd=cwd,
            env=full_env,
            start_new_session=True,
        )
    return Process(proc)


async def _pump(
    stream: asyncio.StreamReader | None, name: str, tail: _Tail, on_line: Callable[[str, str], None]
) -> None:
    if stream is None:
        return
    pending = b""
    while True:
        chunk = await stream.read(65536)
        if not chunk:
            break
        pending += chunk
        *lines, pending = pending.split(b"\n")
        for raw in lines:
            line = raw.decode("utf-8", "replace")
            tail.add(line + "\n")
            on_line(name, line.rstrip("\r"))
    if pending:
        line = pending.decode("utf-8", "replace")
        tail.add(line)
        on_line(name, line.rstrip("\r"))


async def wait(
    p: Process, *, timeout: float | None, on_line: Callable[[str, str], None]
) -> tuple[ExecResult, bool]:
    """Stream the output until the process ends. -> (result, timed_out)."""
    t0 = time.monotonic()
    out, err = _Tail(), _Tail()
    pumps = asyncio.gather(
        _pump(p.proc.stdout, "out", out, on_line), _pump(p.proc.stderr, "err", err, on_line)
    )
    timed_out = False
    try:
        try:
            await asyncio.wait_for(asyncio.shield(pumps), timeout)
        except TimeoutError:
            timed_out = True
            await p.kill("timeout")
            await pumps
        code = await p.proc.wait()
    except BaseException:
        # Cancelled (stop --now, cancel, lost lease, shutdown): never leave the group behind.
        p.kill_now()
        pumps.cancel()
        raise
    p._signal(signal.SIGKILL) if p.killed_by else None
    return ExecResult(
        stdout=out.value(), stderr=err.value(), exit_code=code, duration=time.monotonic() - t0
    ), timed_out
