"""The web UI (`durapipe ui`) in a real browser: headless Chromium (Debian's) driven by Selenium,
a real worker and a real UI server as subprocesses, on SQLite and PostgreSQL.

Set UI_SCREENSHOTS=docs/img to save the screenshots docs/ui.md shows.
"""

from __future__ import annotations

import os
import subprocess
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from conftest import PIPELINES, client_call, wait_until

UI = str(PIPELINES / "ui.py")
SECRET = "sup3r-s3cret-9f2c"
Cli = Callable[..., subprocess.CompletedProcess[str]]


def _start_ui(dp_spawn: Any, *args: str) -> str:
    p = dp_spawn("ui", "--port", "0", *args)
    line = p.stdout.readline()
    assert line.startswith("durapipe ui: http://"), line + p.stderr.read()
    return line.split()[2]


def _status(db_url: str, rid: str) -> str:
    return str(client_call(db_url, lambda c: c.get(rid)).status)


def _shot(driver: Any, name: str) -> None:
    folder = os.environ.get("UI_SCREENSHOTS")
    if folder:
        driver.save_screenshot(str(Path(folder) / f"ui-{name}.png"))


def _text(driver: Any, css: str) -> str:
    """The text an element shows ("" when there is none), read in one step: the page's live
    updates replace parts of it at any moment."""
    return str(
        driver.execute_script(
            "const e = document.querySelector(arguments[0]); return e ? e.innerText : '';", css
        )
    )


def _click(driver: Any, css: str) -> None:
    wait_until(
        lambda: driver.execute_script(
            "const e = document.querySelector(arguments[0]); if (e) e.click(); return !!e;", css
        ),
        what=f"{css} to click",
    )


def _confirm(driver: Any, action: str) -> None:
    """Press an action's button, then 'Yes' on its confirmation page."""
    _click(driver, f"#act-{action}")
    wait_until(lambda: _text(driver, "#confirm"), what="the confirmation page")
    _shot(driver, f"confirm-{action}")
    _click(driver, "#confirm")
    wait_until(lambda: _text(driver, "#message"), what="back on the run page")
    driver.execute_script("window.uiMarker = 1")  # not reloaded from here on


def _log(driver: Any) -> str:
    return _text(driver, "#log")


def test_answer_an_input_in_the_browser(
    browser: Any, db_url: str, dp_cli: Cli, dp_spawn: Any
) -> None:
    dp_spawn("worker", "-m", UI, env={"UI_SECRET": SECRET})
    url = _start_ui(dp_spawn)
    family = client_call(db_url, lambda c: c.start(f"{UI}:family"))
    browser.get(url + "runs")
    wait_until(lambda: family in _text(browser, "table.runs"), what="a run in the list")
    browser.execute_script("window.uiMarker = 1")
    rid = dp_cli("start", f"{UI}:ship", check=True).stdout.strip()
    wait_until(lambda: rid in _text(browser, "table.runs"), what="the list's live update")
    assert browser.execute_script("return window.uiMarker") == 1
    wait_until(lambda: _status(db_url, rid) == "waiting", what="the run to wait for approval")
    wait_until(lambda: _status(db_url, family) == "completed", what="the parent run to end")
    browser.get(f"{url}runs/{family}")  # the run tree: the parent and its child
    tree = _text(browser, "ul.tree")
    assert family in tree and "ticking" in tree and tree.count("completed") == 2
    _shot(browser, "run-tree")
    browser.get(url + "runs")
    wait_until(
        lambda: "completed 2" in " ".join(_text(browser, "#counts").split()),
        what="the counts by status",
    )
    wait_until(lambda: "waiting" in _text(browser, "table.runs"), what="the statuses")
    _shot(browser, "runs")

    browser.get(f"{url}runs/{rid}")
    assert _text(browser, "#prompt-approve") == "Ship v1.2.3 to production?"
    wait_until(lambda: "built <b>v1.2.3</b>" in _log(browser), what="the log so far")
    assert "<b>v1.2.3</b>" not in browser.page_source  # a command's output is text, not HTML
    _shot(browser, "run-waiting")

    browser.find_element("id", "answer-approve").send_keys("true")
    _click(browser, "#send-approve")
    wait_until(lambda: _text(browser, "#confirm"), what="the confirmation page")
    assert "Send true as input 'approve'?" in _text(browser, "main")
    _click(browser, "#confirm")
    wait_until(lambda: _text(browser, "#message") == "Input sent.", what="the run page again")
    browser.execute_script("window.uiMarker = 1")  # the page is not reloaded from here on

    wait_until(lambda: _text(browser, "#status") == "completed", what="the live status")
    wait_until(lambda: "shipped v1.2.3: approved=True" in _log(browser), what="the live log")
    assert browser.execute_script("return window.uiMarker") == 1
    log = _log(browser)
    assert "Input 'approve' sent by ui:127.0.0.1" in log
    assert "token is ***" in log
    assert '"shipped": true' in _text(browser, "#output")
    assert SECRET not in browser.page_source
    with urllib.request.urlopen(f"{url}runs/{rid}?partial=1") as res:
        assert SECRET not in res.read().decode()
    _shot(browser, "run-completed")
    assert client_call(db_url, lambda c: c.result(rid, timeout=5))["shipped"] is True


