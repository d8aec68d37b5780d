"""Deploy with a person in the loop: build in a child run, wait for approval, then release.

    durapipe run examples/deploy.py:deploy --input version=1.4.2 --input env=staging

The run builds the release in a sub-pipeline (a child run with its own history), then waits for
input 'approve'. At a terminal you are asked for the answer; from anywhere else send it with the
command the run prints (the run id is the first line of output):

    durapipe input RUN_ID approve true

The pipeline is pinned: a run started on version "1" is aborted, not continued, if the code it
is resumed with says another version.
"""

import durapipe as dp


@dp.pipeline(version="1")
async def build(version: str) -> dict[str, str]:
    """The build step, as a child run: `durapipe show` lists it under its parent."""
    await dp.exec("echo", f"compiling release {version}")
    # Stands in for the real build; arguments after the script are $0, $1, ... (no quoting issues).
    packed = await dp.exec("sh", "-c", 'echo "app-$1.tar.gz"', "sh", version)
    return {"artifact": packed.stdout.strip()}


@dp.step
def release_notes(version: str, artifact: str, env: str) -> str:
    return f"{artifact} ({version}) deployed to {env}"


@dp.pipeline(version="1", pin=True)
async def deploy(version: str = "1.0.0", env: str = "staging") -> dict[str, bool | str]:
    built = await dp.run_subpipeline(build, version=version)
    artifact = built["artifact"]
    approved = await dp.await_input("approve", prompt=f"Deploy {artifact} to {env}?")
    if approved is not True:
        await dp.exec("echo", f"{artifact} was not approved; nothing deployed")
        return {"deployed": False, "artifact": artifact}
    await dp.exec("sh", "-c", f'echo "releasing {artifact} to {env}" && true')
    notes = await release_notes(version, artifact, env)
    return {"deployed": True, "artifact": artifact, "notes": notes}
