"""The package's layers, seen from its source: no import circles, counting imports inside functions.

import-linter (`lint-imports`, run by `make test`, contract in pyproject.toml) checks the layer order;
this walk also follows the imports that only run when a function is called, which is where circles
used to hide (api <-> sensitivity <-> train.learner, data.builtin <-> data.sources).
"""

from __future__ import annotations

import ast
from pathlib import Path

import fastcls

PACKAGE = Path(fastcls.__file__).parent


def _modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _imports(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """Every fastcls module `name` imports anywhere in its file, and the packages those live in."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in _runtime_nodes(ast.parse(path.read_text(encoding="utf-8"))):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                stem = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*stem, base] if base else stem)
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            while target.startswith("fastcls."):  # importing a.b.c runs the package a.b too ...
                if not name.startswith(target + "."):  # ... unless it is one this module lives in (already loaded)
                    found.add(target)
                target = target.rpartition(".")[0]
    found.discard(name)
    return found


def _runtime_nodes(tree: ast.AST):
    """Every node except those under `if TYPE_CHECKING:` (annotations only: they never run, so they
    cannot close a circle; import-linter still holds them to the layers)."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and getattr(node.test, "id", getattr(node.test, "attr", "")) == "TYPE_CHECKING":
            yield from (n for child in node.orelse for n in _runtime_nodes_of(child))
            continue
        yield from _runtime_nodes_of(node)


def _runtime_nodes_of(node: ast.AST):
    yield node
    yield from _runtime_nodes(node)


def _graph() -> dict[str, set[str]]:
    known = _modules()
    return {name: _imports(name, path, known) for name, path in known.items()}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle, as the modules along it, or None."""
    state: dict[str, int] = {}
    trail: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        trail.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*trail[trail.index(nxt) :], nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        state[node] = 2
        trail.pop()
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_no_module_imports_the_root_package() -> None:
    """`fastcls/__init__.py` is the lazy public facade; code inside the package imports what it means."""
    offenders = sorted(name for name, path in _modules().items() if _imports_root(path))
    assert offenders == []


def _imports_root(path: Path) -> bool:
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module == "fastcls" and not node.level:
            return True
        if isinstance(node, ast.Import) and any(alias.name == "fastcls" for alias in node.names):
            return True
    return False


def test_no_import_circles_even_inside_functions() -> None:
    graph = _graph()
    assert len(graph) > 50 and graph["fastcls.api"] >= {"fastcls.config", "fastcls.data"}
    assert _cycle(graph) is None, " -> ".join(_cycle(graph) or [])


def test_the_walk_sees_a_circle_inside_a_function() -> None:
    """The checker itself: a circle closed by an in-function import is found."""
    graph = {"fastcls.a": {"fastcls.b"}, "fastcls.b": {"fastcls.c"}, "fastcls.c": {"fastcls.a"}}
    assert _cycle(graph) == ["fastcls.a", "fastcls.b", "fastcls.c", "fastcls.a"]
    assert _cycle({"fastcls.a": {"fastcls.b"}, "fastcls.b": set()}) is None


def test_no_module_imports_another_modules_private_names() -> None:
    """`from fastcls.x import _helper` ties two modules' insides together: a shared helper is public."""
    offenders = []
    for name, path in _modules().items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("fastcls"):
                offenders += [f"{name}: {node.module}.{a.name}" for a in node.names if _private(a.name)]
    assert offenders == []


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))