def test_stop_and_resume_from_the_buttons(
    browser: Any, db_url: str, dp_cli: Cli, dp_spawn: Any, tmp_path: Path
) -> None:
    dp_spawn("worker", "-m", UI)
    url = _start_ui(dp_spawn)
    rid = dp_cli("start", f"{UI}:ticking", "--input", "n=30", check=True).stdout.strip()
    wait_until(
        lambda: any(s["label"] == "exec_1" for s in _steps(db_url, rid)),
        what="the run to block in its command",
    )
    browser.get(f"{url}runs/{rid}")
    wait_until(lambda: "$ " in _log(browser), what="the command's line in the log")
    _confirm(browser, "stop")
    wait_until(lambda: "Stop requested by ui:127.0.0.1" in _log(browser), what="who stopped it")
    (tmp_path / "go").touch()  # the command ends now: its exit line is printed after the load
    wait_until(lambda: _text(browser, "#status") == "stopped", what="the run to stop")
    wait_until(lambda: "exit 0 in" in _log(browser), what="a line printed after the page loaded")
    assert browser.execute_script("return window.uiMarker") == 1
    _shot(browser, "run-stopped")

    _confirm(browser, "resume")
    wait_until(lambda: _text(browser, "#status") == "completed", what="the resumed run to end")
    wait_until(lambda: "Resumed by ui:127.0.0.1" in _log(browser), what="who resumed it")
    assert client_call(db_url, lambda c: c.result(rid, timeout=5)) == sum(range(30))
    kinds = [e["kind"] for e in client_call(db_url, lambda c: c.events(rid))]
    assert "run_stopped" in kinds and kinds[-1] == "run_completed"

    browser.get(url + "workers")
    assert "ticking@1" in _text(browser, "table.runs")
    _shot(browser, "workers")


def _steps(db_url: str, rid: str) -> list[dict[str, Any]]:
    return [
        {"label": e["label"]}
        for e in client_call(db_url, lambda c: c.events(rid))
        if e["kind"] == "step_started"
    ]


class _Reply:
    """A response read whole and closed (an open one left to the GC is a ResourceWarning,
    which the suite makes an error in whichever test the GC happens to run)."""

    def __init__(self, res: Any) -> None:
        with res:
            self.status = res.status if hasattr(res, "status") else res.code
            self.headers = res.headers
            self.text = res.read().decode()


