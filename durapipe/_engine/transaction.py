"""``@dp.transaction``: a step whose database changes commit with its checkpoint, exactly once."""

from __future__ import annotations

import contextvars
import functools
import inspect
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, Concatenate, Protocol, overload

from typing_extensions import ParamSpec, TypeVar

from .. import _serde, _typed
from .._kinds import EventKind, Family, Request
from ..errors import ConfigError, DatabaseUnavailable, LeaseLost, StepFailed
from .context import _IN_STEP, _STEP_LOG, current
from .failures import error_data
from .journaled import Call, begin

if TYPE_CHECKING:
    from .._store.transactions import AsyncConnection, Connection

Q = ParamSpec("Q")
T = TypeVar("T")

_COMMITTED, _FAILED = EventKind.TRANSACTION_COMMITTED, EventKind.TRANSACTION_FAILED


@overload
def transaction(
    fn: Callable[Concatenate[AsyncConnection, Q], Coroutine[Any, Any, T]], /
) -> Callable[Q, Coroutine[Any, Any, T]]: ...
@overload
def transaction(
    fn: Callable[Concatenate[Connection, Q], T], /
) -> Callable[Q, Coroutine[Any, Any, T]]: ...
@overload
def transaction(*, name: str | None = None) -> TransactionDecorator: ...


def transaction(fn: Any = None, *, name: str | None = None) -> Any:
    """Make a function a transaction step: its database changes and its completion commit
    together, exactly once; use it bare or with a name.

    ::

        MOVE = text("update accounts set balance = balance + :a where id = :i")

        @dp.transaction
        def transfer(conn: Connection, src: int, dst: int, amount: int) -> int:
            conn.execute(MOVE, {"a": -amount, "i": src})
            conn.execute(MOVE, {"a": amount, "i": dst})
            return amount

        await transfer(1, 2, 100)          # in a pipeline: the connection is not passed

    The first parameter receives a SQLAlchemy connection of the durapipe database (a
    ``Connection`` for a plain ``def``, an ``AsyncConnection`` for an ``async def``, on SQLite
    and PostgreSQL alike), inside the transaction that also records the step's completion,
    checked against the run's lease. So the step's statements and its checkpoint commit
    together or not at all: a crash at any point, or a worker that lost its run, leaves
    neither, and the step runs again on resume; once committed, replay returns the recorded
    result and never runs it again.

    Only changes made through that connection to tables in the durapipe database are covered;
    anything else the body does (another database, an HTTP call) is at-least-once, as in a
    ``@dp.step``. A serialization failure or a deadlock runs the body again from the start, in
    a new transaction; any other exception rolls the transaction back and fails the step
    (``StepFailed``). The result is stored as JSON and decoded by the return annotation.

    Args:
        fn: the function (when used bare, ``@dp.transaction``).
        name: the step's name in the history and the console (default: the function's name).

    Raises:
        ConfigError: ``fn`` is not a function or takes no connection parameter.
        StepFailed: (in a run) the body raised; nothing it did was committed.
        NotInPipeline: called outside a running pipeline.
    """

    def wrap(f: Any) -> Any:
        if not callable(f) or isinstance(f, type):
            raise ConfigError(f"@dp.transaction decorates a function, not {type(f).__name__} {f!r}")
        params = list(inspect.signature(f).parameters.values())
        if not params or params[0].kind not in (
            inspect.Parameter.POSITIONAL_ONLY,
            inspect.Parameter.POSITIONAL_OR_KEYWORD,
        ):
            raise ConfigError(
                f"@dp.transaction function {f.__qualname__} must take the connection as its "
                "first parameter, e.g. def transfer(conn, src, dst, amount)"
            )
        step_name = name or f.__name__
        is_async = inspect.iscoroutinefunction(f)

        @functools.wraps(f)
        async def journaled(*args: Any, **kwargs: Any) -> Any:
            return await call_transaction(f, step_name, is_async, args, kwargs)

        # A plain callable to the type checker and to users: the connection is not passed.
        journaled.__signature__ = inspect.signature(f).replace(parameters=params[1:])  # type: ignore[attr-defined]
        return journaled

    if fn is not None:
        return wrap(fn)
    return wrap


