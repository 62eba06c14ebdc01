"""The layout's rules, read from the source: the engine's imports form no cycle, and no
module reaches into another package for its underscore names.

Imports are read with :mod:`ast`, not by importing: every ``import`` counts, also one made
inside a function to dodge a cycle at import time; only ``if TYPE_CHECKING:`` blocks are
left out (they name types and never run). A cycle means two parts that cannot be
understood, tested or replaced one without the other; docs/architecture.md says which way
each dependency goes.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src"


@dataclass
class Module:
    name: str
    path: Path
    is_package: bool
    imports: dict[str, int] = field(default_factory=dict)
    """Imported Stoker module → the line of its first import."""
    private: list[tuple[str, str, int]] = field(default_factory=list)
    """(module, underscore name, line) for each ``from module import _name``."""

    @property
    def package(self) -> str:
        return self.name if self.is_package else self.name.rpartition(".")[0]


def _modules() -> dict[str, Module]:
    found: dict[str, Module] = {}
    for path in sorted((SRC / "stoker").rglob("*.py")):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        if is_package:
            parts.pop()
        found[".".join(parts)] = Module(".".join(parts), path, is_package)
    for module in found.values():
        _read_imports(module, found)
    return found


def _runtime_nodes(body: list[ast.stmt]) -> Iterator[ast.Import | ast.ImportFrom]:
    """Every import statement under ``body`` except those in ``if TYPE_CHECKING:``."""
    for node in body:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            yield from _runtime_nodes(node.orelse)
            continue
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
            continue
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.stmt):
                yield from _runtime_nodes([child])


def _read_imports(module: Module, known: dict[str, Module]) -> None:
    tree = ast.parse(module.path.read_text(), str(module.path))
    for node in _runtime_nodes(tree.body):
        if isinstance(node, ast.Import):
            targets = [(a.name, None) for a in node.names]
        else:
            if node.level:
                base = module.package.split(".")
                base = base[: len(base) - (node.level - 1)]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            targets = [(source, a.name) for a in node.names]
        for source, name in targets:
            submodule = f"{source}.{name}" if name else source
            target = submodule if submodule in known else source
            if target in known and target != module.name:
                module.imports.setdefault(target, node.lineno)
            if (
                name
                and name.startswith("_")
                and not name.startswith("__")
                and submodule not in known
            ):
                module.private.append((source, name, node.lineno))


def _cycles(modules: dict[str, Module], within: str) -> list[list[str]]:
    """The strongly connected groups (more than one module) among ``within``'s modules."""
    graph = {
        name: [t for t in m.imports if t == within or t.startswith(within + ".")]
        for name, m in modules.items()
        if name == within or name.startswith(within + ".")
    }
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group: list[str] = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for v in graph:
        if v not in index:
            visit(v)
    return groups


@pytest.fixture(scope="module")
def modules() -> dict[str, Module]:
    return _modules()


def test_the_reader_sees_the_packages_and_their_imports(modules: dict[str, Module]) -> None:
    # The checks below are only as good as the reading: it must find the engine's parts
    # and the edges between them, lazy imports included.
    assert {"stoker.engine", "stoker.engine.scheduler", "stoker.db.store"} <= set(modules)
    assert "stoker.db.store.queue" in modules["stoker.engine.scheduler"].imports
    assert "stoker.engine.api.app" in modules["stoker.engine"].imports  # imported lazily


@pytest.mark.parametrize("package", ["stoker.engine", "stoker.db", "stoker._core"])
def test_no_import_cycles(modules: dict[str, Module], package: str) -> None:
    cycles = _cycles(modules, package)
    described = []
    for group in cycles:
        edges = [
            f"{a} imports {b} (line {modules[a].imports[b]})"
            for a in group
            for b in modules[a].imports
            if b in group
        ]
        described.append("; ".join(edges))
    assert not cycles, "import cycles:\n" + "\n".join(described)


def test_a_cycle_is_found_when_there_is_one() -> None:
    a = Module("p.a", Path("a.py"), False, {"p.b": 1})
    b = Module("p.b", Path("b.py"), False, {"p.c": 1})
    c = Module("p.c", Path("c.py"), False, {"p.a": 3})
    d = Module("p.d", Path("d.py"), False, {"p.a": 1})
    assert _cycles({m.name: m for m in (a, b, c, d)}, "p") == [["p.a", "p.b", "p.c"]]


def test_no_module_imports_another_packages_underscore_names(
    modules: dict[str, Module],
) -> None:
    reaching = [
        f"{m.name} (line {line}) imports {name} from {source}"
        for m in modules.values()
        for source, name, line in m.private
        if source in modules and modules[source].package != m.package
    ]
    assert not reaching, "private names used across packages:\n" + "\n".join(reaching)
