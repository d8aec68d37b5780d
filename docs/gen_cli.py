"""Generate docs/cli.md, the CLI reference, from the typer app itself.

    python docs/gen_cli.py > docs/cli.md

tests/unit/test_cli_reference.py regenerates it and fails when docs/cli.md differs. The walk uses
the click command objects typer builds (typer.main.get_command), reading only attributes that
click and typer's own vendored click share, so the output does not depend on terminal width.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path or sys.path.index(str(ROOT)) != 0:
    sys.path.insert(0, str(ROOT))  # this checkout's durapipe, whatever else is installed


def _cell(text: Any) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def _type_name(param: Any, ctx: Any) -> str:
    if getattr(param, "is_flag", False):
        return "flag"
    display = getattr(param, "display_type", None)
    name = ""
    if callable(display):  # typer's own parameters: "<int>", "<list[str]>"
        try:
            name = str(display(ctx)).strip("<>")
        except Exception:  # noqa: BLE001 - fall back to click's type below
            name = ""
    if not name:
        name = str(getattr(getattr(param, "type", None), "name", "text"))
    if name.startswith("list[") and name.endswith("]"):  # a repeatable option: the item type
        name = name[5:-1]
    name = name.upper()
    return {"STR": "TEXT", "INT": "INTEGER", "BOOL": "BOOLEAN"}.get(name, name)


def _default(param: Any) -> str:
    if getattr(param, "is_flag", False) or param.required:
        return ""
    value = param.default
    if value is None or value == () or value is False:
        return ""
    return f"`{value}`"


def _envvar(param: Any) -> str:
    env = getattr(param, "envvar", None)
    if not env:
        return ""
    names = [env] if isinstance(env, str) else list(env)
    return ", ".join(f"`{n}`" for n in names)


def _is_argument(param: Any) -> bool:
    return getattr(param, "param_type_name", "") == "argument"


def _usage(path: str, command: Any) -> str:
    parts = [path]
    params = [p for p in command.params if not getattr(p, "hidden", False)]
    if any(not _is_argument(p) for p in params):
        parts.append("[OPTIONS]")
    for p in params:
        if _is_argument(p):
            name = (p.name or "").upper()
            parts.append(name if p.required else f"[{name}]")
    return " ".join(parts)


def _command(path: str, command: Any, ctx: Any, out: list[str]) -> None:
    out.append(f"## {path}")
    out.append("")
    out.append(f"```\n{_usage(path, command)}\n```")
    out.append("")
    if command.help:
        out.append(command.help.strip())
        out.append("")
    params = [p for p in command.params if not getattr(p, "hidden", False)]
    args = [p for p in params if _is_argument(p)]
    opts = [p for p in params if not _is_argument(p)]
    if args:
        out.append("| argument | required | description |")
        out.append("|---|---|---|")
        for p in args:
            req = "yes" if p.required else "no"
            out.append(
                f"| `{(p.name or '').upper()}` | {req} | {_cell(getattr(p, 'help', None) or '')} |"
            )
        out.append("")
    if opts:
        out.append("| option | type | default | env var | description |")
        out.append("|---|---|---|---|---|")
        for p in opts:
            names = ", ".join(f"`{o}`" for o in [*p.opts, *p.secondary_opts])
            help_text = p.help or ""
            if p.required:
                help_text = f"{help_text} (required)".strip()
            if getattr(p, "multiple", False):
                help_text = (
                    f"{help_text} (repeatable)".strip()
                    if "Repeatable" not in help_text
                    else help_text
                )
            out.append(
                f"| {names} | {_type_name(p, ctx)} | {_default(p)} | {_envvar(p)} | {_cell(help_text)} |"
            )
        out.append("")


def _walk(path: str, group: Any, ctx: Any, out: list[str]) -> None:
    for name in group.list_commands(ctx):
        cmd = group.get_command(ctx, name)
        if cmd is None or getattr(cmd, "hidden", False):
            continue
        sub_ctx = type(ctx)(cmd, info_name=name, parent=ctx)
        if hasattr(cmd, "list_commands"):
            _walk(f"{path} {name}", cmd, sub_ctx, out)
        else:
            _command(f"{path} {name}", cmd, sub_ctx, out)


def generate() -> str:
    import typer

    from durapipe.cli import app

    group = typer.main.get_command(app)
    ctx = type(group.make_context("durapipe", [], resilient_parsing=True))(
        group, info_name="durapipe"
    )
    out = [
        "# durapipe command reference",
        "",
        "<!-- Generated from durapipe/cli/ by docs/gen_cli.py; do not edit by hand.",
        "     Regenerate with: python docs/gen_cli.py > docs/cli.md -->",
        "",
        (group.help or "").strip(),
        "",
        "Every command that touches the database takes `--database-url` (or the environment",
        "variable `DURAPIPE_DATABASE_URL`): `sqlite:///path.db` or",
        "`postgresql://user:password@host:port/dbname`; the default is `sqlite:///durapipe.db` in",
        "the working directory. `--input` values are JSON when they parse, else strings. Exit",
        "codes: 0 success, 1 an error (one line on stderr) or a run that did not complete, 2 a",
        "usage error, 130 interrupted (Ctrl-C); `result --wait --timeout` exits 3 on timeout.",
        "",
        "Commands:",
        "",
    ]
    body: list[str] = []
    _walk("durapipe", group, ctx, body)
    for line in body:
        if line.startswith("## "):
            title = line[3:]
            anchor = title.replace(" ", "-")
            out.append(f"- [`{title}`](#{anchor})")
    out.append("")
    out.extend(body)
    return "\n".join(out).rstrip() + "\n"


if __name__ == "__main__":
    sys.stdout.write(generate())
