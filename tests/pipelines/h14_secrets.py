"""Pipelines for the Hardening (#14) tests of secrets, terminal output and non-finite floats."""

from __future__ import annotations

import json
import sys

import durapipe as dp

# Prints the secret in $K raw and JSON-escaped; then, with $FAIL, to stderr and exits 3.
SHOW = """
import json, os, sys
k = os.environ["K"]
print("raw:", k)
print("json:", json.dumps({"key": k}))
if os.environ.get("FAIL"):
    sys.stderr.write("bad key " + k + " " + json.dumps(k) + "\\n")
    sys.exit(3)
"""

# $K straddles the 256 KiB split of a long line (the line is too long to be held whole), and is
# printed again so that the 64 KiB tail kept in the history starts in its middle.
LONG = """
import os, sys
k = os.environ["K"]
half = len(k) // 2
MAX_LINE, KEEP, READ = (int(x) for x in sys.argv[1:4])
sys.stdout.write("x" * (MAX_LINE - half) + k + "w" * (READ + 10) + "\\n")
sys.stdout.write(k + "\\n" + "z" * (KEEP - (len(k) - half) - 2) + "\\n")
"""


@dp.step
def echo_back(value: str) -> dict:
    return {"raw": value, "as_json": json.dumps({"key": value})}


@dp.step
def reject(value: str) -> None:
    raise ValueError(f"rejected key {value!r} (as JSON {json.dumps(value)})")


@dp.pipeline(version="1")
async def escaped(fail: str = "") -> dict:
    key = dp.secret("DP_PEM")
    await dp.exec(sys.executable, "-c", SHOW, env={"K": key})
    got = await echo_back(key.reveal())
    dp.logger.info("key is %s; as JSON %s", key.reveal(), json.dumps(key.reveal()))
    if fail == "exec":
        await dp.exec(sys.executable, "-c", SHOW, env={"K": key, "FAIL": "1"})
    if fail == "step":
        await reject(key.reveal())
    return {"key": key.reveal(), "as_json": json.dumps(key.reveal()), "got": got}


@dp.pipeline(version="1")
async def escaped_tree() -> None:
    """Two children fail with the secret in their errors (a command's stderr, a step's
    exception); then this run fails quoting it."""
    key = dp.secret("DP_PEM")
    for how in ("exec", "step"):
        try:
            await dp.run_subpipeline(escaped, fail=how)
        except dp.SubpipelineFailed:
            pass
    raise RuntimeError(f"cannot use {key.reveal()!r}")


@dp.pipeline(version="1")
async def long_output() -> int:
    from durapipe import _exec

    key = dp.secret("DP_SPLIT")
    sizes = [str(n) for n in (_exec.MAX_LINE, _exec.KEEP_BYTES, _exec.READ_SIZE)]
    res = await dp.exec(sys.executable, "-c", LONG, *sizes, env={"K": key})
    return len(res.stdout)


@dp.pipeline(version="1")
async def control_chars(fail: bool = False) -> str:
    script = (
        r"printf 'title\033]0;pwned\007 clear\033[2J\tTAB del\177 csi\302\233''31m end\n'; "
        r"printf 'err\033[31mred\n' >&2"
    )
    await dp.exec("sh", "-c", script)
    if fail:
        await dp.exec("sh", "-c", r"printf 'boom\033[2J\033]0;pwned\007\n' >&2; exit 4")
    return "ok"


@dp.step
def nan_step() -> float:
    return float("nan")


@dp.pipeline(version="1")
async def nan_result() -> float:
    return await nan_step()


@dp.pipeline(version="1")
async def inf_output() -> dict:
    return {"ratio": float("inf")}


@dp.pipeline(version="1")
async def echo_input(x: object = None) -> object:
    return x
