"""Pipelines the web UI's browser tests drive."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import durapipe as dp

PRINT_SECRET = "import os; print('token is', os.environ['K'])"


@dp.step
def prepare(release: str) -> dict:
    return {"release": release, "files": 3}


@dp.pipeline(version="1")
async def ship(release: str = "v1.2.3") -> dict:
    """Asks for approval, then prints a line (after the page loaded) and a secret."""
    plan = await prepare(release)
    await dp.exec(sys.executable, "-c", "print('built <b>" + release + "</b>')")
    ok = await dp.await_input("approve", prompt=f"Ship {release} to production?")
    key = dp.secret("UI_SECRET")
    await dp.exec(sys.executable, "-c", PRINT_SECRET, env={"K": key})
    await dp.exec(sys.executable, "-c", f"print('shipped {release}: approved={ok}')")
    return {"shipped": bool(ok), **plan}


@dp.step
async def tick(i: int) -> int:
    return i


@dp.pipeline(version="1")
async def ticking(n: int = 400) -> int:
    """A long run of short steps that waits on $SIDE_DIR/go at step 3 (so it can be stopped)."""
    total = 0
    for i in range(n):
        total += await tick(i)
        if i == 3:
            await dp.exec(
                sys.executable,
                "-c",
                "import os, time, pathlib\n"
                "p = pathlib.Path(os.environ['SIDE_DIR']) / 'go'\n"
                "while not p.exists(): time.sleep(0.05)",
                env={"SIDE_DIR": os.environ.get("SIDE_DIR", str(Path.cwd()))},
            )
    return total


@dp.pipeline(version="1")
async def family() -> int:
    """A parent with a child (the run tree)."""
    got = await dp.run_subpipeline(ticking, n=2)
    return int(got)
