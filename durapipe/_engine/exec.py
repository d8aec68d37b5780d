"""``dp.exec``: a command run as a journaled step, in its own process group."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Mapping
from typing import Any

from .. import _exec, _serde
from .._kinds import KILLING, EventKind, Family, Request
from .._policy import check_timeout, make_policy
from .._secrets import Secret, reveal
from ..errors import ExecFailed, LeaseLost, RunStopping
from .context import HOST, current
from .journaled import Call, begin
from .retry import pending_retry, schedule_retry, wait_retry


def replay(call: Call, args: list[str]) -> _exec.ExecResult:
    """A finished command's recorded result, or its recorded failure raised again."""
    done = call.done
    data = _serde.loads(done.data) or {}
    res = data.get("result") or {}
    result = _exec.ExecResult(
        stdout=res.get("stdout", ""),
        stderr=res.get("stderr", ""),
        exit_code=res.get("exit_code", -1),
        duration=res.get("duration", 0.0),
    )
    if done.kind == EventKind.STEP_FAILED:
        raise call.failure(
            ExecFailed(
                call.label or "exec",
                args,
                res.get("exit_code"),
                res.get("stderr", ""),
                bool(data.get("timed_out")),
            )
        )
    return result


async def exec_(
    *argv: str | Secret,
    shell: bool = False,
    cwd: str | None = None,
    env: Mapping[str, str | Secret] | None = None,
    check: bool = True,
    timeout: float | None = None,
    retries: int | None = 0,
    retry_delay: float = 1.0,
    backoff: float = 2.0,
    max_delay: float = 60.0,
    jitter: bool = True,
) -> _exec.ExecResult:
    """Run a command as a journaled step and return what it left (``dp.exec``).

    ::

        out = await dp.exec("git", "rev-parse", "HEAD")      # argv: no shell, no quoting
        await dp.exec("make test | tee test.log", shell=True)

    The command runs in its own process group, its output lines stream to the console and the
    run's logs, and the result (exit code, the last 64 KiB of stdout and stderr) is recorded: on
    replay it is returned without running the command again. A run that died while the command
    ran starts it again on resume (at least once). A stop with ``--now``, a cancel or a timeout
    kills the whole process group (SIGTERM, then SIGKILL).

    Args:
        *argv: the program and its arguments; ``dp.Secret`` values reach the command unmasked
            but show as ``***`` everywhere else.
        shell: run one command string with ``/bin/sh -c`` instead.
        cwd: the working directory (default: the worker's).
        env: the environment (replaces the worker's when given); values may be ``dp.Secret``.
        check: raise ``dp.ExecFailed`` on a non-zero exit (False: return the result anyway).
        timeout: seconds before the command is killed and the try fails.
        retries: how many times a failed command (a non-zero exit with ``check``, or a timeout)
            is run again (0: never; None: until it succeeds). As with ``@dp.step``, every failed
            try is recorded with the instant the next is due, so a retry waits out the rest of
            its delay after a crash, and a long delay suspends the run.
        retry_delay: seconds before the first retry.
        backoff: each further delay is the previous one times this (1 or more).
        max_delay: the longest delay between two tries, in seconds.
        jitter: draw each delay between half and all of its value (drawn once, recorded).

    Returns:
        An :class:`ExecResult` (``exit_code``, ``stdout``, ``stderr``, ``duration``, ``ok``).

    Raises:
        ExecFailed: the command exited non-zero (with ``check``) or timed out, on its last try.
        ConfigError: a retry option or the timeout is out of range.
        NotInPipeline: called outside a running pipeline.
    """
    policy = make_policy(
        "dp.exec",
        retries=retries,
        retry_delay=retry_delay,
        backoff=backoff,
        max_delay=max_delay,
        jitter=jitter,
    )
    if timeout is not None:
        timeout = check_timeout("dp.exec", timeout)
    ctx, branch = current("exec")
    if not argv:
        raise ValueError("dp.exec needs a command: dp.exec('make', 'test')")
    if shell and len(argv) != 1:
        raise ValueError(
            "with shell=True pass one command string: dp.exec('ls | wc -l', shell=True)"
        )
    args = [str(a) for a in argv]  # what is shown and recorded: secrets as ***
    real_args = [reveal(a) for a in argv]
    real_env = {str(k): reveal(v) for k, v in env.items()} if env is not None else None
    call = begin(ctx, branch, Family.STEP, "exec", "exec")
    if call.done is not None:
        return replay(call, args)
    label = call.label
    assert label is not None
    shown = args[0] if shell else _exec.quote(args)
    tries = sum(1 for e in call.events if e.kind == EventKind.STEP_RETRY)
    retry_at = pending_retry(call)
    again = (
        " (again: the last attempt did not finish)"
        if retry_at is None and call.first(EventKind.STEP_STARTED) is not None
        else ""
    )
    while True:
        if retry_at is not None:
            await wait_retry(call, retry_at)
            again = f" (try {tries + 1})"
        tries += 1
        result, timed_out, failed = await _run_once(
            ctx, call, label, args, real_args, shell, cwd, real_env, check, timeout, shown + again
        )
        if not failed:
            break
        why = f"timed out after {timeout:g}s" if timed_out else f"exit {result['exit_code']}"
        err = {"type": "ExecFailed", "message": f"{shown}: {why}"}
        if not policy.may_retry(tries):
            break
        retry_at = await schedule_retry(
            call, policy, tries, err, result=result, timed_out=timed_out
        )
    kind = EventKind.STEP_FAILED if failed else EventKind.STEP_COMPLETED
    pid = result.pop("pid")
    await call.record(kind, {"result": result, "timed_out": timed_out, "pid": pid})
    if failed:
        raise call.failure(
            ExecFailed(
                label, args, None if timed_out else result["exit_code"], result["stderr"], timed_out
            )
        )
    # What the pipeline sees is what replay will see: secrets masked in both.
    clean = _serde.loads(_serde.dumps(result))
    return _exec.ExecResult(**clean)


