"""The vocabulary every layer shares: run statuses, history event kinds, and requests.

String-valued enums (``StrEnum``), so what is stored in the database, printed and compared is
the same plain text as before (``RunStatus.COMPLETED == "completed"``). This module imports
nothing of durapipe: the store, the engine, the worker, the client and the console all use it,
and it is the one place a new status, event kind or request is added.
"""

from __future__ import annotations

from enum import StrEnum


class RunStatus(StrEnum):
    """Where a run stands (``durapipe_runs.status``)."""

    PENDING = "pending"  # runnable: waiting for a worker (new, woken, or released)
    RUNNING = "running"  # a process holds its lease and executes it
    SLEEPING = "sleeping"  # suspended on a durable timer (wake_at)
    WAITING = "waiting"  # suspended on an input or a child run
    STOPPED = "stopped"  # stopped on request; `durapipe resume` continues it
    BLOCKED = "blocked"  # its code no longer matches its history (nondeterminism)
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    ABORTED = "aborted"  # pinned to a version that is no longer the registered one
    # Child handles, continue-as-new, tags (issue #16, items 4-6):
    CONTINUED = "continued"  # ended by dp.continue_as_new: its successor carries on
    TIMED_OUT = "timed_out"  # its run timeout passed: cancelled, its finally blocks ran
    DEAD = "dead"  # its executions kept dying (max_recoveries); `durapipe resume` continues it
    # Queues (durapipe/_store/queues.py): waiting in its queue's line; a claim dequeues it into
    # RUNNING when the queue's limits have room. Not runnable by an ordinary claim.
    QUEUED = "queued"


class EventKind(StrEnum):
    """What an event of a run's history records (``durapipe_events.kind``)."""

    RUN_STARTED = "run_started"
    RUN_RESUMED = "run_resumed"
    RUN_STOPPED = "run_stopped"
    RUN_BLOCKED = "run_blocked"
    RUN_COMPLETED = "run_completed"
    RUN_FAILED = "run_failed"
    RUN_CANCELLED = "run_cancelled"
    RUN_ABORTED = "run_aborted"
    STEP_STARTED = "step_started"
    STEP_COMPLETED = "step_completed"
    STEP_FAILED = "step_failed"
    STEP_RETRY = "step_retry"
    TIMER_STARTED = "timer_started"
    TIMER_FIRED = "timer_fired"
    INPUT_REQUESTED = "input_requested"
    INPUT_RECEIVED = "input_received"
    INPUT_TIMEOUT = "input_timeout"
    CHILD_STARTED = "child_started"
    CHILD_COMPLETED = "child_completed"
    CHILD_FAILED = "child_failed"
    VALUE_RECORDED = "value_recorded"
    PATCH_MARKER = "patch_marker"
    # messages, published state, dp.first
    MESSAGE_SENT = "message_sent"
    RECV_STARTED = "recv_started"
    RECV_RECEIVED = "recv_received"
    RECV_TIMEOUT = "recv_timeout"
    EVENT_SET = "event_set"
    FIRST_STARTED = "first_started"
    FIRST_DONE = "first_done"
    # Child handles, continue-as-new, tags (issue #16, items 4-6):
    CHILD_SPAWNED = "child_spawned"  # dp.start_subpipeline: the child exists (its completion)
    CHILD_CANCEL_REQUESTED = "child_cancel_requested"  # ChildHandle.cancel()
    RUN_CONTINUED = "run_continued"  # dp.continue_as_new: the run ended, its successor started
    TAG_SET = "tag_set"  # dp.tag
    RUN_TIMED_OUT = "run_timed_out"
    RUN_DEAD = "run_dead"
    # durapipe edit: supersedes the result recorded at its step (who, when, why, the old value).
    RESULT_EDITED = "result_edited"
    # @dp.transaction: committed in the same database transaction as the step's statements
    TRANSACTION_COMMITTED = "transaction_committed"
    TRANSACTION_FAILED = "transaction_failed"


class Request(StrEnum):
    """What a run is asked to do (``durapipe_runs.requested``, and the engine's interrupts)."""

    STOP = "stop"  # stop at the next journaled call
    STOP_NOW = "stop_now"  # ... and kill a running command
    CANCEL = "cancel"  # raise cancellation at the current await (finally blocks run)
    HOLD = "hold"  # its pipeline is held: hand it back untouched
    SHUTDOWN = "shutdown"  # the worker is shutting down: hand it back
    SHUTDOWN_NOW = "shutdown_now"  # ... and kill a running command
    LOST = "lost"  # (engine only) this process lost the lease
    SUSPENDED = "suspended"  # (engine only) the run suspends on a long wait


