"""The public API: what ``import durapipe`` offers is pinned, and every part of it is documented."""

from __future__ import annotations

import importlib.util
import inspect
import re
from pathlib import Path
from typing import Any

import durapipe as dp

ROOT = Path(__file__).resolve().parents[2]

PUBLIC = [
    "ChildHandle",
    "Client",
    "ConfigError",
    "Cron",
    "DatabaseUnavailable",
    "DurapipeError",
    "Every",
    "ExecFailed",
    "ExecResult",
    "InputTimeout",
    "InvalidRunState",
    "NonDeterminismError",
    "NotInPipeline",
    "PipelineDef",
    "RunFailed",
    "RunInfo",
    "RunNotFound",
    "RunView",
    "ScheduleView",
    "Secret",
    "SerializationError",
    "StepFailed",
    "Store",
    "SubpipelineFailed",
    "SyncClient",
    "VersionMismatch",
    "await_input",
    "context",
    "continue_as_new",
    "exec",
    "gather",
    "logger",
    "now",
    "open_store",
    "patched",
    "pipeline",
    "random",
    "run_subpipeline",
    "secret",
    "sleep",
    "start_subpipeline",
    "step",
    "tag",
    "uuid4",
    # messages, published state, dp.first
    "FirstResult",
    "MessageTimeout",
    "first",
    "recv",
    "send",
    "set_event",
    "StepTimeout",
    "transaction",
    # Queues (issue #18)
    "Queue",
    "QueueView",
]

CLIENT_METHODS = [
    "connect",
    "close",
    "start",
    "get",
    "list",
    "events",
    "result",
    "send_input",
    "stop",
    "cancel",
    "resume",
    # Queues (issue #18)
    "set_queue",
    "queues",
    "queue_places",
    # messages, published state
    "send",
    "get_event",
    "published",
    "fork",
    "edit",
    # schedules
    "add_schedule",
    "get_schedule",
    "list_schedules",
    "pause_schedule",
    "resume_schedule",
    "delete_schedule",
    "trigger_schedule",
]


def _gen() -> Any:
    spec = importlib.util.spec_from_file_location(
        "durapipe_docs_gen_api", ROOT / "docs" / "gen_api.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _own_doc(obj: Any) -> str:
    doc = vars(obj).get("__doc__") if isinstance(obj, type) else getattr(obj, "__doc__", None)
    return (doc or "").strip()


def test_all_is_pinned() -> None:
    assert dp.__all__ == PUBLIC  # sorted; a change here is a change of the public API
    for name in PUBLIC:
        assert getattr(dp, name) is not None


def test_errors_users_catch_are_public() -> None:
    from durapipe import errors

    assert dp.ConfigError is errors.ConfigError and dp.InvalidRunState is errors.InvalidRunState
    for name in PUBLIC:
        obj = getattr(dp, name)
        if isinstance(obj, type) and issubclass(obj, Exception):
            assert issubclass(obj, dp.DurapipeError), name


def test_every_public_name_and_method_has_a_docstring() -> None:
    gen = _gen()
    missing = []
    for name in PUBLIC:
        obj = getattr(dp, name)
        if not (callable(obj) or isinstance(obj, type)):
            if name not in gen.DATA_DOCS:
                missing.append(name)
            continue
        doc = _own_doc(obj)
        # a dataclass without a docstring gets its signature as one: that is not documentation
        if not doc or doc.startswith(f"{getattr(obj, '__name__', name)}("):
            missing.append(name)
        if isinstance(obj, type):
            for mname, member in gen.public_members(obj):
                fn = member.fget if isinstance(member, property) else member
                fn = getattr(fn, "__func__", fn)
                if not (fn.__doc__ or "").strip():
                    missing.append(f"{name}.{mname}")
    assert missing == []


def _public_signature(fn: Any) -> inspect.Signature:
    sig = inspect.signature(fn)
    return sig.replace(
        parameters=[p for p in sig.parameters.values() if not p.name.startswith("_")]
    )


def test_sync_client_has_the_clients_methods() -> None:
    gen = _gen()
    client = [n for n, _ in gen.public_members(dp.Client)]
    sync = [n for n, _ in gen.public_members(dp.SyncClient)]
    assert client == CLIENT_METHODS
    assert sync == CLIENT_METHODS
    for name in CLIENT_METHODS:
        if name == "connect":
            continue
        # parameters named _x are the CLI's hooks into the async Client, not API
        a = _public_signature(getattr(dp.Client, name))
        b = _public_signature(getattr(dp.SyncClient, name))
        assert list(a.parameters) == list(b.parameters), name
        assert [p.default for p in a.parameters.values()] == [
            p.default for p in b.parameters.values()
        ], name
        assert a.return_annotation == b.return_annotation, name


def test_user_docs_use_nothing_private() -> None:
    for doc in ("README.md", "docs/testing.md", "docs/api.md"):
        text = (ROOT / doc).read_text(encoding="utf-8")
        assert not re.search(r"durapipe\._[a-z]", text), doc
