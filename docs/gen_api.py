"""Generate docs/api.md, the Python API reference, from durapipe.__all__ and its docstrings.

    python docs/gen_api.py > docs/api.md

tests/unit/test_api_reference.py regenerates it and fails when docs/api.md differs. Signatures
are read with ``inspect`` (overloads with ``typing.get_overloads``), annotations as written in
the source; Google-style docstrings become Markdown (``Args:`` lists, ``::`` code blocks).
"""

from __future__ import annotations

import inspect
import re
import sys
import typing
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path or sys.path.index(str(ROOT)) != 0:
    sys.path.insert(0, str(ROOT))  # this checkout's durapipe, whatever else is installed

# Every name of durapipe.__all__, in the order the reference shows them.
SECTIONS: list[tuple[str, list[str]]] = [
    ("Defining pipelines", ["pipeline", "step", "PipelineDef", "transaction"]),
    (
        "Inside a pipeline",
        [
            "exec",
            "ExecResult",
            "sleep",
            "await_input",
            "run_subpipeline",
            "start_subpipeline",
            "ChildHandle",
            "continue_as_new",
            "tag",
            "gather",
            "patched",
            "now",
            "uuid4",
            "random",
            "context",
            "RunInfo",
            "secret",
            "Secret",
            "logger",
        ],
    ),
    ("Messages, published state and first", ["send", "recv", "set_event", "first", "FirstResult"]),
    ("Starting and steering runs", ["Client", "SyncClient", "RunView", "open_store", "Store"]),
    (
        "Errors",
        [
            "DurapipeError",
            "ConfigError",
            "DatabaseUnavailable",
            "RunNotFound",
            "InvalidRunState",
            "NotInPipeline",
            "NonDeterminismError",
            "SerializationError",
            "StepFailed",
            "ExecFailed",
            "StepTimeout",
            "SubpipelineFailed",
            "InputTimeout",
            "VersionMismatch",
            "RunFailed",
            "MessageTimeout",
        ],
    ),
    ("Schedules", ["Cron", "Every", "ScheduleView"]),
    # Queues (issue #18)
    ("Queues", ["Queue", "QueueView"]),
]

# Public by name but not API: helpers the CLI and the testing kit use.
INTERNAL_MEMBERS: dict[str, set[str]] = {
    "Client": {"create_run", "resolve", "row", "store_now", "check_resumable", "placement"},
    "RunView": {"of"},
    "PipelineDef": {"bind_inputs"},
    "ScheduleView": {"of"},
    "Cron": {"kind", "spec"},
    "Every": {"kind", "spec", "tz"},
    "QueueView": {"of"},
}
# Handles a program is given, not builds: no constructor, and (Store) no methods shown.
NOT_CONSTRUCTED = {
    "PipelineDef",
    "RunView",
    "RunInfo",
    "ExecResult",
    "Store",
    "ScheduleView",
    "QueueView",
}
OPAQUE = {"Store"}

# Public objects that are neither functions nor classes, so carry no docstring of their own.
DATA_DOCS = {
    "logger": (
        "The pipelines' logger (``logging.Logger`` named ``durapipe.pipeline``, level INFO).\n\n"
        "Lines logged through it inside a run go to the console and to the run's logs "
        "(``durapipe logs RUN_ID``) under the prefix of the step they come from; a record "
        "logged again on replay is not repeated."
    ),
}


