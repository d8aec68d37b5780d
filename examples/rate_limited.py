"""A rate-limited fan-out: one child run per item, at most 5 calls to the API per second.

    durapipe run examples/rate_limited.py:rate_limited --input items=12

The limit is the queue's, enforced by the database: every worker on every machine (and this
foreground run) takes children off the queue only while the last second has had fewer than 5
starts, so the API sees at most 5 calls in any second however many workers share the work.
`durapipe queues` shows the line while it runs.
"""

import durapipe as dp

# key_concurrency=None: the items carry no key; the only limit is the rate.
api = dp.Queue("api", rate=(5, "1s"), key_concurrency=None)


@dp.pipeline(version="1")
async def call_api(item: int) -> float:
    out = await dp.exec("sh", "-c", f"echo calling the API for item {item}; date +%s.%N")
    return float(out.stdout.split()[-1])  # when the call went out


@dp.pipeline(version="1")
async def rate_limited(items: int = 12) -> dict[str, object]:
    called_at = await dp.gather(*(api.run_subpipeline(call_api, item=i) for i in range(items)))
    return {"items": items, "seconds": round(max(called_at) - min(called_at), 2)}
