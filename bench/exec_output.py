"""An exec printing 100,000 lines: durapipe's run vs the raw command, time and peak memory.

    python bench/exec_output.py [--lines 100000] [--reps 3]

Both write to a pipe that is drained (as a CI log or `| tee` would); durapipe also stores every
line in the database and keeps the last 64 KiB of each stream in the history.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PIPELINE = '''
import durapipe as dp

@dp.pipeline(version="1")
async def loud(lines: int) -> int:
    res = await dp.exec("seq", "1", str(lines))
    return res.exit_code
'''


def timed(cmd: list[str], env: dict[str, str], cwd: str) -> tuple[float, int]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    t0 = time.perf_counter()
    subprocess.run(cmd, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, check=True)
    dt = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return dt, max(peak, before)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--lines", type=int, default=100_000)
    ap.add_argument("--reps", type=int, default=3)
    a = ap.parse_args()
    work = tempfile.mkdtemp()
    Path(work, "loud.py").write_text(PIPELINE)
    env = dict(os.environ, DURAPIPE_DATABASE_URL=f"sqlite:///{work}/bench.db", NO_COLOR="1")
    env["PYTHONPATH"] = str(Path(__file__).resolve().parent.parent)
    raw, ours, rss = [], [], 0
    for _ in range(a.reps):
        raw.append(timed(["seq", "1", str(a.lines)], env, work)[0])
        dt, peak = timed([sys.executable, "-m", "durapipe", "run", "loud.py:loud", "--input", f"lines={a.lines}"], env, work)
        ours.append(dt)
        rss = max(rss, peak)
    idle = timed([sys.executable, "-m", "durapipe", "run", "loud.py:loud", "--input", "lines=1"], env, work)[0]
    print(f"raw `seq 1 {a.lines}`: median {statistics.median(raw) * 1000:.0f} ms")
    print(f"durapipe run (same command): median {statistics.median(ours) * 1000:.0f} ms "
          f"(a 1-line run costs {idle * 1000:.0f} ms: interpreter start, imports, database)")
    print(f"durapipe's cost per line: {(statistics.median(ours) - idle) / a.lines * 1e6:.1f} µs; peak RSS {rss / 1024:.0f} MB")


if __name__ == "__main__":
    main()
