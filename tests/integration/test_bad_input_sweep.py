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

SWEEP = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
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
def test_run_ids_and_values_are_taken_or_refused_cleanly(db_url: str, run_id: str, value: Any) -> None:
    async def go() -> None:
        async with await dp.Client.connect(db_url) as c:
            existing = {r.id: r for r in await c.store.list_runs(limit=100000)}
            try:
                rid = await c.start(sweep, run_id=run_id, value=value)
            except DurapipeError as exc:
                _one_line(exc)
                assert len(await c.store.list_runs(limit=100000)) == len(existing)  # nothing written
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
