"""The store's layout (issue #15): SQL and the database drivers only in ``durapipe/_store/``, no
import cycle inside it, and no module or class there grown back into a monolith."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "durapipe"
STORE = PACKAGE / "_store"

# Modules that still hold SQL of their own until they call the store's methods for it (the
# restructure's other lanes); empty this once they do. Nothing may be added to it.
PENDING_WIRING: set[str] = set()  # files allowed SQL for now (none: everything is wired)

# What SQL, or a way around the store to the database, looks like in Python source.
SQL = re.compile(
    r"\b(PRAGMA|LISTEN|NOTIFY|pg_notify|SELECT |INSERT |UPDATE |DELETE FROM|CREATE |DROP )"
    r"|\bsqlalchemy\b|^\s*(import|from)\s+(asyncpg|sqlite3)\b",
    re.MULTILINE,
)

MODULE_LINES = 600  # guides for the store's files (issue #15, item 7)
CLASS_LINES = 300


def _rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def test_no_sql_outside_the_store() -> None:
    found: dict[str, list[str]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        if STORE in path.parents:
            continue
        text = path.read_text(encoding="utf-8")
        hits = sorted({m.group(0).strip() for m in SQL.finditer(text)})
        if hits:
            found[_rel(path)] = hits
    unexpected = {p: h for p, h in found.items() if p not in PENDING_WIRING}
    assert not unexpected, f"SQL or a database driver outside durapipe/_store/: {unexpected}"
    # An allowed module that no longer needs it comes off the list (so it cannot come back).
    assert set(found) == PENDING_WIRING, f"no SQL left in {PENDING_WIRING - set(found)}"


def _store_imports(path: Path) -> set[str]:
    """The ``durapipe._store`` modules ``path`` imports, wherever in the file (lazy and
    TYPE_CHECKING imports too: a cycle through them is still a cycle)."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            if node.level == 1:  # from . import x / from .x import y
                if node.module:
                    out.add(node.module.split(".")[0])
                else:
                    out.update(a.name for a in node.names)
            elif node.module and node.module.startswith("durapipe._store."):
                out.add(node.module.split(".")[2])
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("durapipe._store."):
                    out.add(a.name.split(".")[2])
    return out


def test_no_import_cycle_in_the_store() -> None:
    modules = {p.stem: p for p in STORE.glob("*.py") if p.stem != "__init__"}
    graph = {name: _store_imports(path) & set(modules) for name, path in modules.items()}
    done: set[str] = set()

    def visit(name: str, path: list[str]) -> None:
        if name in path:
            cycle = path[path.index(name) :] + [name]
            raise AssertionError(f"import cycle in durapipe/_store: {' -> '.join(cycle)}")
        if name in done:
            return
        for dep in sorted(graph[name]):
            visit(dep, [*path, name])
        done.add(name)

    for name in sorted(graph):
        visit(name, [])
    assert "store" not in set().union(*graph.values()), "store.py is the top: nothing imports it"


def test_the_store_has_no_monolith() -> None:
    for path in sorted(STORE.glob("*.py")):
        lines = path.read_text(encoding="utf-8").splitlines()
        assert len(lines) <= MODULE_LINES, f"{_rel(path)}: {len(lines)} lines"
        for node in ast.walk(ast.parse("\n".join(lines))):
            if isinstance(node, ast.ClassDef):
                size = (node.end_lineno or node.lineno) - node.lineno + 1
                assert size <= CLASS_LINES, f"{_rel(path)}: class {node.name}: {size} lines"


def test_one_notify_channel() -> None:
    """The NOTIFY channel is named once, in the PostgreSQL module; nothing spells it out."""
    sources = {_rel(p): p.read_text(encoding="utf-8") for p in sorted(PACKAGE.rglob("*.py"))}
    defined = [p for p, text in sources.items() if re.search(r"^NOTIFY_CHANNEL\s*=", text, re.M)]
    assert defined == ["durapipe/_store/postgres.py"]
    spelled = {
        p
        for p, text in sources.items()
        if re.search(r"""(add_listener|pg_notify)\(\s*['"]\w""", text)
    }
    assert spelled <= PENDING_WIRING, spelled
