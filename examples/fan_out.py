"""Fan out: one child run per shard, at most `limit` of them running at once.

    durapipe run examples/fan_out.py:fan_out --input shards=6 --input limit=2

`dp.gather` gives each branch its own place in the history, so the results come back in the
order of the branches whatever order they finish in, and a crashed run resumes without redoing
the children that completed.
"""

import durapipe as dp


@dp.pipeline(version="1")
async def count_shard(shard: int) -> int:
    out = await dp.exec("sh", "-c", f"echo shard {shard}: $(( {shard} * {shard} )) rows")
    return int(out.stdout.split(": ")[1].split()[0])


@dp.pipeline(version="1")
async def fan_out(shards: int = 6, limit: int = 2) -> dict[str, object]:
    counts = await dp.gather(
        *(dp.run_subpipeline(count_shard, shard=i) for i in range(shards)), limit=limit
    )
    return {"shards": shards, "rows": sum(counts), "per_shard": counts}
