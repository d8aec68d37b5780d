"""The exceptions durapipe raises.

::

    DurapipeError
    ├── ConfigError              bad URL, target, input, or an unmigrated database
    │   ├── TargetNotFound
    │   └── InvalidInput
    ├── DatabaseUnavailable      the database could not be reached
    ├── RunNotFound
    ├── InvalidRunState          e.g. resume of a completed run
    ├── NotInPipeline            dp.exec & co. called outside a running pipeline
    ├── NonDeterminismError      code no longer matches the recorded history
    ├── SerializationError       a result or input that is not JSON
    ├── StepFailed               a step failed after its retries
    │   ├── ExecFailed           a command exited non-zero (check=True) or timed out
    │   └── StepTimeout          a @dp.step ran past its timeout (on its last try)
    ├── SubpipelineFailed        a child run failed
    ├── InputTimeout             await_input timed out without a default
    ├── MessageTimeout           recv timed out without a default
    └── VersionMismatch          a pinned run met a different version

    BaseException (not Exception: user code must not swallow them)
    └── RunInterrupted
        ├── LeaseLost            another worker owns the run now
        ├── RunStopping          a stop or a shutdown was requested
        └── RunSuspending        the run is parked until a timer, input or child
"""

from __future__ import annotations

from typing import Any


class DurapipeError(Exception):
    """Base of every error durapipe raises on purpose."""


class ConfigError(DurapipeError):
    """Something the user gave is wrong; the message says what to do.

    A database URL, a pipeline target, an input, an option, or a database that is not migrated.
    """


class TargetNotFound(ConfigError):
    """A pipeline target (``file.py:name`` or ``module:name``) cannot be loaded."""


class InvalidInput(ConfigError):
    """Inputs that the pipeline does not accept or that cannot be parsed."""


class DatabaseUnavailable(DurapipeError):
    """The database cannot be reached."""


class RunNotFound(DurapipeError):
    """There is no run with this id (``run_id``)."""

    def __init__(self, run_id: str) -> None:
        super().__init__(f"no run with id {run_id!r}; `durapipe list` shows the runs there are")
        self.run_id = run_id


class InvalidRunState(DurapipeError):
    """The run is not in a state that allows the operation."""


class NotInPipeline(DurapipeError):
    """A journaled primitive was called outside a running pipeline."""


class NonDeterminismError(DurapipeError):
    """The code no longer makes the calls its run's history recorded, at step ``step``.

    The run is left ``blocked`` with its history untouched; restore the code (or branch with
    ``dp.patched``) and resume it. Attributes: ``run_id``, ``step``, ``recorded``, ``now``.
    """

    def __init__(self, run_id: str, step: str, recorded: str, now: str) -> None:
        super().__init__(
            f"run {run_id} is nondeterministic at step {step}: the history recorded {recorded}, "
            f"the code now does {now}. Restore the code the run started with (or make it make the "
            f"same calls in the same order), then `durapipe resume {run_id}`"
        )
        self.run_id = run_id
        self.step = step
        self.recorded = recorded
        self.now = now


class SerializationError(DurapipeError):
    """A value that cannot be stored as JSON."""


class StepFailed(DurapipeError):
    """A step raised after its retries; the original error is ``__cause__`` when live.

    Attributes:
        step: the step's label (e.g. ``fetch_manifest`` or ``exec_2``).
        error_type: the type name of the error the step raised.
        error_message: its message.
    """

    def __init__(self, step: str, error_type: str, message: str) -> None:
        super().__init__(f"step {step} failed: {error_type}: {message}")
        self.step = step
        self.error_type = error_type
        self.error_message = message


