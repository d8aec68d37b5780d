"""Bad input, generated: every case is a clear error or a correct result, never a traceback or a changed run."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import durapipe as dp
from durapipe._client import parse_inputs
from durapipe._serde import MAX_VALUE_BYTES
from durapipe.errors import DurapipeError

SWEEP = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
WIDE = settings(SWEEP, max_examples=20)  # the sweeps added for issue #9, below

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


@dp.pipeline(name="sweep", version="1")
async def sweep(value: Any = None) -> Any:
    return value


def _one_line(exc: BaseException) -> None:
    assert isinstance(exc, DurapipeError), repr(exc)
    text = str(exc)
    assert text and "\n" not in text and "Traceback" not in text


@SWEEP
@given(pairs=st.lists(st.text(max_size=30), max_size=4), blob=st.none() | st.text(max_size=40))
def test_cli_inputs_parse_or_say_why(pairs: list[str], blob: str | None) -> None:
    try:
        out = parse_inputs(pairs, blob)
    except DurapipeError as exc:
        _one_line(exc)
        return
    assert isinstance(out, dict)
    json.dumps(out)


@SWEEP
@given(run_id=st.text(min_size=0, max_size=200), value=json_values)
def test_run_ids_and_values_are_taken_or_refused_cleanly(
    db_url: str, run_id: str, value: Any
) -> None:
    async def go() -> None:
        async with await dp.Client.connect(db_url) as c:
            existing = {r.id: r for r in await c.store.list_runs(limit=100000)}
            try:
                rid = await c.start(sweep, run_id=run_id, value=value)
            except DurapipeError as exc:
                _one_line(exc)
                assert len(await c.store.list_runs(limit=100000)) == len(
                    existing
                )  # nothing written
                return
            view = await c.get(rid)
            assert view.run_id == run_id
            if run_id in existing:  # an idempotency key used again: the same run, untouched
                assert view.inputs == json.loads(existing[run_id].inputs)
            else:
                assert view.inputs == {"value": json.loads(json.dumps(value))}

    asyncio.run(go())


@SWEEP
@given(
    name=st.text(max_size=250),
    value=json_values | st.integers(0, 20).map(lambda n: "x" * (MAX_VALUE_BYTES - 10 + n)),
)
def test_input_values_are_stored_or_refused_cleanly(db_url: str, name: str, value: Any) -> None:
    async def go() -> None:
        async with await dp.Client.connect(db_url) as c:
            rid = await c.start(sweep, run_id="target")
            before = await c.store.inputs_of(rid)
            try:
                await c.send_input(rid, name, value)
            except DurapipeError as exc:
                _one_line(exc)
                assert await c.store.inputs_of(rid) == before
                return
            after = await c.store.inputs_of(rid)
            assert len(after) == len(before) + 1 and after[-1].name == name

    asyncio.run(go())


# Anything a caller may pass where a run id goes: NUL, lone surrogates (bytes that were not
# UTF-8), very long strings, and things that are not strings at all.
any_text = st.text(st.characters(blacklist_categories=()), max_size=40)
run_id_like = (
    any_text
    | st.integers(129, 20_000).map(lambda n: "r" * n)
    | st.sampled_from(["target ", "TARGET", "target\x00", "target\ud800", "", " "])
    | st.integers()
    | st.none()
    | st.binary(max_size=8)
)


async def _state(c: Any) -> Any:
    """All runs with their histories, inputs and messages: what no refused call may change."""
    runs = sorted(tuple(r) for r in await c.store.list_runs(limit=100000))
    return runs, {
        r[0]: (
            [tuple(e) for e in await c.store.events(r[0])],
            [tuple(i) for i in await c.store.inputs_of(r[0])],
            [tuple(m) for m in await c.store.messages_of(r[0])],
        )
        for r in runs
    }


@WIDE
@given(
    run_id=run_id_like,
    op=st.sampled_from(
        ["get", "events", "result", "stop", "stop_now", "cancel", "resume", "input"]
        + ["send", "get_event", "get_event_wait", "published"]  # messages, published state
    ),
)
def test_every_lookup_of_a_run_that_is_not_there_says_so(db_url: str, run_id: Any, op: str) -> None:
    calls = {
        "get": lambda c: c.get(run_id),
        "events": lambda c: c.events(run_id),
        "result": lambda c: c.result(run_id, timeout=0),
        "stop": lambda c: c.stop(run_id),
        "stop_now": lambda c: c.stop(run_id, now=True),
        "cancel": lambda c: c.cancel(run_id),
        "resume": lambda c: c.resume(run_id),
        "input": lambda c: c.send_input(run_id, "k", 1),
        "send": lambda c: c.send(run_id, "k", 1),
        "get_event": lambda c: c.get_event(run_id, "k"),
        "get_event_wait": lambda c: c.get_event(run_id, "k", wait=5),
        "published": lambda c: c.published(run_id),
    }

    async def go() -> None:
        async with await dp.Client.connect(db_url) as c:
            await c.start(sweep, run_id="target", value=1)
            before = await _state(c)
            try:
                await calls[op](c)
            except DurapipeError as exc:
                _one_line(exc)
            else:
                raise AssertionError(f"{op}({run_id!r}) found a run")
            assert await _state(c) == before

    asyncio.run(go())


@WIDE
@given(
    status=st.none() | st.sampled_from(["pending", "completed", "bogus"]) | any_text,
    pipeline=st.none() | st.just("sweep") | any_text,
    limit=st.integers() | st.sampled_from([0, 1, 2**63, -(2**63), 10**30]),
)
def test_list_takes_any_filter_or_says_why(
    db_url: str, status: Any, pipeline: Any, limit: int
) -> None:
    async def go() -> None:
        async with await dp.Client.connect(db_url) as c:
            await c.start(sweep, run_id="target", value=1)
            try:
                views = await c.list(status=status, pipeline=pipeline, limit=limit)
            except DurapipeError as exc:
                _one_line(exc)
                return
            assert limit >= 0 and len(views) <= limit
            assert all(v.status == status for v in views) if status is not None else True
            assert all(v.pipeline == pipeline for v in views) if pipeline is not None else True

    asyncio.run(go())


def _nested(depth: int) -> Any:
    value: Any = 0
    for _ in range(depth):
        value = [value]
    return value


unstorable_or_odd = (
    st.text(st.characters(blacklist_categories=()), min_size=1, max_size=20)  # surrogates, NUL
    | st.integers(1, 30).map(lambda k: _nested(k * 1000))  # deeper than json goes at some point
    | st.sampled_from([float("nan"), float("inf"), -0.0, 10**5000, b"bytes", object(), {1, 2}])
    | st.dictionaries(
        st.text(st.characters(blacklist_categories=()), max_size=4), st.integers(), max_size=3
    )
)


@WIDE
@given(value=unstorable_or_odd, via=st.sampled_from(["start", "input"]))
def test_values_that_cannot_be_stored_are_refused_with_nothing_written(
    db_url: str, value: Any, via: str
) -> None:
    async def go() -> None:
        async with await dp.Client.connect(db_url) as c:
            await c.start(sweep, run_id="target", value=1)
            before = await _state(c)
            try:
                if via == "start":
                    rid = await c.start(sweep, value=value)
                else:
                    await c.send_input("target", "k", value)
            except DurapipeError as exc:
                _one_line(exc)
                assert await _state(c) == before
                return
            if via == "start":  # stored: it reads back as its JSON form, on both databases
                stored = (await c.get(rid)).inputs["value"]
                assert json.dumps(stored) == json.dumps(json.loads(json.dumps(value, default=list)))

    asyncio.run(go())


def test_result_with_a_timeout_that_never_comes_is_refused(db_url: str) -> None:
    async def go() -> None:
        async with await dp.Client.connect(db_url) as c:
            rid = await c.start(sweep, run_id="target", value=1)
            try:
                await asyncio.wait_for(c.result(rid, timeout=float("nan")), 10)
            except DurapipeError as exc:
                _one_line(exc)
            else:
                raise AssertionError("result(timeout=nan) returned")
            for t in (0, -1.0):
                try:
                    await c.result(rid, timeout=t)
                except TimeoutError:
                    pass
                else:
                    raise AssertionError(f"result(timeout={t}) returned")

    asyncio.run(go())
