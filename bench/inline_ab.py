"""A/B of the SQLite in-place commit: alternate 1,000-step runs with it on and off.

    python bench/inline_ab.py [--pairs 6]

Each measurement is a fresh process (a fresh database in a temporary folder); the two modes
alternate so both see the same disk. Set DURAPIPE_SQLITE_SYNCHRONOUS=OFF to see the CPU part
alone. DURAPIPE_NO_INLINE_COMMIT=1 turns the in-place commit off (every step is handed to the
journal task, as before).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def one() -> None:
    sys.path.insert(0, str(HERE))
    import core

    from durapipe._store import open_store
    from durapipe.testing import run_pipeline

    async def main() -> None:
        store = await open_store(f"sqlite:///{tempfile.mkdtemp()}/ab.db", migrate=True)
        try:
            await run_pipeline(store, core.many_steps, n=300)  # warm up
            t0 = time.perf_counter()
            await run_pipeline(store, core.many_steps, n=1000)
            print((time.perf_counter() - t0) / 1000 * 1e6)
        finally:
            await store.close()

    asyncio.run(main())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pairs", type=int, default=6)
    ap.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.one:
        one()
        return
    res: dict[str, list[float]] = {"in place": [], "handed to the journal task": []}
    for _ in range(a.pairs):
        for mode in res:
            env = dict(os.environ)
            env.pop("DURAPIPE_NO_INLINE_COMMIT", None)
            if mode != "in place":
                env["DURAPIPE_NO_INLINE_COMMIT"] = "1"
            out = subprocess.run(
                [sys.executable, __file__, "--one"], env=env, capture_output=True, text=True
            )
            if out.returncode != 0:
                raise SystemExit(out.stderr)
            res[mode].append(float(out.stdout.strip()))
    sync = os.environ.get("DURAPIPE_SQLITE_SYNCHRONOUS", "FULL")
    for mode, v in res.items():
        print(
            f"{mode:28} µs/step (synchronous={sync}): median {statistics.median(v):.0f}  "
            f"[{', '.join(f'{x:.0f}' for x in v)}]"
        )


if __name__ == "__main__":
    main()
