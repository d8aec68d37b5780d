"""Repair: a rollout that fails on a bad value in its manifest, corrected with `durapipe edit`.

    durapipe run examples/manifest.py:rollout --input replicas=0

The manifest step records 0 replicas and the check fails. `durapipe resume` would retry the
check with the same manifest; instead correct the recorded value and continue the same run
(the steps after the edited one run again):

    durapipe edit RUN_ID read_manifest_1 --result '{"image": "app:1.4.2", "replicas": 3}' --reason "typo in the manifest"
    durapipe resume RUN_ID

Or keep the failed run as it is and run the rollout again, linked back to it, with a new input:

    durapipe fork RUN_ID --from 1 --input replicas=3

`durapipe show RUN_ID` marks the edited step, and lists the forks (docs/repair.md).
"""

from typing import Any

import durapipe as dp


@dp.step
def read_manifest(replicas: int) -> dict[str, Any]:
    return {"image": "app:1.4.2", "replicas": replicas}


@dp.step
def check(manifest: dict[str, Any]) -> str:
    if manifest["replicas"] < 1:
        raise ValueError(
            f"{manifest['image']}: {manifest['replicas']} replicas would serve nothing"
        )
    return f"{manifest['image']} x{manifest['replicas']}"


@dp.pipeline(version="1")
async def rollout(replicas: int = 3) -> str:
    manifest = await read_manifest(replicas)
    planned = await check(manifest)
    await dp.exec("echo", f"rolling out {planned}")
    return planned