class TransactionDecorator(Protocol):
    """What ``dp.transaction(name=...)`` returns, for type checkers: applied to a function, a
    transaction step."""

    @overload
    def __call__(
        self, fn: Callable[Concatenate[AsyncConnection, Q], Coroutine[Any, Any, T]], /
    ) -> Callable[Q, Coroutine[Any, Any, T]]: ...
    @overload
    def __call__(
        self, fn: Callable[Concatenate[Connection, Q], T], /
    ) -> Callable[Q, Coroutine[Any, Any, T]]: ...
    def __call__(self, fn: Any, /) -> Any: ...


def replay(call: Call, typed: Any) -> Any:
    """A committed transaction's recorded result, or its recorded failure raised again."""
    data = _serde.loads(call.done.data) or {}
    if call.done.kind == _FAILED:
        err = data.get("error", {})
        raise call.failure(
            StepFailed(
                call.done.label or call.key, err.get("type", "Error"), err.get("message", "")
            )
        )
    return _typed.decode(typed, data.get("result"), what=f"the result of transaction {call.label}")


async def call_transaction(
    fn: Callable[..., Any], name: str, is_async: bool, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    ctx, branch = current(name, step=True)
    call = begin(ctx, branch, Family.TRANSACTION, name, name)
    typed = _typed.result_adapter(fn)
    if call.done is not None:
        return replay(call, typed)
    label = call.label
    assert label is not None
    what = f"the result of transaction {label}"
    # The completion's seq is taken now, on the loop's thread; the event is written by the
    # transaction itself (with the result), or, if the body fails, as the failure (same seq).
    event = call.event(_COMMITTED)
    token = _IN_STEP.set(f"{ctx.run_id}.{call.key}")
    log_token = _STEP_LOG.set((call.key, label))
    cv = contextvars.copy_context()  # the step's context (dp.context(), logs) in the body

    def encode(result: Any) -> str:
        text = _serde.dumps(result, what=f"{what} ({type(result).__name__})")
        if typed is not None:  # refused before anything commits if it does not decode
            _typed.decode(typed, _serde.loads(text), what=what)
        return _serde.mask_json('{"result":' + text + "}")

    def sync_body(conn: Any) -> str:
        return encode(cv.run(fn, conn, *args, **kwargs))

    async def async_body(conn: Any) -> str:
        return encode(await fn(conn, *args, **kwargs))

    # Events posted without waiting (a gather sibling's step start) hold lower seqs: they go
    # in with this commit, as with any history write, so committed seqs never leave a gap.
    earlier, ctx.unsent = ctx.unsent, []
    try:
        if ctx.request == Request.LOST:
            raise LeaseLost(ctx.run_id)
        data = await ctx.journal.transaction(
            run_id=ctx.run_id,
            owner=ctx.owner,
            attempt=ctx.attempt,
            earlier=earlier,
            event=event,
            body=async_body if is_async else sync_body,
            is_async=is_async,
            label=label,
        )
    except LeaseLost:
        ctx.request = Request.LOST
        raise
    except DatabaseUnavailable as exc:
        # As a failed history write: this run can no longer trust its seq counter.
        ctx.request = Request.LOST
        ctx.write_error = exc
        raise LeaseLost(f"run {ctx.run_id}: transaction {label} failed: {exc}") from exc
    except Exception as exc:
        ctx.unsent[:0] = earlier  # not committed: they go out with the failure, first
        err = error_data(exc)
        call.emit("error", f"failed (rolled back): {err['type']}: {err['message']}")
        event.update(kind=_FAILED, data=_serde.dumps({"error": err, "tries": 1}))
        await ctx.write(event)
        raise call.failure(StepFailed(label, err["type"], err["message"])) from exc
    finally:
        _IN_STEP.reset(token)
        _STEP_LOG.reset(log_token)
    return _typed.decode(typed, (_serde.loads(data) or {}).get("result"), what=what)
