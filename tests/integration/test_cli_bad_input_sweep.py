"""Bad input through the real CLI (``python -m durapipe`` as real processes), generated.

Every case ends one of two ways: the command refuses, with a non-zero exit code, exactly one
line ``error: ...`` on stderr and no traceback; or it does what it documents. Either way nothing
in the database changes that the command was not asked to change: the runs, their histories,
inputs and holds are compared before and after every example.

Arguments reach a process as C strings, so they cannot hold NUL bytes: NUL comes in through
stdin and JSON escapes instead, and bytes that are not UTF-8 (which Python turns into lone
surrogates) through the arguments. A CLI call costs ~0.7 s of imports, so each example runs its
cases as concurrent processes and the example counts are small (DURAPIPE_SWEEP_SCALE=10
multiplies them for a longer sweep); the Client sweep (test_bad_input_sweep.py) goes wide
in-process.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import re
import subprocess
import sys
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import PIPELINES, cli_env
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

# A failing example may hold a megabyte: hypothesis warns about printing it, and -W error
# would turn that warning into the failure instead of the real one.
pytestmark = pytest.mark.filterwarnings("ignore:Generating overly large repr")

SWEEP = str(PIPELINES / "sweep.py")
MAX_VALUE_BYTES = 1_000_000  # docs/guarantees.md: values over 1 MB encoded are refused
ARG_MAX_ONE = 120_000  # Linux takes at most 128 KiB in one argument
STATUSES = (
    "pending running sleeping waiting stopped blocked completed failed cancelled aborted".split()
)


SCALE = float(os.environ.get("DURAPIPE_SWEEP_SCALE", "1"))


def cli_settings(n: int) -> Any:
    return settings(
        max_examples=max(1, round(n * SCALE)),
        deadline=None,
        suppress_health_check=[
            HealthCheck.function_scoped_fixture,
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
            HealthCheck.large_base_example,
        ],
    )


Arg = str | bytes


@dataclass
class Result:
    args: Sequence[Arg]
    code: int
    out: str
    err: str

    def __str__(self) -> str:
        args = [a if len(a) < 200 else f"{a[:100]!r}... ({len(a)} long)" for a in self.args]
        return f"durapipe {args!r} -> {self.code}\nstdout: {self.out[-2000:]}\nstderr: {self.err[-3000:]}"


def _cli(db_url: str, cwd: Path, cases: list[tuple[Sequence[Arg], bytes | None]]) -> list[Result]:
    """Run every case as its own ``python -m durapipe`` process, all at once."""

    def one(case: tuple[Sequence[Arg], bytes | None]) -> Result:
        args, stdin = case
        p = subprocess.run(
            [sys.executable, "-m", "durapipe", *args],
            input=stdin if stdin is not None else b"",
            capture_output=True,
            timeout=60,
            cwd=cwd,
            env=cli_env(db_url),
        )
        dec = lambda b: b.decode("utf-8", "backslashreplace")  # noqa: E731
        return Result(args, p.returncode, dec(p.stdout), dec(p.stderr))

    with ThreadPoolExecutor(len(cases)) as pool:
        return list(pool.map(one, cases))


def refused(r: Result) -> bool:
    """Non-zero, exactly one ``error: ...`` line on stderr, no traceback anywhere."""
    assert "Traceback" not in r.err and "Traceback" not in r.out, str(r)
    lines = r.err.splitlines()
    ok = r.code != 0 and len(lines) == 1 and lines[0].startswith("error: ")
    return ok


def assert_refused(r: Result) -> None:
    assert refused(r), str(r)


def assert_ok(r: Result) -> None:
    assert "Traceback" not in r.err and "Traceback" not in r.out, str(r)
    assert r.code == 0, str(r)


def child_view(arg: Arg) -> str:
    """The str the CLI process sees for an argument (bytes not UTF-8 become lone surrogates)."""
    return os.fsdecode(arg)


def storable(text: str) -> bool:
    if "\x00" in text:
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


# ---------------------------------------------------------------------- the database, before/after


def snapshot(db_url: str) -> dict[str, set[tuple[Any, ...]]]:
    """Every row of the tables that hold runs (workers and logs are not the runs' state)."""
    from sqlalchemy import select

    from durapipe._store import open_store
    from durapipe._store import schema as S

    async def go() -> dict[str, set[tuple[Any, ...]]]:
        store = await open_store(db_url)
        try:

            def read(conn: Any) -> dict[str, set[tuple[Any, ...]]]:
                return {
                    t.name: {tuple(r) for r in conn.execute(select(t)).all()}
                    for t in (S.runs, S.events, S.inputs, S.holds)
                }

            return await store.run_read(read)
        finally:
            await store.close()

    return asyncio.run(go())


def run_rows(snap: dict[str, set[tuple[Any, ...]]], run_ids: set[str]) -> dict[str, set[Any]]:
    """The rows of a snapshot that belong to ``run_ids`` (runs, events, inputs)."""
    return {
        "durapipe_runs": {r for r in snap["durapipe_runs"] if r[0] in run_ids},
        "durapipe_events": {r for r in snap["durapipe_events"] if r[0] in run_ids},
        "durapipe_inputs": {r for r in snap["durapipe_inputs"] if r[1] in run_ids},
    }


def without(
    snap: dict[str, set[tuple[Any, ...]]], run_ids: set[str], tables: Sequence[str] = ()
) -> dict[str, set[tuple[Any, ...]]]:
    mine = run_rows(snap, run_ids)
    return {t: rows - mine.get(t, set()) for t, rows in snap.items() if t not in tables}


def start_target(db_url: str) -> str:
    """A pending run every example leaves alone (or changes only as asked)."""
    import durapipe as dp
    from durapipe._definition import load_target

    async def go() -> str:
        async with await dp.Client.connect(db_url) as c:
            return await c.start(load_target(f"{SWEEP}:echo"), run_id="target", a=1, b="two")

    return asyncio.run(go())


# ---------------------------------------------------------------------- strategies

no_nul = st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",))
argv_text = st.text(no_nul, max_size=30)
not_utf8 = st.binary(min_size=1, max_size=12).filter(lambda b: b"\x00" not in b)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=8,
)
json_text = json_values.map(lambda v: json.dumps(v, ensure_ascii=False))  # NUL comes out escaped
json_ish = st.sampled_from(
    [
        "NaN", "-Infinity", "1e999", "-0", "0x10", "[1,", '{"a":', "'x'", "nul", " true ", "",
        '"\\u0000"', '"\\ud800"', '{"\\u0000": 1}', "1" * 5000, "[" * 3000 + "]" * 3000,
        "[" * 50_000, '{"k": ' + "[" * 50_000 + "}", "ключ=значение", "😀", "\u202e", "a\nb",
    ]
)  # fmt: skip
arg_value = json_text | json_ish | argv_text
names = (
    st.sampled_from(["n", "a", "ключ", "_x1", " n ", "1x", "", "a-b", "a b", "ﬁ", "k="]) | argv_text
)


