"""The testing kit's resume_run refuses, as `durapipe resume` does, a failed run whose failure the
pipeline caught and went on from (issue #14 item 8a): nothing runs, nothing is written."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import durapipe as dp
from durapipe.testing import resume_run, run_pipeline
from tests.pipelines import h14_engine

pytestmark = pytest.mark.asyncio


async def test_resume_run_refuses_a_failure_the_pipeline_handled(
    store: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SIDE_DIR", str(tmp_path))
    (tmp_path / "bank_down").write_text("")
    view = await run_pipeline(store, h14_engine.transfer, amount=10)
    assert view.status == "failed"
    before = [(e.seq, e.kind) for e in await store.events(view.run_id)]
    (tmp_path / "bank_down").unlink()  # the cause is fixed: a re-run deposit would succeed
    with pytest.raises(dp.InvalidRunState, match="handled that failure"):
        await resume_run(store, h14_engine.transfer, view.run_id)
    assert [(e.seq, e.kind) for e in await store.events(view.run_id)] == before
    assert (tmp_path / "ledger").read_text().splitlines() == ["withdraw 10", "refund 10"]
    assert (await store.get_run(view.run_id)).status == "failed"
