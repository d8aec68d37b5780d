"""Decorators and the definitions they attach; loading pipelines from files and modules."""

from __future__ import annotations

import functools
import hashlib
import importlib
import importlib.util
import inspect
import os
import sys
import textwrap
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, Generic, NoReturn, Protocol, overload

from typing_extensions import ParamSpec, TypeVar

from ._policy import RetryPolicy, check_timeout, make_policy
from ._schedules import Cron, Every
from .errors import ConfigError, InvalidInput, TargetNotFound

# A pipeline's or step's parameters and result. The defaults make a bare ``PipelineDef`` mean
# ``PipelineDef[..., Any]`` (any pipeline), as the runner, the client and the CLI use it.
P = ParamSpec("P", default=...)
R = TypeVar("R", default=Any)
Q = ParamSpec("Q")
T = TypeVar("T")

_REGISTRY: dict[str, PipelineDef] = {}
# How many times a run whose process died holding it is taken again before it ends dead.
DEFAULT_MAX_RECOVERIES = 10
_FILE_MODULES: dict[
    str, str
] = {}  # module name -> absolute file path, for modules we loaded from files


def _source_hash(fn: Callable[..., Any]) -> str:
    try:
        src = textwrap.dedent(inspect.getsource(fn))
    except (OSError, TypeError):
        src = repr(getattr(fn, "__code__", fn))
    return hashlib.sha256(src.encode()).hexdigest()[:12]


@dataclass(eq=False, kw_only=True)
class PipelineDef(Generic[P, R]):
    """A pipeline: an ``async def`` plus its name, version and pinning.

    ``@dp.pipeline`` makes one; it is generic in the function's parameters ``P`` and result ``R``,
    so ``await dp.run_subpipeline(child, ...)`` is type-checked against the child's signature and
    typed as its result. A pipeline is not called directly: start it with ``durapipe run``,
    ``Client.start()``, or ``dp.run_subpipeline()`` from another pipeline.

    Attributes:
        fn: the decorated ``async def``.
        name: the pipeline's name (runs, the CLI and workers know it by this).
        version: the author's version, or a hash of the function's source.
        pin: runs abort instead of continuing on a different version.
        signature: the function's signature: its parameters are the run's inputs.
        timeout: seconds a run may take, start to end, suspensions included (None: no limit).
        max_recoveries: how many times a run whose process died holding it is taken again
            before it ends ``dead``.
        schedule: the schedule declared with it (``dp.Cron`` / ``dp.Every``), or None.
    """

    fn: Callable[P, Coroutine[Any, Any, R]]
    name: str
    version: str
    pin: bool
    signature: inspect.Signature = field(repr=False)
    timeout: float | None = None
    max_recoveries: int = DEFAULT_MAX_RECOVERIES
    schedule: Cron | Every | None = None

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> NoReturn:
        raise TypeError(
            f"pipeline {self.name!r} is not called directly: start it with `durapipe run`, "
            "Client.start(), or dp.run_subpipeline() from another pipeline"
        )

    @property
    def entrypoint(self) -> str:
        """Where workers load it from: ``/path/to/file.py:name`` or ``package.module:name``."""
        mod = self.fn.__module__
        attr = self.fn.__qualname__
        path = _FILE_MODULES.get(mod)
        if path is None and mod == "__main__":
            path = os.path.abspath(getattr(sys.modules[mod], "__file__", "") or "")
        return f"{path}:{attr}" if path else f"{mod}:{attr}"

    def bind_inputs(self, inputs: dict[str, Any]) -> dict[str, Any]:
        """Check inputs against the signature and the parameters' annotated types; return them
        with defaults left out."""
        params = self.signature.parameters
        accepts_any = any(p.kind is p.VAR_KEYWORD for p in params.values())
        unknown = [k for k in inputs if k not in params and not accepts_any]
        if unknown:
            names = (
                ", ".join(
                    p
                    for p in params
                    if params[p].kind
                    not in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
                )
                or "none"
            )
            raise InvalidInput(
                f"pipeline {self.name!r} has no input {unknown[0]!r}; its inputs are: {names}"
            )
        missing = [
            n
            for n, p in params.items()
            if p.default is p.empty
            and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
            and n not in inputs
        ]
        if missing:
            raise InvalidInput(
                f"pipeline {self.name!r} needs input {missing[0]!r}: pass --input {missing[0]}=VALUE"
            )
        from . import _typed

        return _typed.check_inputs(self.fn, dict(inputs), pipeline=self.name)