def _md(doc: str) -> str:
    """A Google-style docstring (as inspect.getdoc cleans it) as Markdown."""
    doc = re.sub(r":(?:class|func|meth|attr|exc):`~?([^`]+)`", r"``\1``", doc)
    doc = doc.replace("``", "`")
    lines = doc.splitlines()
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        stripped = line.strip()
        if stripped.endswith("::"):  # a literal block follows, indented
            head = line.rstrip()[:-2].rstrip()
            if head:
                out.append(head + ":")
            i += 1
            block: list[str] = []
            while i < len(lines) and (not lines[i].strip() or lines[i].startswith((" ", "\t"))):
                block.append(lines[i])
                i += 1
            while block and not block[-1].strip():
                block.pop()
            while block and not block[0].strip():
                block.pop(0)
            if out and out[-1]:
                out.append("")
            out.append("```python")
            out.extend(_dedent(block))
            out.append("```")
            out.append("")
            continue
        if stripped in ("Args:", "Returns:", "Raises:", "Attributes:") and not line.startswith(" "):
            out.append(f"**{stripped[:-1]}**")
            out.append("")
            i += 1
            items: list[str] = []
            while i < len(lines) and (not lines[i].strip() or lines[i].startswith(" ")):
                text = lines[i]
                if not text.strip():
                    i += 1
                    continue
                indent = len(text) - len(text.lstrip())
                if items and indent > _item_indent(lines, i):
                    items[-1] += " " + text.strip()
                else:
                    items.append(text.strip())
                i += 1
            for item in items:
                name, sep, rest = item.partition(": ")
                if stripped == "Returns:" or not sep or " " in name.strip("*"):
                    out.append(f"- {item}" if stripped != "Returns:" else item)
                else:
                    out.append(f"- `{name}`: {rest}")
            out.append("")
            continue
        out.append(line)
        i += 1
    text = "\n".join(out)
    return re.sub(r"\n{3,}", "\n\n", text).strip()


def _item_indent(lines: list[str], i: int) -> int:
    """The indentation of the items of the section that line ``i`` is in."""
    j = i
    while j > 0 and lines[j - 1].startswith(" "):
        j -= 1
    first = lines[j]
    return len(first) - len(first.lstrip())


def _dedent(block: list[str]) -> list[str]:
    widths = [len(b) - len(b.lstrip()) for b in block if b.strip()]
    cut = min(widths) if widths else 0
    return [b[cut:] if b.strip() else "" for b in block]


def _annotation(ann: Any) -> str:
    if ann is inspect.Parameter.empty:
        return ""
    text = ann if isinstance(ann, str) else inspect.formatannotation(ann)
    return re.sub(r"\b(?:builtins|_\w+)\.", "", text)  # builtins.list, _exec.ExecResult


def _default(value: Any) -> str:
    text = repr(value)
    return "..." if re.search(r" at 0x[0-9a-f]+>$", text) else text  # a sentinel


def _signature(
    name: str, sig: inspect.Signature, *, drop_self: bool = False, returns: bool = True
) -> str:
    parts: list[str] = []
    params = list(sig.parameters.values())
    if drop_self and params and params[0].name in ("self", "cls"):
        params = params[1:]
    params = [p for p in params if not p.name.startswith("_")]  # internal hooks, not API
    seen_kw_only = False
    for n, p in enumerate(params):
        if p.kind is p.VAR_POSITIONAL:
            seen_kw_only = True
            text = f"*{p.name}"
        elif p.kind is p.VAR_KEYWORD:
            text = f"**{p.name}"
        else:
            if p.kind is p.KEYWORD_ONLY and not seen_kw_only:
                parts.append("*")
                seen_kw_only = True
            text = p.name
        ann = _annotation(p.annotation)
        if ann:
            text += f": {ann}"
        if p.default is not p.empty:
            text += f" = {_default(p.default)}" if ann else f"={_default(p.default)}"
        parts.append(text)
        if p.kind is p.POSITIONAL_ONLY and (
            n + 1 == len(params) or params[n + 1].kind is not p.POSITIONAL_ONLY
        ):
            parts.append("/")
    ret = _annotation(sig.return_annotation) if returns else ""
    one = f"{name}({', '.join(parts)})" + (f" -> {ret}" if ret else "")
    if len(one) <= 96:
        return one
    body = "".join(f"    {p},\n" for p in parts)
    return f"{name}(\n{body})" + (f" -> {ret}" if ret else "")


def _function_signatures(
    name: str, fn: Any, *, drop_self: bool = False, prefix: str | None = None
) -> list[str]:
    target = fn.__func__ if isinstance(fn, classmethod | staticmethod) else fn
    overloads = typing.get_overloads(target)
    sigs = overloads or [target]
    if prefix is None:
        prefix = "async def " if inspect.iscoroutinefunction(target) else "def "
    return [
        prefix
        + _signature(name, inspect.signature(s), drop_self=drop_self, returns=prefix != "class ")
        for s in sigs
    ]


def _own_doc(obj: Any) -> str:
    doc = obj.__dict__.get("__doc__") if isinstance(obj, type) else getattr(obj, "__doc__", None)
    text = inspect.cleandoc(doc) if doc else ""
    if isinstance(obj, type) and obj.__name__ in OPAQUE:  # the user's part, not "Internals: ..."
        text = text.split("\n\nInternals:", 1)[0]
    return text


