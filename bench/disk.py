"""The disk's own floor under "no step commit delayed more than 50 ms" (issue #21, item 2).

A durable commit ends with one fsync of the write-ahead log, so no database on this disk can
promise a shorter step than that fsync's longest time. This measures it without any database:
one thread appends 4 KB and calls ``fdatasync`` back to back (a committer, as the worker's
journal does), alone and then while a second thread writes MB_PER_S in 256 KB blocks, each
followed by ``fdatasync`` (a bulk writer, as gc's deletes, VACUUM or a checkpoint are).

    python bench/disk.py [--seconds 60] [--rates 0,2,4,8,11] [--dir DIR] [--md FILE]

DIR defaults to the system's temporary directory (put it on the disk the database uses).
Standard library only; ~SECONDS × len(RATES) long.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import threading
import time
from pathlib import Path

BLOCK = 4096  # one commit's WAL frames
BULK = 256 * 1024
WRAP = 64 * 2**20  # files start over at 64 MB, so the run needs no disk space to speak of


def _bulk_writer(path: Path, rate: float, stop: threading.Event) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    buf, written, interval = os.urandom(BULK), 0, BULK / (rate * 2**20)
    try:
        while not stop.is_set():
            began = time.monotonic()
            os.write(fd, buf)
            os.fdatasync(fd)
            written += BULK
            if written >= WRAP:
                os.lseek(fd, 0, os.SEEK_SET)
                written = 0
            stop.wait(max(0.0, interval - (time.monotonic() - began)))
    finally:
        os.close(fd)


def committer(folder: Path, seconds: float, rate: float) -> dict[str, float]:
    """fdatasync latencies (ms) of 4 KB appends for ``seconds``, with a writer of ``rate`` MB/s."""
    stop = threading.Event()
    bulk = threading.Thread(
        target=_bulk_writer, args=(folder / "bulk.dat", rate, stop), daemon=True
    )
    if rate:
        bulk.start()
    fd = os.open(folder / "commits.dat", os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    lat: list[float] = []
    block, written = b"c" * BLOCK, 0
    end = time.monotonic() + seconds
    try:
        while time.monotonic() < end:
            began = time.perf_counter()
            os.write(fd, block)
            os.fdatasync(fd)
            lat.append((time.perf_counter() - began) * 1000)
            written += BLOCK
            if written >= WRAP:
                os.lseek(fd, 0, os.SEEK_SET)
                written = 0
    finally:
        stop.set()
        os.close(fd)
        if rate:
            bulk.join()
    lat.sort()
    n = len(lat)
    return {
        "rate": rate,
        "n": n,
        "p50": lat[n // 2],
        "p99": lat[int(n * 0.99)],
        "p999": lat[int(n * 0.999)],
        "max": lat[-1],
        "over50": sum(1 for x in lat if x > 50),
    }


def markdown(rows: list[dict[str, float]], seconds: float, folder: Path) -> str:
    out = [
        f"`python bench/disk.py --seconds {seconds:g}` in {folder} "
        f"({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}): a 4 KB append + "
        "`fdatasync`, back to back, beside a writer of the given rate.",
        "",
        "| bulk writer | commits | p50 ms | p99 ms | p99.9 ms | max ms | over 50 ms |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        writer = f"{r['rate']:g} MB/s" if r["rate"] else "none"
        out.append(
            f"| {writer} | {r['n']:,} | {r['p50']:.2f} | {r['p99']:.2f} | {r['p999']:.2f} "
            f"| {r['max']:.1f} | {r['over50']} |"
        )
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--rates", default="0,2,4,8,11", help="bulk writer MB/s, comma-separated")
    ap.add_argument("--dir", default=tempfile.gettempdir())
    ap.add_argument("--md", help="write the markdown table to this file")
    a = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(dir=a.dir, prefix="dp-disk-") as tmp:
        for rate in (float(x) for x in a.rates.split(",")):
            rows.append(committer(Path(tmp), a.seconds, rate))
            r = rows[-1]
            print(
                f"writer {rate:g} MB/s: p99 {r['p99']:.2f} ms, max {r['max']:.1f} ms, "
                f"{r['over50']} over 50 ms",
                flush=True,
            )
    md = markdown(rows, a.seconds, Path(a.dir))
    print(md)
    if a.md:
        Path(a.md).write_text(md + "\n")


if __name__ == "__main__":
    main()
