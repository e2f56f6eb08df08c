"""The import graph of the packages: no cycles, data flows one way, and every import uses the
`plexrec.` namespace (a bare `import features` would only work from a checkout)."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("features", "models", "training", "serving", "cli", "proto")
# Which packages each package may import: the data flow of ARCHITECTURE.md. `cli` is the top.
ALLOWED = {
    "features": set(),
    "proto": {"features"},
    "models": {"features"},
    "training": {"features", "models"},
    "serving": {"features", "models", "proto"},
    "cli": {"features", "models", "training", "serving", "proto"},
}


def _modules() -> dict[str, Path]:
    mods = {}
    for pkg in PACKAGES:
        for path in (REPO / pkg).rglob("*.py"):
            if "_pb2" in path.name:
                continue
            rel = path.relative_to(REPO).with_suffix("")
            parts = list(rel.parts)
            if parts[-1] == "__init__":
                parts.pop()
            mods["plexrec." + ".".join(parts)] = path
    return mods


MODULES = _modules()


def _imports(path: Path) -> Iterator[tuple[int, str]]:
    """Every absolute import in the file, at any depth (function-level imports count too)."""
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.lineno, node.module
            for alias in node.names:
                yield node.lineno, f"{node.module}.{alias.name}"


def _own(name: str) -> str | None:
    """The project module an import name refers to (longest known prefix), if any."""
    while name:
        if name in MODULES:
            return name
        name = name.rpartition(".")[0]
    return None


def _graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {m: set() for m in MODULES}
    for mod, path in MODULES.items():
        for _, name in _imports(path):
            target = _own(name)
            if target and target != mod and not mod.startswith(target + "."):
                graph[mod].add(target)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    counter = 0
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                comp = []
                while True:
                    top = stack.pop()
                    on_stack.discard(top)
                    comp.append(top)
                    if top == node:
                        break
                if len(comp) > 1:
                    out.append(sorted(comp))
    return out


def test_the_graph_finds_a_planted_cycle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles() -> None:
    assert len(MODULES) > 50
    assert _cycles(_graph()) == []


@pytest.mark.parametrize("pkg", PACKAGES)
def test_data_flows_one_way(pkg: str) -> None:
    bad = []
    for mod, targets in _graph().items():
        if mod.split(".")[1] != pkg:
            continue
        for target in targets:
            other = target.split(".")[1]
            if other != pkg and other not in ALLOWED[pkg]:
                bad.append(f"{mod} imports {target}")
    assert bad == []


def test_every_import_uses_the_namespace() -> None:
    bare = []
    for root in (*PACKAGES, "tests", "bench"):
        for path in (REPO / root).rglob("*.py"):
            if "_pb2" in path.name:
                continue
            for line, name in _imports(path):
                if name.split(".")[0] in PACKAGES:
                    bare.append(f"{path.relative_to(REPO)}:{line}: {name}")
    assert bare == []


def test_every_package_is_installed() -> None:
    """pyproject.toml lists the packages explicitly (their folders are mapped): a new sub-package
    missing there would work from a checkout and be absent from a wheel."""
    import tomllib

    listed = set(tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
                 ["packages"])
    found = {"plexrec"}
    for pkg in PACKAGES:
        for init in (REPO / pkg).rglob("__init__.py"):
            found.add("plexrec." + ".".join(init.parent.relative_to(REPO).parts))
    assert found == listed
