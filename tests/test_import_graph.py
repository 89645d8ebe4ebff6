# SPDX-License-Identifier: GPL-2.0-only
"""No import cycle between quichsd's modules (issue 10, item 3).

The graph is read from the source: an edge for every module an ``import``
statement names, wherever the statement stands (module level, inside a
function, under ``if TYPE_CHECKING``), so a cycle hidden behind a lazy import
counts too.  ``from package import name`` is an edge to ``package.name`` when
that is a module, else to the package itself.  The parent package that Python
runs before a submodule is not an edge: it is what a package is.
"""

from __future__ import annotations

import ast
import importlib
from collections.abc import Iterator
from pathlib import Path

import pytest

import quichsd

PACKAGE_DIR = Path(quichsd.__file__).parent


def _modules() -> dict[str, Path]:
    """Every module of the package by dotted name (a package by its __init__.py)."""
    found = {}
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


MODULES = _modules()


def _is_module(name: str) -> bool:
    """A module of ours, or an extension module beside them (``tls/_events*.so``)."""
    if name in MODULES:
        return True
    *package, leaf = name.split(".")
    folder = PACKAGE_DIR.parent.joinpath(*package)
    return any(folder.glob(f"{leaf}.*")) or (folder / leaf).is_dir()


def _imports(name: str, path: Path) -> Iterator[str]:
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            for alias in node.names:
                child = f"{target}.{alias.name}"
                yield child if _is_module(child) else target


def import_graph() -> dict[str, set[str]]:
    return {
        name: {target for target in _imports(name, path) if target in MODULES and target != name}
        for name, path in MODULES.items()
    }


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_package_has_no_import_cycle() -> None:
    assert cycles(import_graph()) == []


def test_the_graph_sees_imports_a_cycle_could_hide_in() -> None:
    """The edges the two broken cycles were made of, and the kinds of statement that
    hid them, are in the graph: a test that read only top-level imports would pass
    with both cycles back."""
    graph = import_graph()
    assert "quichsd.tls.config" in graph["quichsd.tls.session_setup"]
    assert "quichsd.daemon.dispatch" in graph["quichsd.daemon.jobs.tcp"]
    assert "quichsd.tls.levels" in graph["quichsd.tls.config"]  # from-import of a module
    assert "quichsd.tls" in graph["quichsd.quic.aio"]  # from-import of a name
    # records.py imports the optional C extension inside a function: a module, no edge.
    assert _is_module("quichsd.tls._events") and "quichsd.tls" not in graph["quichsd.tls.records"]
    assert not _is_module("quichsd.tls.Role")


def test_the_cycle_finder_finds_cycles() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert cycles(graph) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


@pytest.mark.parametrize("name", sorted(set(MODULES) - {"quichsd.__main__"}))
def test_every_module_imports(name: str) -> None:
    """The graph is of modules that exist and import (``__main__`` runs the CLI)."""
    assert importlib.import_module(name).__file__ == str(MODULES[name])