async def _run_once(
    ctx: Any,
    call: Call,
    label: str,
    args: list[str],
    real_args: list[str],
    shell: bool,
    cwd: str | None,
    real_env: dict[str, str] | None,
    check: bool,
    timeout: float | None,
    shown: str,
) -> tuple[dict[str, Any], bool, bool]:
    """One try of the command: its start recorded first. -> (result, timed out, failed)."""
    call.emit("info", f"$ {shown}")
    # The start is durable before the command starts, so every run of it shows in the history
    # (a crash between the two leaves a start without a run, never a run without a start).
    # Its pid is known only after, and is recorded with the completion.
    await call.record(EventKind.STEP_STARTED, {"argv": args, "host": HOST})
    if ctx.obs is not None and (headers := ctx.obs.carrier(ctx, call.key)):
        # W3C trace context for the command (TRACEPARENT, TRACESTATE), under this call's span.
        base = real_env if real_env is not None else dict(os.environ)
        real_env = {**base, **{k.upper(): v for k, v in headers.items()}}
    t0 = time.monotonic()
    proc = await _exec.start(real_args, shell=shell, cwd=cwd, env=real_env)
    proc.prefix = f"{ctx.prefix}.{label}"
    ctx.procs.add(proc)
    if ctx.request in KILLING:  # it came while the start was written
        asyncio.ensure_future(proc.kill(ctx.request))
    try:
        result, timed_out = await _exec.wait(
            proc,
            timeout=timeout,
            on_line=call.emit,
            drain=ctx.journal.flush_logs,
        )
    except asyncio.CancelledError:  # cancel, lost lease, shutdown: the group is killed at once
        proc.kill_now()
        why = Request.CANCEL if ctx.cancel_delivered else (ctx.request or "")
        call.emit("warn", _killed_line(why, -signal.SIGKILL, t0))
        raise
    finally:
        ctx.procs.discard(proc)
    if proc.killed_by in KILLING:
        call.emit("warn", _killed_line(proc.killed_by, result.exit_code, t0))
        if proc.killed_by == Request.LOST:
            raise LeaseLost(ctx.run_id)
        raise RunStopping(proc.killed_by)
    elapsed = time.monotonic() - t0
    payload = {
        "stdout": result.stdout,
        "stderr": result.stderr,
        "exit_code": result.exit_code,
        "duration": round(elapsed, 3),
    }
    failed = timed_out or (check and result.exit_code != 0)
    why = f"timed out after {timeout:g}s" if timed_out else f"exit {result.exit_code}"
    call.emit("error" if failed else "info", f"{why} in {fmt_duration(elapsed)}")
    return {**payload, "pid": proc.pid}, timed_out, failed


_KILL_REASONS: dict[str, str] = {
    Request.STOP_NOW: "the run is stopping; the command runs again on resume",
    Request.LOST: "this process lost the run's lease",
    Request.SHUTDOWN_NOW: "the worker is shutting down; the command runs again when the run continues",
    Request.CANCEL: "the run was cancelled",
}


def _killed_line(why: str, exit_code: int, t0: float) -> str:
    """The log line of a command durapipe ended: ``killed (SIGTERM) after 3.2s: the run is stopping…``."""
    if exit_code < 0:
        try:
            how = f"killed ({signal.Signals(-exit_code).name})"
        except ValueError:
            how = f"killed (signal {-exit_code})"
    else:  # it handled SIGTERM and exited by itself
        how = f"stopped by SIGTERM (exit {exit_code})"
    return f"{how} after {fmt_duration(time.monotonic() - t0)}: {_KILL_REASONS.get(why) or why or 'the run was interrupted'}"


def fmt_duration(seconds: float) -> str:
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 60:
        return f"{seconds:.1f}s"
    m, s = divmod(int(seconds), 60)
    if m < 60:
        return f"{m}m{s:02d}s"
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m"
