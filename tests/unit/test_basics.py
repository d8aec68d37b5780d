"""Pure functions: ids, the JSON codec, CLI input parsing, definitions, line format."""

from __future__ import annotations

import dataclasses
import gc
import re
import warnings
from typing import Any

import pytest

import durapipe as dp
from durapipe._client import parse_inputs
from durapipe._console import LineFormatter
from durapipe._ids import new_id, validate_run_id
from durapipe._serde import MAX_VALUE_BYTES, dumps, loads
from durapipe.errors import ConfigError, InvalidInput, NotInPipeline, SerializationError


def test_ids_are_prefixed_lowercase_and_time_sortable() -> None:
    ids = [new_id("run") for _ in range(200)]
    for i in ids:
        assert re.fullmatch(r"run_[0-9a-z]{20}", i)
    assert len(set(ids)) == 200
    assert new_id("run")[:14] >= ids[0][:14]  # the time part never goes backwards


def test_user_run_ids_are_validated() -> None:
    assert validate_run_id("deploy-2026-11-27") is None
    assert validate_run_id("bad id") is not None
    assert validate_run_id("x" * 200) is not None
    assert validate_run_id("nul\x00") is not None


def test_codec_roundtrips_dataclasses_and_rejects_other_types() -> None:
    @dataclasses.dataclass
    class Point:
        x: int
        y: int

    value = loads(dumps({"p": Point(1, 2), "t": (1, 2)}))
    assert value == {"p": {"x": 1, "y": 2}, "t": [1, 2]}
    with pytest.raises(SerializationError, match="object"):
        dumps({"x": object()}, what="the result of step s_1")
    with pytest.raises(SerializationError, match="limit"):
        dumps("x" * (MAX_VALUE_BYTES + 1))


def test_cli_inputs_parse_as_json_else_string() -> None:
    assert parse_inputs(["n=3", "ok=true", 'tags=["a"]', "name=world", "empty="], None) == {
        "n": 3,
        "ok": True,
        "tags": ["a"],
        "name": "world",
        "empty": "",
    }
    assert parse_inputs([], '{"a": 1}') == {"a": 1}
    for bad in (["novalue"], ["=x"], ["1a=2"]):
        with pytest.raises(InvalidInput):
            parse_inputs(bad, None)
    with pytest.raises(InvalidInput, match="JSON"):
        parse_inputs([], "{nope")


def test_pipeline_needs_async_def() -> None:
    def plain() -> None: ...

    with pytest.raises(ConfigError, match="async def"):
        dp.pipeline(plain)


def test_pipeline_inputs_are_checked_against_the_signature() -> None:
    @dp.pipeline
    async def p(a: int, b: int = 2) -> int:
        return a + b

    assert p.bind_inputs({"a": 1}) == {"a": 1}
    with pytest.raises(InvalidInput, match="no input 'c'"):
        p.bind_inputs({"a": 1, "c": 3})
    with pytest.raises(InvalidInput, match="needs input 'a'"):
        p.bind_inputs({})
    assert len(p.version) == 12  # a hash of the source stands in for version=


@pytest.mark.asyncio
async def test_primitives_outside_a_run_raise_a_clear_error() -> None:
    with pytest.raises(NotInPipeline, match="inside a running pipeline"):
        await dp.exec("true")
    with pytest.raises(NotInPipeline):
        await dp.sleep(1)

    @dp.step
    def add(a: int, b: int) -> int:
        return a + b

    @dp.step
    async def add_async(a: int, b: int) -> int:
        return a + b

    assert add(1, 2) == 3  # outside a run, a sync step is a plain call
    assert await add_async(1, 2) == 3  # and an async one a plain await


def test_step_decorates_functions_only() -> None:
    with pytest.raises(ConfigError, match="decorates a function"):
        dp.step(5)  # type: ignore[call-overload]


@pytest.mark.asyncio
async def test_a_refused_gather_leaves_no_unawaited_coroutines(tmp_path: Any) -> None:
    from durapipe._store import open_store
    from durapipe.testing import run_pipeline

    @dp.step
    async def mark() -> int:
        return 1

    @dp.pipeline(name="refused_gather")
    async def refused() -> str:
        try:
            await dp.gather(mark(), mark(), limit=0)
        except ValueError as exc:
            return str(exc)
        return "not refused"

    store = await open_store(f"sqlite:///{tmp_path / 'g.db'}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # "coroutine ... was never awaited" would fail here
            view = await run_pipeline(store, refused)
            gc.collect()
    finally:
        await store.close()
    assert view.output == "dp.gather(limit=...) must be 1 or more"


@pytest.mark.asyncio
async def test_patched_keeps_its_answer_for_the_whole_run(tmp_path: Any) -> None:
    from durapipe._store import open_store
    from durapipe.testing import resume_run, run_pipeline

    flag = {"fail": True}

    @dp.step
    async def work(i: int) -> int:
        if i == 2 and flag["fail"]:
            raise RuntimeError("fail once")
        return i

    @dp.pipeline(name="patch_answer", version="1")
    async def old() -> list[Any]:
        await work(1)
        await work(2)
        return []

    store = await open_store(f"sqlite:///{tmp_path / 'p.db'}")
    try:
        view = await run_pipeline(store, old)
        assert view.status == "failed"

        @dp.pipeline(name="patch_answer", version="1")
        async def new() -> list[Any]:
            answers = [await dp.patched("v2")]  # replayed: history from before the change
            await work(1)
            await work(2)  # the failed step, now live
            answers.append(await dp.patched("v2"))  # live, but the run took the old path
            return answers

        flag["fail"] = False
        view = await resume_run(store, new, view.run_id)
    finally:
        await store.close()
    assert view.status == "completed", view.error
    assert view.output == [False, False]


def test_line_format_has_milliseconds_and_aligned_prefixes() -> None:
    fmt = LineFormatter(timestamps=True, color=False)
    fmt.fit(["deploy.exec_1", "deploy.build_image_1.exec_1"])
    a = fmt.format(prefix="deploy.exec_1", line="README.md", stream="out", at=1764242305.364)
    b = fmt.format(prefix="deploy.build_image_1.exec_1", line="oops", stream="err", at=1764242305.5)
    assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.364 \[deploy\.exec_1 +\] README\.md$", a)
    assert a.index("]") == b.index("]")
    assert b.endswith("]!oops")  # stderr is marked
    plain = LineFormatter(timestamps=False).format(prefix="p.s_1", line="x", stream="out", at=0)
    assert plain.startswith("[p.s_1")
