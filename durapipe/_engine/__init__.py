"""The engine: replay and the journaled calls.

Each journaled call takes the next step key of its branch synchronously, before any await; if
the history has a completion for that key, the recorded result is returned (after a check that
the code made the same kind of call with the same name); otherwise the call runs for real and
its completion is journaled before the result is handed back. That mechanism is
:func:`journaled.begin` and :class:`journaled.Call`; each primitive is one module on it.

    context.py    the current run and branch (current()), RunInfo, the host protocol, run logs
    run.py        RunContext: one execution of a run; its writes, its waits, its interrupts
    history.py    History: the recorded events by step key; handled failures
    journaled.py  the journaled-call mechanism every primitive uses
    failures.py   errors as stored data; the step a failure came from
    step.py exec.py sleep.py inputs.py child.py values.py patched.py gather.py   the primitives
    messages.py (send, recv) publish.py (set_event) first.py (first, and the waits it races)
    continue_as_new.py tags.py                                                   (and these)
    transaction.py    @dp.transaction: a step whose statements commit with its completion

The names below are what the rest of durapipe imports from the engine.
"""

from .._kinds import COMPLETIONS
from .._spans import fmt_span
from .child import ChildHandle, run_subpipeline, start_subpipeline
from .context import (
    _BRANCH,
    _CTX,
    HOST,
    Branch,
    LogRecord,
    RunHost,
    RunInfo,
    context,
    current,
    in_run_on_loop,
    install_log_handler,
    logger,
)
from .continue_as_new import ContinueAsNew, continue_as_new
from .exec import exec_
from .failures import error_data, error_message, step_of, tag_step

# messages, published state, dp.first
from .first import FirstResult, first, raceable  # noqa: E402
from .gather import gather
from .history import History, handled_failure, last_handled_failure
from .inputs import await_input
from .journaled import Call, ReplayFrontier, begin
from .messages import recv, send  # noqa: E402
from .patched import patched
from .publish import set_event  # noqa: E402
from .run import STEP_START_GRACE, RunContext
from .sleep import sleep
from .step import call_step
from .tags import check_tags, parse_tags, tag
from .values import now, random, uuid4

__all__ = [
    "COMPLETIONS",
    "HOST",
    "STEP_START_GRACE",
    "_BRANCH",
    "_CTX",
    "Branch",
    "Call",
    "History",
    "LogRecord",
    "ReplayFrontier",
    "RunContext",
    "RunHost",
    "RunInfo",
    "await_input",
    "begin",
    "call_step",
    "context",
    "current",
    "error_data",
    "error_message",
    "exec_",
    "fmt_span",
    "gather",
    "handled_failure",
    "in_run_on_loop",
    "install_log_handler",
    "last_handled_failure",
    "logger",
    "now",
    "patched",
    "random",
    "run_subpipeline",
    "sleep",
    "step_of",
    "tag_step",
    "uuid4",
    # messages, published state, dp.first
    "FirstResult",
    "first",
    "raceable",
    "recv",
    "send",
    "set_event",
    # child handles, continue-as-new, tags
    "ChildHandle",
    "ContinueAsNew",
    "check_tags",
    "continue_as_new",
    "parse_tags",
    "start_subpipeline",
    "tag",
]
