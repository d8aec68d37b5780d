"""Pipelines of the child-handle, continue-as-new and tag tests (tests/*/test_handles*.py)."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import durapipe as dp


def _effect(line: str) -> None:
    fd = os.open(
        Path(os.environ["SIDE_DIR"]) / "effects", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644
    )
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


@dp.step
def effect(tag: str) -> str:
    _effect(tag)
    return tag


@dp.step
async def wait_file(name: str) -> str:
    """Wait until SIDE_DIR/NAME exists (the test creates it)."""
    _effect(f"{name}-waiting")
    flag = Path(os.environ["SIDE_DIR"]) / name
    while not flag.exists():
        await asyncio.sleep(0.05)
    return name


@dp.step
async def wait_effect(line: str) -> str:
    """Wait until the effects file holds ``line`` (another run wrote it)."""
    path = Path(os.environ["SIDE_DIR"]) / "effects"
    while not (path.exists() and line in path.read_text().splitlines()):
        await asyncio.sleep(0.05)
    return line


@dp.pipeline(version="1")
async def kid(i: int) -> int:
    await effect(f"kid {i}")
    return i * 10


@dp.pipeline(version="1")
async def five_kids() -> int:
    """Starts 5 children without waiting; waits for a file after the third; sums them."""
    handles: list[dp.ChildHandle[int]] = []
    for i in range(5):
        handles.append(await dp.start_subpipeline(kid, i=i))
        if i == 2:
            await wait_file("go")
    return sum([await h.result() for h in handles])


@dp.pipeline(version="1")
async def lingering(name: str) -> str:
    try:
        await wait_file(name)
    finally:
        _effect(f"lingering {name} unwound")
    await effect(f"lingering {name} done")
    return f"{name} done"


@dp.pipeline(version="1")
async def leaves_children() -> dict[str, str]:
    """Starts one detached and one attached child and returns without waiting for either."""
    kept = await dp.start_subpipeline(lingering, name="kept", run_id="kept-child", detached=True)
    dropped = await dp.start_subpipeline(lingering, name="dropped")
    # The attached child is running (not only started) when this ends, so that its
    # cancellation unwinds it; a child cancelled before it ran has nothing to unwind.
    await wait_effect("dropped-waiting")
    return {"kept": kept.run_id, "dropped": dropped.run_id}


@dp.pipeline(version="1")
async def cancels_child() -> str:
    h = await dp.start_subpipeline(lingering, name="victim")
    await h.cancel()
    try:
        await h.result()
    except dp.SubpipelineFailed as exc:
        return f"child {exc.error['type']}"
    return "not cancelled"


@dp.pipeline(version="1")
async def chain(n: int = 0, links: int = 50) -> int:
    """Continues as new until it has made ``links`` runs; returns how many it counted."""
    if n == 0:
        await dp.tag(chain="yes")
    await effect(f"link {n}")
    if n + 1 < links:
        await dp.continue_as_new(n=n + 1, links=links)
    return n + 1


@dp.pipeline(version="1")
async def parks_at_the_end(n: int = 0, links: int = 3) -> str:
    """Continues ``links - 1`` times, then waits for an input (stop/cancel it there)."""
    if n + 1 < links:
        await dp.continue_as_new(n=n + 1, links=links)
    try:
        return str(await dp.await_input("go"))
    finally:
        _effect(f"link {n} unwound")


@dp.pipeline(version="1")
async def child_chain() -> int:
    """A parent waiting for a child that continues as new."""
    return await dp.run_subpipeline(chain, links=3)


@dp.pipeline(version="1")
async def tagged(customer: str) -> str:
    await dp.tag(customer=customer, tier="gold")
    await dp.tag(tier="platinum")
    return customer


@dp.pipeline(version="1")
async def bad_continue() -> None:
    await dp.continue_as_new(nope=1)


@dp.pipeline(version="1")
async def bad_start() -> None:
    await dp.start_subpipeline(kid, nope=1)  # type: ignore[call-arg]


@dp.pipeline(version="1")
async def taken_id(other: str) -> None:
    await dp.start_subpipeline(kid, i=1, run_id=other)


@dp.pipeline(version="1")
async def bad_tag() -> None:
    await dp.tag(**{"not a key": "x"})