def _pair(k: str, sep: str, v: str) -> str:
    return k + sep + v


input_arg: st.SearchStrategy[Arg] = (
    st.builds(_pair, names, st.sampled_from(["=", "=", "=", ":", "=="]), arg_value)
    | st.builds(lambda k, v: k.encode() + b"=" + v, names, not_utf8)
    | argv_text
)
input_json = (
    st.none()
    | json_text
    | json_ish
    | st.dictionaries(names, json_values, max_size=3).map(json.dumps)
)
HUGE = [f"k{j}=" + "x" * ARG_MAX_ONE for j in range(9)]  # ~1.08 MB of inputs in 9 arguments


def _not_json(name: str) -> Any:
    raise ValueError(name)


def expected_inputs(pairs: Sequence[Arg], blob: Arg | None) -> dict[str, Any] | None:
    """What ``start --input ... --input-json ...`` should store, per the docs; None: refused."""
    out: dict[str, Any] = {}
    if blob:
        try:
            data = json.loads(child_view(blob))
        except (ValueError, RecursionError):
            return None
        if not isinstance(data, dict):
            return None
        out.update(data)
    for arg in pairs:
        key, sep, value = child_view(arg).partition("=")
        key = key.strip()
        if not sep or not key.isidentifier() or "\x00" in value:
            return None
        try:
            out[key] = json.loads(value, parse_constant=_not_json)  # NaN is not JSON: a string
        except ValueError:
            out[key] = value
        except RecursionError:
            return None
    try:  # a float that is not finite (1e999, or NaN in --input-json) is refused
        text = json.dumps(out, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    except (ValueError, RecursionError):
        return None
    if not storable(text) or len(text.encode()) > MAX_VALUE_BYTES:
        return None
    return out


def _same_json(a: Any, b: Any) -> bool:  # NaN != NaN, but both encode the same
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


# ---------------------------------------------------------------------- --input and --input-json


def test_start_with_any_inputs_stores_them_or_says_why(db_url: str, tmp_path: Path) -> None:
    start_target(db_url)
    case = st.tuples(st.lists(input_arg, max_size=3) | st.just(HUGE), st.none() | input_json)

    @cli_settings(3)
    @given(cases=st.lists(case, min_size=2, max_size=2))
    def sweep(cases: list[tuple[list[Arg], Arg | None]]) -> None:
        before = snapshot(db_url)
        argvs = []
        for pairs, blob in cases:
            args: list[Arg] = ["start", f"{SWEEP}:echo"]
            for p in pairs:
                args += ["--input", p]
            if blob is not None:
                args += ["--input-json", blob]
            argvs.append((args, None))
        results = _cli(db_url, tmp_path, argvs)
        created: dict[str, dict[str, Any]] = {}
        for (pairs, blob), r in zip(cases, results, strict=True):
            want = expected_inputs(pairs, blob)
            if want is None:
                assert_refused(r)
                continue
            assert_ok(r)
            rid = r.out.strip()
            assert rid.startswith("run_"), str(r)
            created[rid] = want
        after = snapshot(db_url)
        assert without(after, set(created)) == before  # nothing else changed
        runs = {row[0]: row for row in after["durapipe_runs"] if row[0] in created}
        assert set(runs) == set(created)
        for rid, want in created.items():
            stored = json.loads(runs[rid][6])  # the inputs column, as show --json gives it
            assert _same_json(stored, want), (stored, want)

    sweep()


# ---------------------------------------------------------------------- run ids and names

HOLE = "\0hole"
TEMPLATES: list[list[str]] = [
    ["show", HOLE, "--json"],
    ["logs", HOLE],
    ["result", HOLE],
    ["result", HOLE, "--wait", "--timeout", "5"],
    ["input", HOLE, "k", "1"],
    ["stop", HOLE],
    ["stop", HOLE, "--now"],
    ["cancel", HOLE],
    ["resume", HOLE, "--detach"],
    ["resume", HOLE],
    ["list", "--json", "--pipeline", HOLE],
    ["list", "--json", "--status", HOLE],
    ["list", "--json", "--limit", HOLE],
    ["stop", "--pipeline", HOLE],
    ["stop", "--pipeline", "somepipe", "--version", HOLE],
    ["resume", "--pipeline", HOLE],
    ["start", f"{SWEEP}:echo", "--run-id", HOLE],
    ["run", f"{SWEEP}:echo", "--run-id", HOLE],
    # messages, published state
    ["send", HOLE, "t", "1"],
    ["events", HOLE, "--json"],
    ["events", HOLE, "--wait", "k", "--timeout", "1"],
    ["fork", HOLE, "--start"],
    ["edit", HOLE, "1", "--result", "1", "--reason", "x"],
]
holes: st.SearchStrategy[Arg] = (
    argv_text
    | not_utf8
    | st.sampled_from(["target ", " target", "TARGET", "targe", "target\n", "-1", "0", "7", "nan"])
    | st.sampled_from(
        ["99999999999999999999", "١٢", "1_0", "run_" + "0" * 20, "a" * 128, "a" * 129]
    )
    | st.integers(130, 5000).map(lambda n: "r" * n)
    | st.sampled_from(STATUSES)
)


def _int_or_none(text: str) -> int | None:
    try:
        return int(text)
    except ValueError:
        return None


def check_hole(template: list[str], arg: Arg, r: Result, existing: set[str]) -> set[str]:
    """Judge one case. -> run ids it may have created."""
    x = child_view(arg)
    verb = template[0]
    if template[1] == HOLE:  # a run named by an id that no run has
        assert x not in existing
        assert_refused(r)
        return set()
    if template[:2] == ["list", "--json"]:
        opt = template[2]
        if opt == "--pipeline":
            assert_ok(r)
            assert json.loads(r.out) == []  # no run has such a pipeline
        elif opt == "--status":
            if x in STATUSES:
                assert_ok(r)
                assert all(v["status"] == x for v in json.loads(r.out))
            else:
                assert_refused(r)
        else:
            n = _int_or_none(x)
            if n is None or n < 0:
                assert_refused(r)
            elif re.fullmatch(r"[0-9]+", x) or r.code == 0:  # typer may refuse "١٢" or "1_0"
                assert_ok(r)
                assert len(json.loads(r.out)) <= n
            else:
                assert_refused(r)
        return set()
    if verb in ("stop", "resume") and "--pipeline" in template:
        value_ok = 0 < len(x) <= (100 if "--version" in template else 200) and storable(x)
        if not value_ok:
            assert_refused(r)
        elif verb == "stop":
            assert_ok(r)
        elif r.code != 0:
            assert_refused(r)  # not held: said so
        return set()
    # start / run with --run-id
    valid = re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.:\-]{0,127}", x) is not None
    if not valid:
        assert_refused(r)
        return set()
    if verb == "start":
        assert_ok(r)
        assert r.out.strip() == x
    else:  # run: executes it here, or says it exists already
        assert "Traceback" not in r.err, str(r)
        assert r.code == 0, str(r)
    return {x}


