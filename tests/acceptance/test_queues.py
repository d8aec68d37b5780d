"""Queues with real worker processes: limits held across workers, per key, per rate window,
by priority, and across a SIGKILL (SQLite and PostgreSQL)."""

from __future__ import annotations

import collections
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

from conftest import PIPELINES, client_call, side_effects, wait_until

QUEUES = str(PIPELINES / "queues.py")
FAST = {"DURAPIPE_LEASE_TTL": "2", "DURAPIPE_POLL_INTERVAL": "0.1"}


def _pdef(name: str) -> Any:
    from durapipe._definition import load_target

    return load_target(f"{QUEUES}:{name}")  # also declares the module's queues here


def _start(db_url: str, starts: list[dict[str, Any]], pipeline: str = "job") -> list[str]:
    pdef = _pdef(pipeline)

    async def fn(c: Any) -> list[str]:
        return [await c.start(pdef, **kw) for kw in starts]

    return client_call(db_url, fn)


def _rows(db_url: str, ids: list[str]) -> list[Any]:
    return client_call(db_url, lambda c: c.store.get_runs(ids))


def _events(db_url: str, rid: str) -> list[Any]:
    return client_call(db_url, lambda c: c.store.events(rid))


def _done(db_url: str, ids: list[str]) -> bool:
    return all(r.status == "completed" for r in _rows(db_url, ids))


def _workers(dp_spawn: Any, n: int) -> list[subprocess.Popen[str]]:
    return [dp_spawn("worker", "-m", QUEUES, "--concurrency", "20", env=FAST) for _ in range(n)]


def _stop(workers: list[subprocess.Popen[str]]) -> None:
    for w in workers:
        w.send_signal(signal.SIGTERM)
    for w in workers:
        out, err = w.communicate(timeout=30)
        assert w.returncode == 0, err[-3000:]


def _overlaps(rows: list[Any]) -> list[Any]:
    """For a failure message: the runs holding a slot at the busiest instant, with histories."""
    for r in rows:
        over = [o for o in rows if o.dequeued_at <= r.dequeued_at < o.finished_at]
        if len(over) > 2:
            return [(o.id, o.dequeued_at, o.finished_at, o.attempt, o.lease_owner) for o in over]
    return []


def _most_at_once(spans: list[tuple[float, float]]) -> int:
    """The most intervals open at one instant (an end before a start at the same instant)."""
    edges = sorted([(a, 1) for a, _ in spans] + [(b, -1) for _, b in spans])
    most = now = 0
    for _, step in edges:
        now += step
        most = max(most, now)
    return most


def test_four_workers_never_run_more_than_the_queues_concurrency(
    db_url: str, dp_spawn: Any
) -> None:
    ids = _start(db_url, [{"queue": "pair", "ms": 10} for _ in range(200)])
    workers = _workers(dp_spawn, 4)
    wait_until(lambda: _done(db_url, ids), timeout=90, interval=0.3, what="200 queued runs")
    rows = _rows(db_url, ids)
    import json

    ran = [tuple(json.loads(r.output)) for r in rows]  # when each run's code began and ended
    assert _most_at_once(ran) <= 2  # the pipelines' code: never more than two at once
    # The slots, by the rows' stamps: a run holds one from the claim that takes it off the line
    # (dequeued_at) to its end (finished_at). A take is stamped after it counted the slots in
    # use, and an end before it committed, so a take never precedes the end that made room.
    held = [(r.dequeued_at, r.finished_at) for r in rows]
    assert _most_at_once(held) == 2, _overlaps(rows)  # used, and not exceeded
    _stop(workers)


def test_per_key_concurrency_one_for_three_keys(db_url: str, dp_spawn: Any) -> None:
    keys = ["dev", "staging", "prod"]
    ids = _start(db_url, [{"queue": "envs", "key": keys[i % 3], "ms": 30} for i in range(30)])
    workers = _workers(dp_spawn, 2)
    wait_until(lambda: _done(db_url, ids), timeout=60, interval=0.3, what="30 keyed runs")
    rows = _rows(db_url, ids)
    by_key: dict[str, list[tuple[float, float]]] = collections.defaultdict(list)
    for r in rows:
        by_key[r.queue_key].append((r.dequeued_at, r.finished_at))
    for key in keys:
        assert _most_at_once(by_key[key]) == 1, key
    # The limit is per key: different keys ran side by side.
    assert _most_at_once([s for spans in by_key.values() for s in spans]) > 1
    _stop(workers)


def test_a_rate_of_five_per_second_is_held(db_url: str, dp_spawn: Any) -> None:
    ids = _start(db_url, [{"queue": "rated", "ms": 1} for _ in range(15)])
    workers = _workers(dp_spawn, 3)
    wait_until(lambda: _done(db_url, ids), timeout=60, interval=0.2, what="15 rated runs")
    taken = sorted(r.dequeued_at for r in _rows(db_url, ids))
    # Never more than 5 taken in any window of a second ...
    for i in range(len(taken) - 5):
        assert taken[i + 5] - taken[i] >= 1.0, taken
    # ... and the queue did not wait much longer than the rate asks (3 windows for 15 runs).
    assert taken[-1] - taken[0] < 2.0 + 1.5, taken
    _stop(workers)


