"""No import circle inside ``src/kimiflow``.

The rule: every ``import`` / ``from ... import`` of a kimiflow module is an edge, wherever it stands —
at module level, inside a function (the CLI's lazy imports that keep start-up light) or under
``if TYPE_CHECKING:``. A lazy import only changes *when* a module loads, not which module depends on
which, so a lazy import that closes a circle is still a circle. ``from pkg import name`` is an edge
to ``pkg.name`` when that is a module, else to ``pkg``. A package's ``__init__`` re-exporting its
own submodules is an edge from the package to them, but Python loading ``kimiflow.sim`` before
``kimiflow.sim.app`` is not an edge back (``app`` said nothing); ``from kimiflow.sim import Simulator``
inside ``kimiflow.sim.chat`` is one, and closes a circle.
Dynamic imports (``importlib.import_module`` with a string, as the CLI's command table does) are
not seen; they are how a lower layer is meant to reach an upper one without an edge.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = "kimiflow"
SRC = Path(__file__).resolve().parents[1] / "src" / PACKAGE


def module_names(root: Path = SRC) -> dict[str, Path]:
    """Every module of the package by dotted name (a package is its ``__init__``)."""
    modules: dict[str, Path] = {}
    for path in sorted(root.rglob("*.py")):
        parts = [PACKAGE, *path.relative_to(root).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def _resolve_relative(module: str, is_package: bool, level: int, target: str | None) -> str:
    base = module.split(".") if is_package else module.split(".")[:-1]
    if level > 1:
        base = base[: len(base) - (level - 1)]
    return ".".join([*base, target] if target else base)


def imports_of(module: str, path: Path, known: set[str]) -> set[str]:
    """The kimiflow modules that ``module`` imports anywhere in its source."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                found.add(alias.name)
        elif isinstance(node, ast.ImportFrom):
            base = (
                _resolve_relative(module, is_package, node.level, node.module) if node.level else (node.module or "")
            )
            for alias in node.names:
                candidate = f"{base}.{alias.name}"
                found.add(candidate if candidate in known else base)
    edges: set[str] = set()
    for name in found:
        # ``import kimiflow.a.b`` names the deepest module that exists.
        while name and name not in known:
            name = name.rpartition(".")[0]
        if name and name != module:
            edges.add(name)
    return edges


def import_graph(root: Path = SRC) -> dict[str, set[str]]:
    """Module -> the kimiflow modules it imports."""
    modules = module_names(root)
    known = set(modules)
    return {name: imports_of(name, path, known) for name, path in modules.items()}


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected component with more than one module, each as one concrete circle."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []
    counter = 0

    # Iterative Tarjan: the graph is small, but recursion depth should not depend on it.
    for start in sorted(graph):
        if start in index:
            continue
        work: list[tuple[str, list[str]]] = [(start, sorted(graph[start]))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, pending = work[-1]
            if pending:
                nxt = pending.pop(0)
                if nxt not in graph:
                    continue
                if nxt not in index:
                    index[nxt] = low[nxt] = counter
                    counter += 1
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, sorted(graph[nxt])))
                elif nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component: list[str] = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    components.append(sorted(component))
    return [_one_circle(graph, comp) for comp in components]


def _one_circle(graph: dict[str, set[str]], component: list[str]) -> list[str]:
    """A shortest path from the component's first module back to itself, for a readable message."""
    members = set(component)
    start = component[0]
    paths: dict[str, list[str]] = {start: [start]}
    queue = [start]
    while queue:
        node = queue.pop(0)
        for nxt in sorted(graph[node] & members):
            if nxt == start:
                return [*paths[node], start]
            if nxt not in paths:
                paths[nxt] = [*paths[node], nxt]
                queue.append(nxt)
    return component


# Circles known and owned elsewhere, each with the reason it is tolerated for now. Only the exact
# set of modules is excused: a new module joining the circle fails the test, and so does an entry
# that no longer matches any circle (remove it then).
KNOWN_CIRCLES: dict[frozenset[str], str] = {}


def test_no_import_circle_in_the_package() -> None:
    cycles = find_cycles(import_graph())
    new = [cycle for cycle in cycles if frozenset(cycle) not in KNOWN_CIRCLES]
    message = "\n".join(" -> ".join(cycle) for cycle in new)
    assert not new, f"import circles (lazy imports count, see the module docstring):\n{message}"


def test_every_known_circle_still_exists() -> None:
    """An excuse outlives its circle only until this test sees it: then delete the entry."""
    present = {frozenset(cycle) for cycle in find_cycles(import_graph())}
    stale = [sorted(members) for members in KNOWN_CIRCLES if members not in present]
    assert not stale, f"these circles are gone, remove them from KNOWN_CIRCLES: {stale}"


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        ({"a.py": "from kimiflow import b\n", "b.py": "def f():\n    import kimiflow.a\n"}, ["kimiflow.a", "kimiflow.b"]),
        ({"p/__init__.py": "", "p/x.py": "from .y import f\n", "p/y.py": "from kimiflow.p.x import g\n"},
         ["kimiflow.p.x", "kimiflow.p.y"]),
        ({"p/__init__.py": "from kimiflow.p.x import g\n", "p/x.py": "from kimiflow.p import y\n", "p/y.py": ""},
         []),
        ({"p/__init__.py": "from kimiflow.p.x import g\n", "p/x.py": "from kimiflow.p import h\n"},
         ["kimiflow.p", "kimiflow.p.x"]),
        ({"a.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from kimiflow.b import B\n",
          "b.py": "from kimiflow.a import A\n"}, ["kimiflow.a", "kimiflow.b"]),
        ({"a.py": "import kimiflow.b\n", "b.py": "import os\n"}, []),
    ],
    ids=["lazy-import-closes-circle", "relative-import", "package-init-reexport", "reaching-into-own-package", "type-checking-import", "no-circle"],
)
def test_the_checker_sees_circles(tmp_path: Path, files: dict[str, str], expected: list[str]) -> None:
    """The checker itself: lazy, relative and TYPE_CHECKING imports are edges; a package that
    re-exports a submodule is no circle, unless the submodule imports a name from the package."""
    root = tmp_path / PACKAGE
    root.mkdir()
    (root / "__init__.py").write_text("")
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    cycles = find_cycles(import_graph(root))
    assert sorted(m for cycle in cycles for m in set(cycle)) == expected