class ExecFailed(StepFailed):
    """A command exited with a non-zero code (``check=True``) or timed out.

    Attributes:
        argv: the command (secrets masked).
        exit_code: its exit code (None when it timed out).
        stderr: the tail of its standard error.
        timed_out: it was killed at its timeout.
    """

    def __init__(
        self,
        step: str,
        argv: list[str],
        exit_code: int | None,
        stderr: str = "",
        timed_out: bool = False,
    ) -> None:
        cmd = " ".join(argv)
        why = "timed out" if timed_out else f"exited with code {exit_code}"
        tail = stderr.strip().splitlines()[-1] if stderr.strip() else ""
        message = f"`{cmd}` {why}" + (f": {tail}" if tail else "")
        super().__init__(step, "ExecFailed", message)
        self.args = (f"step {step}: {message}",)  # the type is in the name already
        self.argv = argv
        self.exit_code = exit_code
        self.stderr = stderr
        self.timed_out = timed_out


class SubpipelineFailed(DurapipeError):
    """A child run of ``dp.run_subpipeline`` failed, was cancelled or aborted.

    Attributes: ``child_run_id``, and ``error`` (the child's ``{"type", "message", ...}``).
    """

    def __init__(self, child_run_id: str, error: dict[str, Any] | None) -> None:
        err = error or {}
        msg = err.get("message", "failed")
        kind = err.get("type", "Error")
        # A grandchild's failure already says what it was: don't repeat the type at every level.
        why = msg if kind == "SubpipelineFailed" else f"{kind}: {msg}"
        super().__init__(f"child run {child_run_id} failed: {why}")
        self.child_run_id = child_run_id
        self.error = err


class StepTimeout(StepFailed):
    """A ``@dp.step(timeout=...)`` ran past its timeout on its last try.

    An async step is cancelled at its timeout. A sync step runs in a thread, which Python cannot
    kill: the step fails at its timeout while the thread runs on in the background until its
    function returns (its result is then dropped).

    Attributes: ``step``, ``timeout`` (seconds).
    """

    def __init__(self, step: str, timeout: float) -> None:
        super().__init__(step, "StepTimeout", f"timed out after {timeout:g}s")
        self.args = (f"step {step} timed out after {timeout:g}s",)
        self.timeout = timeout


class InputTimeout(DurapipeError):
    """``dp.await_input(name, timeout=...)`` timed out without a ``default``.

    Attributes: ``name``, ``timeout``.
    """

    def __init__(self, name: str, timeout: float) -> None:
        super().__init__(f"no value for input {name!r} arrived within {timeout:g}s")
        self.name = name
        self.timeout = timeout


class VersionMismatch(DurapipeError):
    """A pinned run met code of another version; the run is aborted, not continued.

    Attributes: ``pipeline``, ``recorded`` (the run's version), ``current`` (the code's).
    """

    def __init__(self, pipeline: str, recorded: str, current: str) -> None:
        super().__init__(
            f"pinned run of {pipeline} started on version {recorded!r} but the code is now "
            f"version {current!r}"
        )
        self.pipeline = pipeline
        self.recorded = recorded
        self.current = current


class RunInterrupted(BaseException):
    """Control flow that unwinds a pipeline; never caught by ``except Exception``."""


class LeaseLost(RunInterrupted):
    """Another worker holds the run now; this one must write nothing more."""


class RunStopping(RunInterrupted):
    """A stop (or a worker shutdown) was requested."""


class RunSuspending(RunInterrupted):
    """The run is parked in the database until it is due again."""


class RunFailed(DurapipeError):
    """A run ended without completing (failed, cancelled, aborted, timed out), or is blocked or dead.

    Raised by ``Client.result()``. Attributes: ``run_id``, ``status``, and ``error`` (the run's
    ``{"type", "message", "traceback", "step"}``, empty when it has none).
    """

    def __init__(self, run_id: str, status: str, error: dict[str, Any] | None) -> None:
        err = error or {}
        detail = f": {err.get('type', 'Error')}: {err.get('message', '')}" if err else ""
        super().__init__(f"run {run_id} is {status}{detail}")
        self.run_id = run_id
        self.status = status
        self.error = err


class MessageTimeout(DurapipeError):
    """``dp.recv(topic, timeout=...)`` timed out without a ``default``.

    Attributes: ``topic``, ``timeout``.
    """

    def __init__(self, topic: str, timeout: float) -> None:
        super().__init__(f"no message on topic {topic!r} arrived within {timeout:g}s")
        self.topic = topic
        self.timeout = timeout