def test_commands_with_any_run_id_or_name_refuse_cleanly(db_url: str, tmp_path: Path) -> None:
    start_target(db_url)
    case = st.tuples(st.sampled_from(range(len(TEMPLATES))), holes)

    @cli_settings(3)
    @given(cases=st.lists(case, min_size=2, max_size=2))
    def sweep(cases: list[tuple[int, Arg]]) -> None:
        before = snapshot(db_url)
        existing = {row[0] for row in before["durapipe_runs"]} | {"echo"}
        for _, arg in cases:  # here every id and name names nothing that exists
            assume(child_view(arg).strip() not in existing and child_view(arg) != "--help")
        argvs = [([arg if a == HOLE else a for a in TEMPLATES[t]], None) for t, arg in cases]
        results = _cli(db_url, tmp_path, argvs)
        created: set[str] = set()
        for (t, arg), r in zip(cases, results, strict=True):
            created |= check_hole(TEMPLATES[t], arg, r, existing)
        after = snapshot(db_url)
        unchanged = without(after, created, tables=("durapipe_holds",))
        assert unchanged == without(before, set(), tables=("durapipe_holds",))
        held = {
            "somepipe" if "--version" in TEMPLATES[t] else child_view(a)
            for t, a in cases
            if TEMPLATES[t][:2] == ["stop", "--pipeline"]
        }
        holds_before = {h[0] for h in before["durapipe_holds"]}
        assert {h[0] for h in after["durapipe_holds"]} <= holds_before | held

    sweep()