def _code(lines: list[str]) -> list[str]:
    return ["```python", *"\n\n".join(lines).splitlines(), "```", ""]


def public_members(cls: type) -> list[tuple[str, Any]]:
    """The methods and properties of ``cls`` that are API, in source order."""
    if cls.__name__ in OPAQUE:
        return []
    hidden = INTERNAL_MEMBERS.get(cls.__name__, set())
    members = []
    # A class's own members, then those of the *Methods mixins it is put together from
    # (Client's schedule methods live in a module of their own).
    mixins = [b for b in cls.__bases__ if b.__name__.endswith("Methods")]
    for klass in (cls, *mixins):
        for name, value in klass.__dict__.items():
            if name.startswith("_") or name in hidden:
                continue
            if isinstance(value, property | classmethod | staticmethod) or inspect.isfunction(
                value
            ):
                members.append((name, value))
    return members


def _class(name: str, cls: type, out: list[str]) -> None:
    bases = [b.__name__ for b in cls.__bases__ if b is not object]
    if issubclass(cls, BaseException) or name in NOT_CONSTRUCTED:
        params = getattr(cls, "__parameters__", ())
        generic = f"[{', '.join(p.__name__ for p in params)}]" if params else ""
        base = f"({', '.join(bases)})" if bases and issubclass(cls, BaseException) else ""
        out.extend(_code([f"class {name}{generic}{base}"]))
    else:
        out.extend(_code(_function_signatures(name, cls.__init__, drop_self=True, prefix="class ")))
    out.append(_md(_own_doc(cls)))
    out.append("")
    for mname, member in public_members(cls):
        out.append(f"#### `{name}.{mname}`")
        out.append("")
        if isinstance(member, property):
            ret = _annotation(inspect.signature(member.fget).return_annotation)  # type: ignore[arg-type]
            out.extend(_code([f"{mname}: {ret}  # property"]))
            doc = _own_doc(member.fget)
        else:
            kind = "@classmethod\n" if isinstance(member, classmethod) else ""
            kind = "@staticmethod\n" if isinstance(member, staticmethod) else kind
            sigs = _function_signatures(
                mname, member, drop_self=not isinstance(member, staticmethod)
            )
            out.extend(_code([kind + s for s in sigs]))
            doc = _own_doc(
                member.__func__ if isinstance(member, classmethod | staticmethod) else member
            )
        out.append(_md(doc))
        out.append("")


def generate() -> str:
    import durapipe

    listed = [n for _, names in SECTIONS for n in names]
    missing = sorted(set(durapipe.__all__) - set(listed))
    extra = sorted(set(listed) - set(durapipe.__all__))
    if missing or extra:
        raise SystemExit(
            f"docs/gen_api.py SECTIONS is out of date: missing {missing}, not public {extra}"
        )
    out = [
        "# durapipe Python API reference",
        "",
        "<!-- Generated from durapipe.__all__ and its docstrings by docs/gen_api.py; do not edit by",
        "     hand. Regenerate with: python docs/gen_api.py > docs/api.md -->",
        "",
        _md(inspect.cleandoc(durapipe.__doc__ or "")),
        "",
        "Everything below is imported from the package itself (`import durapipe as dp`); modules",
        "whose names start with `_` are internal. The package is typed (`py.typed`). The testing",
        "kit, `durapipe.testing`, is described in [testing.md](testing.md); the command line in",
        "[cli.md](cli.md).",
        "",
    ]
    for title, names in SECTIONS:
        out.append(f"- {title}: " + ", ".join(f"[`{n}`](#dp{n.lower()})" for n in names))
    out.append("")
    for title, names in SECTIONS:
        out.append(f"## {title}")
        out.append("")
        for name in names:
            obj = getattr(durapipe, name)
            out.append(f"### `dp.{name}`")
            out.append("")
            if name in DATA_DOCS:
                out.append(_md(DATA_DOCS[name]))
                out.append("")
            elif isinstance(obj, type):
                _class(name, obj, out)
            else:
                out.extend(_code(_function_signatures(name, obj)))
                out.append(_md(_own_doc(obj)))
                out.append("")
    return "\n".join(out).rstrip() + "\n"


if __name__ == "__main__":
    sys.stdout.write(generate())
