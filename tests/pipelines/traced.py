"""Pipelines the tracing and metrics tests run."""

from __future__ import annotations

import sys

import durapipe as dp


@dp.step
async def prepare(n: int) -> int:
    return n + 1


@dp.step
async def build(n: int) -> int:
    return n * 2


@dp.step
async def publish(n: int) -> int:
    return n + 100


@dp.pipeline
async def traced_child(n: int) -> int:
    return await prepare(n)


@dp.pipeline
async def traced(n: int = 1, out: str = "") -> int:
    """prepare, a child, an exec that records its TRACEPARENT, build, publish."""
    a = await prepare(n)
    b = await dp.run_subpipeline(traced_child, n=a)
    if out:
        await dp.exec(sys.executable, "-c", _WRITE_TRACEPARENT, out)
    c = await build(b)
    return await publish(c)


_WRITE_TRACEPARENT = (
    "import os, sys; open(sys.argv[1], 'w').write(os.environ.get('TRACEPARENT', 'none'))"
)


@dp.pipeline
async def traced_quick(n: int = 1) -> int:
    return await build(n)
