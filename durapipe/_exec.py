"""Running a command as a process group, streaming its lines, killing it cleanly."""

from __future__ import annotations

import asyncio
import collections
import os
import shlex
import signal
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from ._secrets import StreamMask

KEEP_BYTES = 64 * 1024  # of each stream, kept in the history; the full output goes to the logs
KILL_GRACE = 5.0  # seconds between SIGTERM and SIGKILL
READ_SIZE = 256 * 1024  # bytes asked of a pipe at a time
MAX_LINE = 256 * 1024  # a line longer than this (no newline yet) is handed on in pieces
DRAIN_BYTES = 2 * 1024 * 1024  # output handed on between two drain() calls (stored log lines)


@dataclass(frozen=True, kw_only=True)
class ExecResult:
    """What a finished command left: its exit code and (the tail of) its output.

    Attributes:
        stdout: its standard output (the last 64 KiB; the whole output is in the run's logs).
        stderr: its standard error (the last 64 KiB).
        exit_code: its exit code.
        duration: how long it ran, in seconds.
    """

    stdout: str
    stderr: str
    exit_code: int
    duration: float = 0.0

    @property
    def ok(self) -> bool:
        """True when the command exited with code 0."""
        return self.exit_code == 0


def quote(argv: Sequence[str]) -> str:
    return " ".join(shlex.quote(a) for a in argv)


class _Tail:
    """Keep the last KEEP_BYTES characters of a stream (added a chunk of lines at a time)."""

    def __init__(self) -> None:
        self.parts: collections.deque[str] = collections.deque()
        self.size = 0
        self.dropped = False

    def add(self, text: str) -> None:
        if len(text) >= KEEP_BYTES:  # this chunk alone fills the tail
            self.dropped = self.dropped or self.size > 0 or len(text) > KEEP_BYTES
            self.parts.clear()
            self.size = 0
            text = text[-KEEP_BYTES:]
        self.parts.append(text)
        self.size += len(text)
        while self.size - len(self.parts[0]) >= KEEP_BYTES:
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


def _lines(text: str) -> str:
    """Complete lines as shown and stored: a trailing carriage return dropped from each."""
    if "\r" not in text:
        return text
    return "\n".join(line.rstrip("\r") for line in text.split("\n"))


def _cut(data: bytes) -> int:
    """Where to break a line too long to hold: not inside a UTF-8 sequence."""
    end = len(data)
    for i in range(end - 1, max(end - 4, 0) - 1, -1):
        lead = data[i]
        if lead & 0xC0 != 0x80:  # the first byte of the last character
            need = 4 if lead >= 0xF0 else 3 if lead >= 0xE0 else 2 if lead >= 0xC0 else 1
            return end if i + need <= end or i == 0 else i
    return end


async def _pump(
    stream: asyncio.StreamReader | None,
    name: str,
    tail: _Tail,
    on_line: Callable[[str, str], None],
    drain: Callable[[], Awaitable[None]] | None = None,
) -> None:
    """Read the stream in large chunks and hand on every complete line of a chunk in one call.

    ``on_line(name, text)`` gets one or more lines joined by ``\n`` (no trailing newline); so
    100,000 lines cost a few dozen calls, not 100,000. What is held at once is bounded: one read,
    plus an unfinished line of at most MAX_LINE bytes (a longer one is handed on in pieces), and
    what was handed on since the last ``drain()`` (awaited every DRAIN_BYTES: the lines handed on
    are stored meanwhile, and the command waits on its pipe, as it would writing to a slow disk).

    Secrets are masked here, before the text reaches the logs or the tail kept in the history,
    across piece boundaries (``StreamMask``), so neither a split nor the tail's cut leaves a piece.
    """
    if stream is None:
        return
    mask = StreamMask()

    def hand_on(text: str) -> None:
        """``text``: the stream's next text; ending in a newline when it is whole lines."""
        if text:
            tail.add(text)
            on_line(name, _lines(text[:-1] if text.endswith("\n") else text))

    pending = b""
    since_drain = 0
    while True:
        if drain is not None and since_drain >= DRAIN_BYTES:
            since_drain = 0
            await drain()
        chunk = await stream.read(READ_SIZE)
        if not chunk:
            break
        since_drain += len(chunk)
        if pending:
            chunk = pending + chunk
        end = chunk.rfind(b"\n")
        if end < 0:
            pending = chunk
        else:
            pending = chunk[end + 1 :]
            hand_on(mask.feed(chunk[: end + 1].decode("utf-8", "replace")))
        while len(pending) > MAX_LINE:
            cut = _cut(pending[:MAX_LINE])
            text = pending[:cut].decode("utf-8", "replace")
            pending = pending[cut:]
            hand_on(mask.feed(text))
    if pending:
        hand_on(mask.feed(pending.decode("utf-8", "replace")))
    hand_on(mask.end())


async def wait(
    p: Process,
    *,
    timeout: float | None,
    on_line: Callable[[str, str], None],
    drain: Callable[[], Awaitable[None]] | None = None,
) -> tuple[ExecResult, bool]:
    """Stream the output until the process ends. -> (result, timed_out).

    ``on_line(stream, text)``: ``text`` is one or more lines joined by ``\n`` (see _pump).
    ``drain()``, if given, is awaited every few MiB of output so what was handed on is stored
    before more is read: memory stays bounded whatever the command prints.
    """
    t0 = time.monotonic()
    out, err = _Tail(), _Tail()
    pumps = asyncio.gather(
        _pump(p.proc.stdout, "out", out, on_line, drain),
        _pump(p.proc.stderr, "err", err, on_line, drain),
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
