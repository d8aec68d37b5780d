"""An exec's output is read, printed and stored a chunk of lines at a time, in bounded memory."""

from __future__ import annotations

import asyncio
import io
import json
from types import SimpleNamespace
from typing import Any

import pytest

from durapipe import _exec
from durapipe._console import LineFormatter, LiveConsole
from durapipe._engine import LogRecord
from durapipe._store.journal_sql import log_lines


async def pump(*chunks: bytes, drain: Any = None) -> tuple[list[str], _exec._Tail]:
    """Feed chunks through _pump as reads of a pipe; -> (texts handed on, the tail)."""
    reader = asyncio.StreamReader()
    texts: list[str] = []
    tail = _exec._Tail()

    async def feed() -> None:
        for c in chunks:
            reader.feed_data(c)
            await asyncio.sleep(0)
        reader.feed_eof()

    await asyncio.gather(
        feed(), _exec._pump(reader, "out", tail, lambda _s, t: texts.append(t), drain)
    )
    return texts, tail


@pytest.mark.asyncio
async def test_lines_are_handed_on_a_chunk_at_a_time_and_split_across_reads() -> None:
    texts, tail = await pump(b"one\r\ntw", b"o\nthree\r\n\nfour")
    lines = "\n".join(texts).split("\n")
    assert lines == ["one", "two", "three", "", "four"]  # \r dropped, empty line kept
    assert tail.value() == "one\r\ntwo\nthree\r\n\nfour"  # the history keeps the raw text
    many, _ = await pump(b"".join(b"%d\n" % i for i in range(50_000)))
    assert len(many) < 10 and "\n".join(many).split("\n") == [str(i) for i in range(50_000)]


@pytest.mark.asyncio
async def test_utf8_split_across_reads_decodes_whole() -> None:
    text = "héllo wörld ✓\n"
    data = text.encode()
    texts, _ = await pump(data[:2], data[2:3], data[3:])
    assert texts == ["héllo wörld ✓"]


@pytest.mark.asyncio
async def test_a_line_without_end_is_handed_on_in_pieces_not_held(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(_exec, "MAX_LINE", 1000)
    long = ("é" * 1500).encode()  # 3,000 bytes, never a newline
    texts, tail = await pump(long[:999], long[999:2001], long[2001:], b"\nnext\n")
    assert len(texts) >= 3 and all(len(t.encode()) <= 1000 for t in texts[:-1])
    assert "".join(texts) == "é" * 1500 + "\nnext"  # cut between characters, nothing lost
    assert tail.value() == "é" * 1500 + "\nnext\n"


@pytest.mark.asyncio
async def test_the_tail_keeps_the_last_64k(monkeypatch: pytest.MonkeyPatch) -> None:
    data = b"".join(b"line %06d\n" % i for i in range(20_000))  # 240 KB
    _, tail = await pump(*(data[i : i + 7000] for i in range(0, len(data), 7000)))
    assert tail.value() == data.decode()[-_exec.KEEP_BYTES :]
    assert tail.size < 2 * _exec.KEEP_BYTES


@pytest.mark.asyncio
async def test_drain_is_awaited_every_few_mib(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_exec, "DRAIN_BYTES", 10_000)
    drains = 0

    async def drain() -> None:
        nonlocal drains
        drains += 1

    await pump(*([b"x" * 99 + b"\n"] * 1000), drain=drain)  # 100 KB
    assert 5 <= drains <= 10


def test_a_record_of_many_lines_prints_like_the_lines_one_by_one() -> None:
    for color in (False, True):
        for stream in ("out", "err", "info"):
            fmt = LineFormatter(timestamps=True, color=color)
            whole = fmt.format(prefix="p.exec_1", line="a\nb\n\nc", stream=stream, at=1.5)
            single = [
                fmt.format(prefix="p.exec_1", line=x, stream=stream, at=1.5)
                for x in ("a", "b", "", "c")
            ]
            assert whole == "\n".join(single)


def test_live_console_prints_and_json_lines_one_per_line() -> None:
    rec = LogRecord(
        run_id="r",
        root_run_id="r",
        step="1",
        prefix="p.exec_1",
        stream="out",
        line="a\nb",
        at=1.0,
        attempt=1,
    )
    out = io.StringIO()
    con = LiveConsole(stream=out, timestamps=False)
    con.record(rec)
    con.flush()
    assert out.getvalue().splitlines() == [f"[{'p.exec_1':20}] a", f"[{'p.exec_1':20}] b"]
    js = io.StringIO()
    con = LiveConsole(stream=js, json_lines=True)
    con.record(rec)
    con.flush()
    assert [json.loads(x)["line"] for x in js.getvalue().splitlines()] == ["a", "b"]


def test_stored_rows_read_back_as_lines() -> None:
    row = dict(run_id="r", root_run_id="r", step="1", prefix="p", stream="out", at=1.0, attempt=1)
    rows = [SimpleNamespace(id=1, line="a\nb", **row), SimpleNamespace(id=2, line="c", **row)]
    got = log_lines(rows)
    assert [(x.id, x.line) for x in got] == [(1, "a"), (1, "b"), (2, "c")]