def test_higher_priorities_are_served_first_fifo_within_one(db_url: str, dp_spawn: Any) -> None:
    prios = [1, 5, 1, 9, 5, 0, 9, 1]
    ids = _start(db_url, [{"queue": "ranked", "priority": p, "ms": 1} for p in prios])
    workers = _workers(dp_spawn, 2)
    wait_until(lambda: _done(db_url, ids), timeout=60, interval=0.2, what="8 ranked runs")
    rows = {r.id: r for r in _rows(db_url, ids)}
    served = sorted(ids, key=lambda rid: rows[rid].dequeued_at)
    expected = sorted(ids, key=lambda rid: (-prios[ids.index(rid)], ids.index(rid)))
    assert served == expected
    _stop(workers)


def test_children_wait_in_the_queue(db_url: str, dp_spawn: Any) -> None:
    (rid,) = _start(db_url, [{"n": 5}], pipeline="fan_out")
    workers = _workers(dp_spawn, 2)
    wait_until(lambda: _done(db_url, [rid]), timeout=60, interval=0.2, what="the fan-out")
    kids = client_call(db_url, lambda c: c.store.children(rid))
    assert len(kids) == 5 and {k.queue for k in kids} == {"pair"}
    assert _most_at_once([(k.dequeued_at, k.finished_at) for k in kids]) == 2
    _stop(workers)


def test_a_killed_workers_slot_frees_only_when_its_lease_expires(
    db_url: str, dp_spawn: Any, tmp_path: Path
) -> None:
    a, b = _start(
        db_url,
        [{"queue": "solo", "name": "a", "ms": 1500}, {"queue": "solo", "name": "b", "ms": 10}],
        pipeline="slow_job",
    )
    (w1,) = _workers(dp_spawn, 1)
    wait_until(lambda: side_effects(tmp_path, "began"), what="run a to begin")
    w1.send_signal(signal.SIGKILL)
    w1.wait(timeout=10)
    killed_at = time.time()
    expiry = _rows(db_url, [a])[0].lease_expires_at
    (w2,) = _workers(dp_spawn, 1)
    wait_until(lambda: _done(db_url, [a, b]), timeout=60, interval=0.2, what="a and b")
    ra, rb = _rows(db_url, [a, b])
    assert ra.attempt == 2  # taken over by the second worker
    assert rb.dequeued_at >= expiry > killed_at - 0.5  # b waited out a's lease ...
    assert rb.dequeued_at >= ra.finished_at  # ... and a's whole second try: a held the slot
    assert [line.split()[0] for line in side_effects(tmp_path, "began")] == ["a", "a", "b"]
    _stop([w2])


def test_list_and_show_say_where_a_queued_run_waits(db_url: str, dp_cli: Any) -> None:
    ids = _start(db_url, [{"queue": "pair"} for _ in range(3)])
    listed = dp_cli("list", check=True).stdout
    assert "queued in pair (0 ahead)" in listed and "queued in pair (2 ahead)" in listed
    shown = dp_cli("show", ids[1], check=True).stdout
    assert "Queued in pair (1 ahead): waiting for a slot" in shown
    import json

    table = json.loads(dp_cli("queues", "--json", check=True).stdout)
    pair = next(q for q in table if q["name"] == "pair")
    assert (pair["depth"], pair["running"], pair["concurrency"]) == (3, 0, 2)


def test_bad_queue_input_is_one_line_and_changes_nothing(db_url: str, dp_cli: Any) -> None:
    import json

    dp_cli("queue", "set", "deploys", "--concurrency", "2", "--rate", "10/1m", check=True)
    for args, says in (
        (["--concurrency", "0"], "concurrency must be at least 1"),
        (["--key-concurrency", "-1"], "key_concurrency must be at least 1"),
        (["--rate", "5"], "a rate is N/DURATION"),
        (["--rate", "5/soon"], "a rate window is"),
    ):
        p = dp_cli("queue", "set", "deploys", *args)
        assert p.returncode == 1, p
        assert p.stderr.startswith("error: ") and says in p.stderr, p.stderr
        assert len(p.stderr.strip().splitlines()) == 1, p.stderr
    (q,) = json.loads(dp_cli("queues", "--json", check=True).stdout)
    assert (q["concurrency"], q["rate"]) == (2, [10, 60.0])
    p = dp_cli("start", f"{QUEUES}:job", "--queue", "nope")
    assert p.returncode == 1 and "there is no queue named 'nope'" in p.stderr, p.stderr
    assert "durapipe queue set nope" in p.stderr and len(p.stderr.strip().splitlines()) == 1
    assert json.loads(dp_cli("list", "--json", check=True).stdout) == []
