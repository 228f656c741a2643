"""The house rules a newcomer relies on, held by reading the code (issue 18's "done when"):
modules small enough to read, no reaching into another module's private names, no import
cycles, a pure core that imports no I/O library, and capabilities declared rather than
discovered with ``getattr``."""

from __future__ import annotations

import ast
import graphlib
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("service", "consent", "training", "feature_repo", "bench")
#: About 400 lines: a module a newcomer reads in one sitting.
MAX_LINES = 400
#: Modules that are data tables, not code (none yet).
DATA_TABLES: frozenset[str] = frozenset()
#: What the pure core may not import: databases, brokers, HTTP, feature and model stores.
IO_LIBRARIES = (
    "sqlalchemy",
    "psycopg",
    "asyncpg",
    "redis",
    "kafka",
    "fastapi",
    "starlette",
    "httpx",
    "uvicorn",
    "feast",
    "mlflow",
)
#: Attributes read with ``getattr(obj, name, default)`` from objects that are not ours, and
#: whose they are.
FOREIGN_ATTRIBUTES = {
    "orig": "SQLAlchemy's wrapped DBAPI error",
    "path": "a Starlette route (mounts and websockets have none)",
    "pss": "psutil's memory info (Linux only)",
    "enable_online_feature_view_versioning": "Feast's registry config (newer Feast only)",
    "conn": "a thread's local storage",
    "pending": "a thread's local storage",
    "futures": "a thread's local storage",
}


def _modules() -> Iterator[tuple[str, Path]]:
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            relative = path.relative_to(ROOT)
            parts = list(relative.with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            yield ".".join(parts), path


@cache
def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), filename=str(path))


def _top_level_imports(path: Path) -> Iterator[ast.Import | ast.ImportFrom]:
    """Imports run when the module is imported (not those under ``if TYPE_CHECKING``, nor
    inside functions: both are deliberate ways out of a cycle or a heavy import)."""

    def walk(body: list[ast.stmt]) -> Iterator[ast.Import | ast.ImportFrom]:
        for node in body:
            if isinstance(node, ast.Import | ast.ImportFrom):
                yield node
            elif isinstance(node, ast.If):
                test = node.test
                if isinstance(test, ast.Name) and test.id == "TYPE_CHECKING":
                    continue
                yield from walk(node.body)
                yield from walk(node.orelse)
            elif isinstance(node, ast.Try):
                yield from walk(node.body)

    yield from walk(_tree(path).body)


def _resolve(module: str, node: ast.ImportFrom) -> str:
    if node.level == 0:
        return node.module or ""
    base = module.split(".")[: -node.level]
    return ".".join([*base, node.module] if node.module else base)


MODULES = dict(_modules())


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_module_is_over_about_400_lines(module: str) -> None:
    if module in DATA_TABLES:
        return
    lines = MODULES[module].read_text().count("\n")
    assert lines <= MAX_LINES, f"{module}: {lines} lines; split it by what each part does"


def test_no_module_imports_another_modules_private_names() -> None:
    found = []
    for module, path in MODULES.items():
        for node in ast.walk(_tree(path)):
            if isinstance(node, ast.ImportFrom):
                private = [a.name for a in node.names if a.name.startswith("_")]
                if any(not (n.startswith("__") and n.endswith("__")) for n in private):
                    found.append(f"{module}: from {_resolve(module, node)} import {private}")
    assert not found, "\n".join(found)


def test_there_are_no_import_cycles() -> None:
    graph: dict[str, set[str]] = {m: set() for m in MODULES}
    for module, path in MODULES.items():
        for node in _top_level_imports(path):
            targets = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [_resolve(module, node)]
                + [f"{_resolve(module, node)}.{a.name}" for a in node.names]
            )
            graph[module].update(t for t in targets if t in MODULES and t != module)
    # A package's __init__ importing its own submodules is how packages re-export: not a cycle.
    for module in graph:
        graph[module] = {t for t in graph[module] if not t.startswith(module + ".")}
    try:
        graphlib.TopologicalSorter(graph).prepare()
    except graphlib.CycleError as cycle:
        pytest.fail("import cycle: " + " -> ".join(cycle.args[1]))


def test_the_pure_core_imports_no_io_and_nothing_outside_it() -> None:
    found = []
    for module, path in MODULES.items():
        if not module.startswith("consent.rules"):
            continue
        for node in ast.walk(_tree(path)):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [_resolve(module, node)]
                if isinstance(node, ast.ImportFrom)
                else []
            )
            for name in names:
                top = name.split(".")[0]
                # The stand-alone verifier (stdlib and cryptography) is as pure as the core:
                # the core reads checkpoints with it rather than keep a second reading.
                ours = (
                    top in PACKAGES
                    and not name.startswith("consent.rules")
                    and name != "consent.verify_audit"
                )
                if top in IO_LIBRARIES or ours:
                    found.append(f"{module} imports {name}")
    assert not found, "\n".join(found)


def test_capabilities_are_declared_not_discovered_with_getattr() -> None:
    """``getattr(obj, "name", default)`` asks whether an object can do something; our
    interfaces declare it instead (``service/usecases/ports.py``). Allowed only for the
    attributes of objects that are not ours (``FOREIGN_ATTRIBUTES``)."""
    found = []
    for path in MODULES.values():
        for node in ast.walk(_tree(path)):
            if not (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id == "getattr"
                and len(node.args) == 3
                and isinstance(node.args[1], ast.Constant)
            ):
                continue
            if node.args[1].value in FOREIGN_ATTRIBUTES:
                continue
            where = f"{path.relative_to(ROOT)}:{node.lineno}"
            found.append(f"{where}: {ast.unparse(node)}")
    assert not found, "\n".join(found)
