"""The ``durapipe`` command: thin commands that parse, call the client or a runner, and render.

_app.py holds the typer app, the shared options and the entry point; _foreground.py the terminal
UI of a run executed here; the commands live by what they do: run.py (run, resume, start),
look.py (list, show, logs, result, workers), steer.py (input, stop, cancel), admin.py (worker,
upgrade check, db upgrade, gc), schedule.py (schedule add/list/pause/resume/delete/trigger).
"""

import sys

from . import _early

_early.hold_if_worker(sys.argv)  # before the imports below, which take most of a worker's start

from . import admin, look, messages, queues, repair, run, schedule, steer, ui  # noqa: E402
from ._app import app, db_app, main, upgrade_app  # noqa: E402

# Registered here, in one place: typer lists commands in the order they are registered, and this
# is the order of `durapipe --help` and docs/cli.md.
app.command()(run.run)
app.command()(run.resume)
app.command()(run.start)
app.command()(look.result)
app.command()(admin.worker)
app.command()(look.workers)
app.command("list")(look.list_)
app.command()(look.show)
app.command()(look.logs)
app.command("input")(steer.input_)
app.command()(steer.stop)
app.command()(steer.cancel)
app.command()(admin.gc)
app.command()(ui.ui)
upgrade_app.command("check")(admin.upgrade_check)
db_app.command("upgrade")(admin.db_upgrade)
# messages, published state
app.command()(messages.send)
app.command()(messages.events)
app.command()(repair.fork)
app.command()(repair.edit)
app.add_typer(schedule.schedule_app, name="schedule")
schedule.schedule_app.command()(schedule.add)
schedule.schedule_app.command("list")(schedule.list_)
schedule.schedule_app.command()(schedule.pause)
schedule.schedule_app.command()(schedule.resume)
schedule.schedule_app.command()(schedule.delete)
schedule.schedule_app.command()(schedule.trigger)
# Queues (issue #18)
app.add_typer(queues.queue_app, name="queue")
queues.queue_app.command("set")(queues.set_)
app.command()(queues.queues)

__all__ = ["app", "main"]