@dataclass(frozen=True, kw_only=True)
class StepOptions:
    name: str
    retries: int | None = 0
    retry_delay: float = 1.0
    backoff: float = 2.0
    max_delay: float = 60.0
    jitter: bool = True
    non_retryable: tuple[type[BaseException], ...] = ()
    timeout: float | None = None
    policy: RetryPolicy = field(default_factory=RetryPolicy)  # the options above, checked


@overload
def pipeline(fn: Callable[Q, Coroutine[Any, Any, T]], /) -> PipelineDef[Q, T]: ...
@overload
def pipeline(
    *,
    name: str | None = None,
    version: str | None = None,
    pin: bool = False,
    timeout: float | timedelta | None = None,
    max_recoveries: int = DEFAULT_MAX_RECOVERIES,
    schedule: Cron | Every | None = None,
) -> Callable[[Callable[Q, Coroutine[Any, Any, T]]], PipelineDef[Q, T]]: ...


def pipeline(
    fn: Callable[..., Any] | None = None,
    *,
    name: str | None = None,
    version: str | None = None,
    pin: bool = False,
    timeout: float | timedelta | None = None,
    max_recoveries: int = DEFAULT_MAX_RECOVERIES,
    schedule: Cron | Every | None = None,
) -> Any:
    """Make an ``async def`` a durable pipeline; use it bare or with options.

    ::

        @dp.pipeline(version="2", pin=True)
        async def deploy(branch: str = "main") -> dict[str, str]: ...

    The function's parameters are the run's inputs (stored as JSON, handed to the function as
    the types they are annotated with), its return value the run's output. The result is a :class:`PipelineDef` typed by the function, so
    ``await dp.run_subpipeline(deploy, branch="x")`` is checked by mypy.

    Args:
        fn: the ``async def`` (when used bare, ``@dp.pipeline``).
        name: the pipeline's name (default: the function's name), 1-200 characters.
        version: the author's version; without it a hash of the function's source stands in.
        pin: runs abort instead of continuing on a different version.
        timeout: seconds (or a ``timedelta``) a run may take from its start, on the durable
            clock: its deadline is recorded when it starts and holds across suspensions,
            crashes and resumes. At the deadline the run is cancelled (its ``finally`` blocks
            run) and ends ``timed_out``, its children too; a suspended run is ended by the next
            worker that looks. ``Client.start(timeout=)`` and ``--timeout`` override it.
        max_recoveries: how many times a run whose process died holding it (a crash, an OOM
            kill, a step that kills its process) is taken again; one more such death ends it
            ``dead``, with the reason and its last execution's log lines, until ``durapipe
            resume`` continues it (default 10).
        schedule: start runs on a schedule, ``dp.Cron("0 3 * * *", tz="Europe/Berlin")`` or
            ``dp.Every("15m")``: a worker that loads the module adds it (named after the
            pipeline) or updates it; workers fire it (see ``docs/schedules.md``).

    Raises:
        ConfigError: ``fn`` is not an ``async def``, is decorated twice, the name is unusable,
            the timeout is not a finite number of seconds above 0, ``max_recoveries`` is
            negative, or the schedule is not a ``dp.Cron``/``dp.Every`` or does not fit the
            inputs.
    """
    run_timeout = check_timeout("@dp.pipeline", timeout)
    if (
        isinstance(max_recoveries, bool)
        or not isinstance(max_recoveries, int)
        or max_recoveries < 0
    ):
        raise ConfigError(f"@dp.pipeline: max_recoveries must be 0 or more, got {max_recoveries!r}")
    if schedule is not None and not isinstance(schedule, Cron | Every):
        raise ConfigError(f"schedule={schedule!r}: give dp.Cron('0 3 * * *') or dp.Every('15m')")

    def wrap(f: Callable[..., Any]) -> PipelineDef:
        if isinstance(f, PipelineDef):
            raise ConfigError(f"{f.name} is decorated with @dp.pipeline twice")
        if not inspect.iscoroutinefunction(f):
            raise ConfigError(
                f"@dp.pipeline needs an `async def` function; {getattr(f, '__qualname__', f)!r} is not one"
            )
        pname = name or f.__name__
        if not pname or len(pname) > 200:
            raise ConfigError("a pipeline name is 1-200 characters")
        d = PipelineDef(
            fn=f,
            name=pname,
            version=str(version) if version is not None else _source_hash(f),
            pin=pin,
            signature=inspect.signature(f),
            timeout=run_timeout,
            max_recoveries=max_recoveries,
            schedule=schedule,
        )
        if schedule is not None:
            d.bind_inputs(schedule.inputs)  # a schedule's inputs must fit, now, not at 3 am
        functools.update_wrapper(d, f)
        _REGISTRY[pname] = d
        return d

    if fn is not None:
        return wrap(fn)
    return wrap