TERMINAL = frozenset(
    {
        RunStatus.COMPLETED,
        RunStatus.FAILED,
        RunStatus.CANCELLED,
        RunStatus.ABORTED,
        RunStatus.CONTINUED,
        RunStatus.TIMED_OUT,
    }
)
SUSPENDABLE = (RunStatus.SLEEPING, RunStatus.WAITING)
ACTIVE = (RunStatus.PENDING, RunStatus.RUNNING, RunStatus.SLEEPING, RunStatus.WAITING)
RESUMABLE_EXTRA = (RunStatus.STOPPED, RunStatus.BLOCKED, RunStatus.DEAD)
ALL_STATUSES = tuple(RunStatus)
# Requests that hand a run back untouched (another process continues it).
RELEASING = (Request.SHUTDOWN, Request.SHUTDOWN_NOW, Request.HOLD)
# Requests that kill a running command at once.
KILLING = (Request.STOP_NOW, Request.LOST, Request.SHUTDOWN_NOW)

# Runs that take no more messages or inputs: ended for good (a failed, stopped, blocked or dead
# run may still be resumed; a continued run's messages go to its chain's live link).
ENDED = frozenset(
    {
        RunStatus.COMPLETED,
        RunStatus.CANCELLED,
        RunStatus.ABORTED,
        RunStatus.TIMED_OUT,
        RunStatus.CONTINUED,
    }
)

# Events that mark when a run works (`show`/`list` durations): its executions' ends, its waits,
# its commands. Any other event only says the run was working at that moment.
RUN_ENDS = (
    EventKind.RUN_STOPPED,
    EventKind.RUN_FAILED,
    EventKind.RUN_BLOCKED,
    EventKind.RUN_COMPLETED,
    EventKind.RUN_CANCELLED,
    EventKind.RUN_ABORTED,
    EventKind.RUN_CONTINUED,
    EventKind.RUN_TIMED_OUT,
    EventKind.RUN_DEAD,
)
WAIT_STARTS = (
    EventKind.TIMER_STARTED,
    EventKind.INPUT_REQUESTED,
    EventKind.CHILD_STARTED,
    # messages, dp.first
    EventKind.RECV_STARTED,
    EventKind.FIRST_STARTED,
)
WAIT_ENDS = (
    EventKind.TIMER_FIRED,
    EventKind.INPUT_RECEIVED,
    EventKind.INPUT_TIMEOUT,
    EventKind.CHILD_COMPLETED,
    EventKind.CHILD_FAILED,
    # messages, dp.first
    EventKind.RECV_RECEIVED,
    EventKind.RECV_TIMEOUT,
    EventKind.FIRST_DONE,
)
TIMELINE_KINDS = (
    (
        EventKind.RUN_STARTED,
        EventKind.RUN_RESUMED,
        EventKind.STEP_STARTED,
        EventKind.STEP_COMPLETED,
        EventKind.STEP_FAILED,
    )
    + RUN_ENDS
    + WAIT_STARTS
    + WAIT_ENDS
)


class Family(StrEnum):
    """What kind of journaled call an event belongs to: the first word of its kind."""

    STEP = "step"  # a @dp.step or a dp.exec
    TIMER = "timer"  # dp.sleep
    INPUT = "input"  # dp.await_input
    CHILD = "child"  # dp.run_subpipeline
    VALUE = "value"  # dp.now, dp.uuid4, dp.random
    # messages, published state, dp.first
    MESSAGE = "message"  # dp.send
    RECV = "recv"  # dp.recv
    EVENT = "event"  # dp.set_event
    FIRST = "first"  # dp.first
    TAG = "tag"  # dp.tag
    TRANSACTION = "transaction"  # @dp.transaction


def family(kind: str) -> str:
    """The family of an event kind (``step_started`` -> ``step``)."""
    return kind.split("_", 1)[0]


# The events that end a journaled call: replay hands back what they recorded.
COMPLETIONS = frozenset(
    (EventKind.STEP_COMPLETED, EventKind.STEP_FAILED, EventKind.VALUE_RECORDED)
    + WAIT_ENDS
    + (EventKind.MESSAGE_SENT, EventKind.EVENT_SET)  # messages, published state
    + (EventKind.CHILD_SPAWNED, EventKind.CHILD_CANCEL_REQUESTED, EventKind.TAG_SET)
    + (EventKind.TRANSACTION_COMMITTED, EventKind.TRANSACTION_FAILED)  # @dp.transaction
)