def _get(url: str, headers: dict[str, str] | None = None, data: bytes | None = None) -> _Reply:
    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args: Any, **kw: Any) -> None:
            return None

    opener = urllib.request.build_opener(NoRedirect)
    req = urllib.request.Request(url, headers=headers or {}, data=data)
    try:
        return _Reply(opener.open(req, timeout=10))
    except urllib.error.HTTPError as exc:
        return _Reply(exc)


def test_beyond_loopback_every_request_needs_the_token(
    db_url: str, dp_cli: Cli, dp_spawn: Any
) -> None:
    refused = dp_cli("ui", "--host", "0.0.0.0", "--port", "0")
    assert refused.returncode == 1
    assert refused.stderr.startswith("error: --host 0.0.0.0 makes the UI reachable")
    assert len(refused.stderr.strip().splitlines()) == 1

    token = "t0ken-for-the-test"
    url = _start_ui(dp_spawn, "--host", "0.0.0.0", "--token", token)
    url = url.replace("0.0.0.0", "127.0.0.1")
    rid = dp_cli("start", f"{UI}:ticking", "--input", "n=2", check=True).stdout.strip()

    for path in ("runs", f"runs/{rid}", f"runs/{rid}/logs", "workers", "static/ui.css"):
        assert _get(url + path).status == 401, path
    assert _get(url + "runs", {"Authorization": "Bearer wrong-token"}).status == 401
    assert _get(url + "runs?token=wrong-token").status == 401
    ok = _get(url + "runs", {"Authorization": f"Bearer {token}"})
    assert ok.status == 200 and rid in ok.text
    assert ok.headers["Content-Security-Policy"].startswith("default-src 'self'")

    bearer = {"Authorization": f"Bearer {token}"}
    bad = _get(url + "runs?since=yesterday", bearer)
    assert bad.status == 400 and "yesterday&#39; is not a time" in bad.text
    assert _get(url + "runs/run_nope", bearer).status == 404

    login = _get(f"{url}runs/{rid}?token={token}")
    assert login.status == 303 and login.headers["Location"] == f"/runs/{rid}"
    cookie = login.headers["Set-Cookie"].split(";")[0]
    assert "samesite=strict" in login.headers["Set-Cookie"].lower()
    page = _get(f"{url}runs/{rid}", {"Cookie": cookie})
    assert page.status == 200

    # A POST without the page's form token (another site's form) changes nothing.
    forged = _get(
        f"{url}runs/{rid}/act/cancel",
        {"Cookie": cookie, "Content-Type": "application/x-www-form-urlencoded"},
        b"confirm=yes",
    )
    assert forged.status == 403
    assert _status(db_url, rid) == "pending"


def test_without_the_extra_it_says_what_to_install(tmp_path: Path) -> None:
    """Nothing is opened (no database) before these refusals."""
    import sys

    from conftest import ROOT, cli_env

    def ui(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
        url = f"sqlite:///{tmp_path / 'never.db'}"
        return subprocess.run(
            [sys.executable, "-m", "durapipe", "ui", *args],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=tmp_path,
            env=cli_env(url, **env),
        )

    # A stand-in for an install without the ui extra: importing uvicorn fails.
    blocker = tmp_path / "blocker"
    (blocker / "uvicorn").mkdir(parents=True)
    (blocker / "uvicorn" / "__init__.py").write_text(
        "raise ModuleNotFoundError(\"No module named 'uvicorn'\", name='uvicorn')\n"
    )
    proc = ui("--port", "0", PYTHONPATH=f"{blocker}{os.pathsep}{ROOT}")
    assert proc.returncode == 1
    assert proc.stderr == (
        "error: the web UI needs its packages: pip install 'durapipe[ui]' (uvicorn is missing)\n"
    )
    bad = ui("--port", "70000")
    assert bad.returncode == 1 and bad.stderr.startswith("error: --port 70000: give a port")
    short = ui("--host", "0.0.0.0", "--token", "abc")
    assert short.returncode == 1 and short.stderr.startswith("error: --token: at least 8")
    assert not (tmp_path / "never.db").exists()
