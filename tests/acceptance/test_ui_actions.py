"""The web UI's actions of issue #20 in a real browser (headless Chromium, Selenium): send a
message, fork, edit; the runs list filtered by tags; chain and fork links. A real worker and a
real UI server as subprocesses, on SQLite and PostgreSQL.

Set UI_SCREENSHOTS=docs/img to save the screenshots docs/ui.md shows.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from typing import Any

from conftest import PIPELINES, client_call, wait_until
from test_ui import _click, _get, _log, _shot, _start_ui, _status, _text

ACTS = str(PIPELINES / "ui_actions.py")
Cli = Callable[..., subprocess.CompletedProcess[str]]


def _start(db_url: str, name: str, **kw: Any) -> str:
    return str(client_call(db_url, lambda c: c.start(f"{ACTS}:{name}", **kw)))


def _type(driver: Any, css: str, text: str) -> None:
    """Replace what a field holds with ``text``."""
    field = driver.find_element("css selector", css)
    field.clear()
    field.send_keys(text)


def _runs_listed(driver: Any) -> str:
    return _text(driver, "table.runs tbody")


def test_send_a_message_and_filter_the_list_by_tags(
    browser: Any, db_url: str, dp_spawn: Any
) -> None:
    dp_spawn("worker", "-m", ACTS)
    url = _start_ui(dp_spawn)
    blue = _start(db_url, "inbox", tags={"team": "blue", "env": "prod"})
    red = _start(db_url, "inbox", tags={"team": "red", "env": "prod"})
    plain = _start(db_url, "inbox")
    for rid in (blue, red, plain):
        wait_until(lambda rid=rid: _status(db_url, rid) == "waiting", what="the runs to wait")

    # The list by tags: key=value, several AND together; each run shows its tags.
    browser.get(url + "runs")
    _type(browser, "#tag-filter", "env=prod team=blue")
    _click(browser, "form.filters button[type=submit]")
    wait_until(lambda: "tag=env%3Dprod" in browser.current_url, what="the filtered list")
    listed = _runs_listed(browser)
    assert blue in listed and red not in listed and plain not in listed
    assert "team=blue" in listed and "env=prod" in listed
    wait_until(  # the counts by status count the tagged runs too
        lambda: " ".join(_text(browser, "#counts").split()) == "waiting 1 1 run",
        what="the counts of the tagged runs",
    )
    _shot(browser, "runs-tagged")
    browser.get(url + "runs?tag=env=prod")
    listed = _runs_listed(browser)
    assert blue in listed and red in listed and plain not in listed
    browser.get(url + "runs?tag=env")  # not key=value: said so, nothing listed
    assert "is not KEY=VALUE" in _text(browser, "#error")

    # The run page: its tags, what it published, and a message sent from the page.
    browser.get(f"{url}runs/{blue}")
    assert _text(browser, "#tags").split() == ["env=prod", "team=blue"]
    wait_until(lambda: "waiting for go" in _text(browser, "#published"), what="its state")
    assert _text(browser, "#wait-topic-go") == "go"  # what it waits for
    _type(browser, "#msg-topic", "go")
    _type(browser, "#msg-value", '{"ok": true}')
    _shot(browser, "run-message")
    _click(browser, "#msg-send")
    wait_until(lambda: _text(browser, "#confirm"), what="the confirmation page")
    assert _text(browser, "h1") == f"Send a message to run {blue}"
    _shot(browser, "confirm-send")
    _type(browser, "#f-topic", "not a topic!")  # bad input: asked again, nothing sent
    _click(browser, "#confirm")
    wait_until(lambda: "is not a short identifier" in _text(browser, "#problem"), what="why")
    assert _status(db_url, blue) == "waiting"
    assert browser.find_element("id", "f-value").get_attribute("value") == '{"ok": true}'
    _type(browser, "#f-topic", "go")
    _click(browser, "#confirm")
    wait_until(lambda: _text(browser, "#message") == "Message sent.", what="the run page")
    wait_until(lambda: _text(browser, "#status") == "completed", what="the run to take it")
    wait_until(lambda: "got it" in _text(browser, "#published"), what="its new state")
    wait_until(  # live too: a run that ended takes no more messages
        lambda: not browser.find_elements("id", "msg-topic"), what="the form to go"
    )
    assert '"ok": true' in _text(browser, "#output")
    wait_until(lambda: "Message 'go' sent by ui:127.0.0.1" in _log(browser), what="who sent it")
    assert client_call(db_url, lambda c: c.result(blue, timeout=5)) == {"got": {"ok": True}}
    assert _status(db_url, red) == "waiting"  # only the run it was sent to


def test_fork_and_edit_failed_runs_from_the_page(browser: Any, db_url: str, dp_spawn: Any) -> None:
    dp_spawn("worker", "-m", ACTS)
    url = _start_ui(dp_spawn)
    bad = _start(db_url, "release", n="bad")
    broken = _start(db_url, "deploy")
    chain = _start(db_url, "rounds")
    for rid in (bad, broken):
        wait_until(lambda rid=rid: _status(db_url, rid) == "failed", what="the runs to fail")

    # A POST without the page's form token (another site's form) forks nothing.
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    assert _get(f"{url}runs/{bad}/act/fork", form, b"confirm=yes&step=1").status == 403
    assert len(client_call(db_url, lambda c: c.list())) == 3

    # Fork from the failed step, with the input fixed; the fork's page follows.
    browser.get(f"{url}runs/{bad}")
    assert "release bad is broken" in _text(browser, "#error")
    assert _text(browser, "#fork-1") == "Fork here" and _text(browser, "#edit-2") == "Edit"
    _shot(browser, "run-failed")
    _click(browser, "#act-fork")
    wait_until(lambda: _text(browser, "#confirm"), what="the confirmation page")
    assert _text(browser, "h1") == f"Fork run {bad} from the failed step?"
    assert '"n": "bad"' in browser.find_element("id", "f-inputs").get_attribute("value")
    _type(browser, "#f-inputs", '{"n": "good"}')
    _shot(browser, "confirm-fork")
    _type(browser, "#f-inputs", '{"n": good}')  # not JSON: asked again, nothing forked
    _click(browser, "#confirm")
    wait_until(lambda: "is not valid JSON" in _text(browser, "#problem"), what="why")
    assert len(client_call(db_url, lambda c: c.list())) == 3
    _type(browser, "#f-inputs", '{"n": "good"}')
    _click(browser, "#confirm")
    wait_until(
        lambda: _text(browser, "#message") == f"Forked from run {bad} at step 2.",
        what="the fork's page",
    )
    fork = browser.current_url.split("/runs/")[1].split("?")[0]
    assert fork != bad and _text(browser, "#forked-from") == bad
    wait_until(lambda: _text(browser, "#status") == "completed", what="the fork to complete")
    assert client_call(db_url, lambda c: c.result(fork, timeout=5)) == {
        "plan": {"image": "app:bad"},  # step 1 copied from the failed run, not run again
        "check": "checked good",
    }
    assert "forked from" in _text(browser, ".links") and "ui:127.0.0.1" in _text(browser, ".links")
    _shot(browser, "run-forked")
    browser.get(f"{url}runs/{bad}")
    assert fork in _text(browser, ".links")
    assert _status(db_url, bad) == "failed"  # the source is not changed

    # Edit step 1's result of the other failed run, then Resume: it completes with it.
    browser.get(f"{url}runs/{broken}")
    _click(browser, "#edit-1")
    wait_until(lambda: _text(browser, "#confirm"), what="the edit page")
    assert _text(browser, "h1") == f"Edit a result of run {broken}"
    got = browser.find_element("id", "f-result").get_attribute("value")
    assert '"image": "app:bad"' in got  # starts from the recorded result
    _type(browser, "#f-result", '{"image": "app:good"}')
    _type(browser, "#f-reason", "the manifest had a typo")
    _shot(browser, "confirm-edit")
    _click(browser, "#confirm")
    wait_until(lambda: _text(browser, "#message").startswith("Result edited"), what="the edit")
    edits = [
        e for e in client_call(db_url, lambda c: c.events(broken)) if e["kind"] == "result_edited"
    ]
    assert len(edits) == 1 and edits[0]["data"]["by"] == "ui:127.0.0.1"
    assert edits[0]["data"]["rerun_after"] is True
    _click(browser, "#act-resume")
    wait_until(lambda: _text(browser, "#confirm"), what="the resume confirmation")
    _click(browser, "#confirm")
    wait_until(lambda: _text(browser, "#status") == "completed", what="the resumed run to end")
    assert client_call(db_url, lambda c: c.result(broken, timeout=5)) == {
        "image": "app:good",
        "verify": "ok",
    }
    assert not browser.find_elements("id", "edit-1")  # a completed run is not edited

    # A continue-as-new chain: its link to the run that carries on, in the colour of its status.
    wait_until(lambda: _status(db_url, chain) == "continued", what="the chain to continue")
    browser.get(f"{url}runs/{chain}")
    assert "st-continued" in browser.find_element("id", "status").get_attribute("class")
    assert not browser.find_elements("id", "msg-topic")  # its successor takes messages
    nxt = _text(browser, "#successor")
    assert nxt and nxt != chain
    _click(browser, "#successor")
    wait_until(lambda: _text(browser, "#continued-from") == chain, what="the link back")