@overload
def step(fn: Callable[Q, Coroutine[Any, Any, T]], /) -> Callable[Q, Coroutine[Any, Any, T]]: ...
@overload
def step(fn: Callable[Q, T], /) -> Callable[Q, Coroutine[Any, Any, T]]: ...
@overload
def step(
    *,
    name: str | None = None,
    retries: int | None = 0,
    retry_delay: float = 1.0,
    backoff: float = 2.0,
    max_delay: float = 60.0,
    jitter: bool = True,
    non_retryable: tuple[type[BaseException], ...] | type[BaseException] = (),
    timeout: float | timedelta | None = None,
) -> StepDecorator: ...


def step(
    fn: Any = None,
    *,
    name: str | None = None,
    retries: int | None = 0,
    retry_delay: float = 1.0,
    backoff: float = 2.0,
    max_delay: float = 60.0,
    jitter: bool = True,
    non_retryable: tuple[type[BaseException], ...] | type[BaseException] = (),
    timeout: float | timedelta | None = None,
) -> Any:
    """Make a function (sync or async) a journaled step; use it bare or with options.

    ::

        @dp.step(retries=3)
        def fetch_manifest(branch: str) -> dict[str, str]: ...

        manifest = await fetch_manifest("main")     # in a pipeline: sync or async, awaited

    Inside a running pipeline each call is recorded; on replay the recorded result is returned
    without running the body. A sync step's body runs in a thread. The result is stored as JSON
    and the step returns it decoded, live and on replay alike: as the type of its return
    annotation (a dataclass, a pydantic model, ``datetime``, ``Decimal``...), or as plain JSON
    when it has none. Steps run at least
    once: use ``dp.context().step_id`` as an idempotency key to make their effects exactly-once.

    Typing: a step is typed for its use in a pipeline, ``(P) -> Coroutine[Any, Any, R]`` for a
    sync and an async function alike, so ``await step(x)`` type-checks. Outside a run (a script, a
    test, another step's body) a call is a plain call: an async step still returns a coroutine,
    but a *sync* step returns its result directly, which mypy does not see; in type-checked code
    outside pipelines call the undecorated function instead. With options, ``dp.step(...)``
    returns a decorator (``StepDecorator``) that types the function the same way.

    Args:
        fn: the function (when used bare, ``@dp.step``).
        name: the step's name in the history and the console (default: the function's name).
        retries: how many times a failing call is tried again (0: no retries; None: until it
            succeeds). Every failed try is recorded (``step_retry``) with the instant the next
            one is due, so a retry waits out the rest of its delay after a crash or a resume,
            and a long delay suspends the run like ``dp.sleep``. ``dp.context().attempt`` in
            the body is the try (1-based).
        retry_delay: seconds before the first retry.
        backoff: each further delay is the previous one times this (1 or more).
        max_delay: the longest delay between two tries, in seconds.
        jitter: draw each delay between half and all of its exponential value, so calls that
            failed together do not retry together. It is drawn once and recorded.
        non_retryable: exception classes that fail the step at once, without retries.
        timeout: seconds (or a ``timedelta``) one try may take. An async body is cancelled at
            its timeout; a sync body runs in a thread, which cannot be killed: the try fails
            at the timeout while the thread runs on until the function returns (its result is
            dropped). A timed-out try is a failed try (``dp.StepTimeout``) and is retried.

    Raises:
        ConfigError: ``fn`` is not a function, or an option is out of range (``retries``
            below 0, a negative or non-finite delay or timeout, a ``non_retryable`` that is not
            an exception class).
        StepFailed: (when called in a run) the body raised on its last try
            (``StepTimeout`` when that try timed out).
    """
    policy = make_policy(
        "@dp.step",
        retries=retries,
        retry_delay=retry_delay,
        backoff=backoff,
        max_delay=max_delay,
        jitter=jitter,
        non_retryable=non_retryable,
    )
    step_timeout = check_timeout("@dp.step", timeout)

    def wrap(f: Any) -> Any:
        from ._engine import call_step, in_run_on_loop

        if not callable(f) or isinstance(f, type):
            raise ConfigError(
                f"@dp.step decorates a function (sync or async), not {type(f).__name__} {f!r}"
            )

        opts = StepOptions(
            name=name or f.__name__,
            retries=policy.retries,
            retry_delay=policy.retry_delay,
            backoff=policy.backoff,
            max_delay=policy.max_delay,
            jitter=policy.jitter,
            non_retryable=policy.non_retryable,
            timeout=step_timeout,
            policy=policy,
        )
        is_async = inspect.iscoroutinefunction(f)
        journaled: Any
        if is_async:

            @functools.wraps(f)
            async def journaled(*args: Any, **kwargs: Any) -> Any:
                return await call_step(f, opts, True, args, kwargs)

        else:

            @functools.wraps(f)
            def journaled(*args: Any, **kwargs: Any) -> Any:
                # In a run: an awaitable journaled call. Elsewhere (a script, a test, a sync
                # step's body): a plain call that returns the result.
                if in_run_on_loop():
                    return call_step(f, opts, False, args, kwargs)
                return f(*args, **kwargs)

        journaled.__durapipe_step_options__ = opts
        return journaled

    if fn is not None:
        return wrap(fn)
    return wrap


