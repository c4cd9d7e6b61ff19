"""The package's shape, read from its source: no import circles between its modules, every module short enough to
read, configuration on the ground floor (it imports no step above it), and each subpackage says what lives where.

Imports are read with ``ast``, at any depth (an import inside a function is an import too: it runs the module the
first time the function does). Importing ``open_r1_nb.config.loading`` from outside ``open_r1_nb/config/`` runs the
package's ``__init__`` first, so it counts as an import of ``open_r1_nb.config`` as well.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE_DIR = Path(__file__).resolve().parents[1] / "open_r1_nb"
ROOT = "open_r1_nb"
MAX_LINES = 700


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES: dict[str, Path] = {_module_name(p): p for p in sorted(PACKAGE_DIR.rglob("*.py"))}
PACKAGES = {name for name, path in MODULES.items() if path.name == "__init__.py"}


def _package_of(name: str) -> str:
    return name if name in PACKAGES else name.rpartition(".")[0]


def _targets(importer: str, node: ast.Import | ast.ImportFrom) -> list[str]:
    """The package's modules an import statement in ``importer`` names."""
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
    else:
        base = node.module or ""
        if node.level:
            anchor = _package_of(importer).split(".")
            anchor = anchor[: len(anchor) - (node.level - 1)]
            base = ".".join([*anchor, base] if base else anchor)
        # `from pkg import sub` names the submodule `pkg.sub`; `from mod import name` names `mod`.
        names = [
            f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base for alias in node.names
        ]
    return [name for name in names if name in MODULES]


def _with_parents(importer: str, target: str) -> set[str]:
    """``target`` plus the package ``__init__`` files that importing it runs, except those the importer is inside
    (they are already running) and the root package (every module of it runs that one)."""
    out = {target}
    parts = target.split(".")
    for depth in range(2, len(parts)):
        parent = ".".join(parts[:depth])
        if parent in PACKAGES and not (importer == parent or importer.startswith(parent + ".")):
            out.add(parent)
    return out


def import_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for name, path in MODULES.items():
        edges: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                for target in _targets(name, node):
                    edges |= _with_parents(name, target)
        edges.discard(name)
        graph[name] = edges
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected group of two or more modules (Tarjan), each as a sorted list."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return groups


def test_the_graph_reader_sees_imports_at_any_depth_and_package_inits():
    graph = import_graph()
    # A module-level import, an import inside a function, and the package __init__ an outside import runs.
    assert "open_r1_nb.paths" in graph["open_r1_nb.config.files"]
    assert "open_r1_nb.config" in graph["open_r1_nb.model"]
    assert "open_r1_nb.config.errors" in graph["open_r1_nb.evaluate.benchmarks"]
    assert "open_r1_nb.config" in graph["open_r1_nb.evaluate.benchmarks"]
    # Inside its own package a module does not re-enter the package's __init__.
    assert "open_r1_nb.config" not in graph["open_r1_nb.config.loading"]


def test_cycle_finder_finds_a_circle_and_only_a_circle():
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert find_cycles({"a": {"b"}, "b": set(), "c": {"a", "b"}}) == []


def test_no_import_cycles_between_the_package_modules():
    cycles = find_cycles(import_graph())
    assert not cycles, "modules that import each other in a circle: " + "; ".join(
        " <-> ".join(c) for c in cycles
    )


def test_configuration_imports_no_step_above_it():
    """Configuration is the ground floor of the workflow: it may read paths, the hardware and how a data source is
    named (split expressions), never the model, training, evaluation or pipeline steps that build on it."""
    allowed = {"open_r1_nb.paths", "open_r1_nb.hardware", "open_r1_nb.sources"}
    graph = import_graph()
    reached = {
        target
        for name, targets in graph.items()
        if name == "open_r1_nb.config" or name.startswith("open_r1_nb.config.")
        for target in targets
        if not target.startswith("open_r1_nb.config")
    }
    assert reached <= allowed, f"open_r1_nb.config imports {sorted(reached - allowed)}"


@pytest.mark.parametrize("name", sorted(MODULES))
def test_every_module_is_short_enough_to_read(name):
    lines = len(MODULES[name].read_text().splitlines())
    assert lines <= MAX_LINES, (
        f"{MODULES[name]} has {lines} lines; split it along a seam a newcomer finds by name"
    )


@pytest.mark.parametrize("package", sorted(PACKAGES - {ROOT}))
def test_each_subpackage_says_what_lives_where(package):
    doc = ast.get_docstring(ast.parse(MODULES[package].read_text())) or ""
    modules = sorted(n.rpartition(".")[2] for n in MODULES if n.rpartition(".")[0] == package)
    missing = [m for m in modules if f"``{m}``" not in doc]
    assert doc and not missing, f"{package}/__init__.py's docstring does not name {missing}"


def test_the_readme_map_names_every_module():
    """README's "Where things are" names every file of the package (subpackages as ``name/``), so that the map a
    newcomer reads first matches the tree."""
    readme = (PACKAGE_DIR.parent / "README.md").read_text()
    start = readme.index("## Where things are")
    section = readme[start : readme.index("\n## ", start + 1)]
    missing = [
        str(path.relative_to(PACKAGE_DIR))
        for path in MODULES.values()
        if path.name != "__init__.py" and path.name not in section
    ]
    missing += [
        f"{name.rpartition('.')[2]}/"
        for name in PACKAGES - {ROOT}
        if f"{name.rpartition('.')[2]}/" not in section
    ]
    assert not missing, f"README's map does not name {missing}"