# ---------------------------------------------------------------------- pipeline targets


def _targets(tmp_path: Path) -> st.SearchStrategy[Arg]:
    (tmp_path / "broken.py").write_text("def (:\n")
    (tmp_path / "raises.py").write_text("raise RuntimeError('first line\\nsecond line')\n")
    (tmp_path / "notpy.txt").write_text("hello\n")
    (tmp_path / "empty.py").write_text("X = 1\n")
    (tmp_path / "adir").mkdir(exist_ok=True)
    (tmp_path / "two.py").write_text(
        "import durapipe as dp\n\n@dp.pipeline\nasync def a():\n    return 1\n\n"
        "@dp.pipeline\nasync def b():\n    return 2\n"
    )
    files = [
        SWEEP, "broken.py", "raises.py", "notpy.txt", "empty.py", "adir", "two.py",
        "nofile.py", "/nonexistent/x.py", str(tmp_path / "adir" / "x.py"), "json", "os.path",
        "no_such_module_q", ".relative", "a..b", "x.", "", "1x", "-m", "--json",
    ]  # fmt: skip
    attrs = (
        st.sampled_from(["echo", "", "nope", "echo.x", "json", "X", "a", "__name__"]) | argv_text
    )
    spec = (
        st.sampled_from(files)
        | argv_text.map(lambda s: f"no_such_{s}")
        | argv_text.map(lambda s: str(tmp_path / f"{s}.py"))
    )
    return (
        st.builds(lambda f, sep, a: f + sep + a, spec, st.sampled_from([":", ":", "", "::"]), attrs)
        | not_utf8.map(lambda b: os.fsencode(str(tmp_path)) + b"/" + b + b".py:echo")
        | st.just(f"{SWEEP}:echo")
    )


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)  # nothing stored until it loads
def test_start_and_run_with_any_target_load_it_or_say_why(db_url: str, tmp_path: Path) -> None:
    targets = _targets(tmp_path)

    @cli_settings(3)
    @given(
        cases=st.lists(
            st.tuples(st.sampled_from(["start", "run"]), targets), min_size=2, max_size=2
        )
    )
    def sweep(cases: list[tuple[str, Arg]]) -> None:
        before = snapshot(db_url)
        results = _cli(db_url, tmp_path, [([verb, target], None) for verb, target in cases])
        created = set()
        for r in results:
            if r.code == 0:  # only a target that names the echo pipeline loads
                assert "Traceback" not in r.err, str(r)
                rid = r.out.strip().splitlines()[0]
                created.add(rid)
            else:
                assert_refused(r)
        after = snapshot(db_url)
        assert without(after, created) == before
        for row in after["durapipe_runs"]:
            if row[0] in created:  # only targets that name a pipeline load
                assert row[1] in ("echo", "a"), row

    sweep()


# ---------------------------------------------------------------------- gc --older-than

UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
AGE = r"(?:(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)[smhdw])+"  # 30d, 1.5h, 1h30m; ASCII digits only


def gc_seconds(text: str) -> float | None:
    """The age ``gc --older-than`` means, per its help; None: it must refuse."""
    body = text.strip()
    if not re.fullmatch(AGE, body):
        return None
    seconds = sum(float(n) * UNITS[u] for n, u in re.findall(r"([0-9.]+)([smhdw])", body))
    return seconds if math.isfinite(seconds) else None


numbers = (
    st.floats().map(repr)
    | st.integers().map(str)
    | st.sampled_from(
        [
            "nan",
            "inf",
            "-inf",
            "NaN",
            "-0",
            "1e309",
            "0x10",
            "١٠٠٠٠",
            "1_000_000",
            " 7200",
            "",
            "-5",
        ]
    )
    | argv_text
)


def _not_recent(arg: Arg) -> Arg:
    """Valid ages under an hour would delete the test's run: make those invalid instead."""
    seconds = gc_seconds(child_view(arg))
    return arg if seconds is None or seconds >= 3600 else f"{child_view(arg)}?"


older_than: st.SearchStrategy[Arg] = (
    st.builds(lambda n, u: n + u, numbers, st.sampled_from(list(UNITS)) | argv_text) | not_utf8
).map(_not_recent)


def test_gc_with_any_age_deletes_only_what_is_older(db_url: str, tmp_path: Path) -> None:
    done = _cli(db_url, tmp_path, [(["run", f"{SWEEP}:echo", "--input", "a=1"], None)])[0]
    assert_ok(done)

    @cli_settings(2)
    @given(cases=st.lists(older_than, min_size=2, max_size=2))
    def sweep(cases: list[Arg]) -> None:
        before = snapshot(db_url)
        for arg, r in zip(
            cases,
            _cli(db_url, tmp_path, [(["gc", "--older-than", a], None) for a in cases]),
            strict=True,
        ):
            if gc_seconds(child_view(arg)) is None:
                assert_refused(r)
            else:  # an hour or more: the run finished seconds ago stays
                assert_ok(r)
                assert r.out.strip() == "deleted 0 finished runs", str(r)
        assert snapshot(db_url) == before

    sweep()


# ---------------------------------------------------------------------- input values on stdin

stdin_values = (
    st.binary(max_size=40)  # NUL, bytes that are not UTF-8
    | json_text.map(lambda s: s.encode())
    | json_ish.map(lambda s: s.encode())
    | st.sampled_from(
        [
            b'"' + b"x" * (MAX_VALUE_BYTES + 10) + b'"',  # over the limit
            b"y" * (MAX_VALUE_BYTES - 2),  # a string of exactly the limit once quoted
            b"a\x00b",
            b"\xff\xfe",
        ]
    )
)
input_names: st.SearchStrategy[Arg] = (
    st.just("k") | argv_text | not_utf8 | st.sampled_from(["x" * 200, "x" * 201, "ключ"])
)


def expected_value(raw: bytes) -> tuple[bool, Any]:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return False, None
    try:
        value: Any = json.loads(text, parse_constant=_not_json)
    except ValueError:
        value = text
    except RecursionError:
        return False, None
    try:
        enc = json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    except (ValueError, RecursionError):
        return False, None
    return storable(enc) and len(enc.encode()) <= MAX_VALUE_BYTES, value


def test_input_from_stdin_is_stored_or_refused(db_url: str, tmp_path: Path) -> None:
    rid = start_target(db_url)

    @cli_settings(2)
    @given(cases=st.lists(st.tuples(input_names, stdin_values), min_size=2, max_size=2))
    def sweep(cases: list[tuple[Arg, bytes]]) -> None:
        before = snapshot(db_url)
        results = _cli(db_url, tmp_path, [(["input", rid, name, "-"], raw) for name, raw in cases])
        sent = []
        for (name, raw), r in zip(cases, results, strict=True):
            key = child_view(name)
            ok, value = expected_value(raw)
            if ok and 0 < len(key) <= 200 and storable(key):
                assert_ok(r)
                sent.append((key, value))
            else:
                assert_refused(r)
        after = snapshot(db_url)
        assert without(after, set(), tables=("durapipe_inputs",)) == without(
            before, set(), tables=("durapipe_inputs",)
        )
        new = after["durapipe_inputs"] - before["durapipe_inputs"]
        assert before["durapipe_inputs"] <= after["durapipe_inputs"]
        got = sorted((row[2], json.dumps(json.loads(row[3]), sort_keys=True)) for row in new)
        assert got == sorted((k, json.dumps(v, sort_keys=True)) for k, v in sent)

    sweep()