class StepDecorator(Protocol):
    """What ``dp.step(...)`` with options returns, for type checkers: applied to a function, a step."""

    @overload
    def __call__(
        self, fn: Callable[Q, Coroutine[Any, Any, T]], /
    ) -> Callable[Q, Coroutine[Any, Any, T]]: ...
    @overload
    def __call__(self, fn: Callable[Q, T], /) -> Callable[Q, Coroutine[Any, Any, T]]: ...
    def __call__(self, fn: Any, /) -> Any: ...


def registered(name: str) -> PipelineDef | None:
    return _REGISTRY.get(name)


# ---------------------------------------------------------------------- loading


def _import_file(path: Path) -> Any:
    path = path.resolve()
    for mod_name, p in _FILE_MODULES.items():
        if p == str(path):
            return sys.modules[mod_name]
    base = "durapipe_user_" + "".join(c if c.isalnum() else "_" for c in path.stem)
    mod_name, n = base, 1
    while mod_name in sys.modules:
        n += 1
        mod_name = f"{base}_{n}"
    spec = importlib.util.spec_from_file_location(mod_name, path)
    if spec is None or spec.loader is None:
        raise TargetNotFound(f"cannot import {path}: not a Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[mod_name] = module
    _FILE_MODULES[mod_name] = str(path)
    parent = str(path.parent)
    if parent not in sys.path:
        sys.path.insert(0, parent)
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        sys.modules.pop(mod_name, None)
        _FILE_MODULES.pop(mod_name, None)
        raise TargetNotFound(f"importing {path} failed: {type(exc).__name__}: {exc}") from exc
    return module


def load_module(spec: str) -> Any:
    """Import ``path/to/file.py`` or ``package.module``; clear errors for the common mistakes."""
    if spec.endswith(".py") or os.sep in spec:
        path = Path(spec)
        if not path.is_file():
            raise TargetNotFound(f"no such file: {spec}")
        return _import_file(path)
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        return importlib.import_module(spec)
    except ModuleNotFoundError as exc:
        if exc.name and spec.startswith(exc.name):
            raise TargetNotFound(
                f"no module named {spec!r} (from {os.getcwd()}); give a file path like path/to/file.py or a module on PYTHONPATH"
            ) from None
        raise TargetNotFound(f"importing {spec} failed: {type(exc).__name__}: {exc}") from exc
    except Exception as exc:
        raise TargetNotFound(f"importing {spec} failed: {type(exc).__name__}: {exc}") from exc


def pipelines_in(module: Any) -> list[PipelineDef]:
    seen: dict[int, PipelineDef] = {}
    for value in vars(module).values():
        if isinstance(value, PipelineDef):
            seen[id(value)] = value
    return list(seen.values())


def load_target(target: str) -> PipelineDef:
    """``path/to/file.py:name`` or ``package.module:name`` (``:name`` optional if there is one)."""
    mod_spec, sep, attr = target.rpartition(":")
    if not sep:
        mod_spec, attr = target, ""
    if not mod_spec:
        raise TargetNotFound(
            f"target {target!r} names no file or module; use path/to/file.py:pipeline or package.module:pipeline"
        )
    module = load_module(mod_spec)
    found = pipelines_in(module)
    if not attr:
        if len(found) == 1:
            return found[0]
        names = ", ".join(sorted(p.name for p in found)) or "none"
        raise TargetNotFound(
            f"{mod_spec} has {len(found)} pipelines ({names}); name one: {mod_spec}:NAME"
        )
    obj: Any = module
    for part in attr.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            break
    if obj is None:
        by_name = [p for p in found if p.name == attr]
        if by_name:
            return by_name[0]
        names = ", ".join(sorted(p.name for p in found)) or "none"
        raise TargetNotFound(f"{mod_spec} has no pipeline {attr!r}; its pipelines: {names}")
    if not isinstance(obj, PipelineDef):
        raise TargetNotFound(f"{target} is not a pipeline: decorate it with @dp.pipeline")
    return obj
