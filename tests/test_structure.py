"""The package's shape: no import cycles, the core imports neither the toy world nor the
experiments, and a module longer than 400 lines says why in its docstring."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "atesd"
ENTRY_POINTS = {"atesd.cli", "atesd.__main__", "atesd.api"}  # the CLI and the Python API resolve toy: names


def _modules() -> dict[str, Path]:
    modules = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        modules[name] = path
    return modules


def import_graph() -> dict[str, set[str]]:
    """module → the atesd modules it imports (at module level or inside functions)."""
    modules = _modules()
    graph = {}
    for name, path in modules.items():
        targets = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                candidates = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                candidates = [a.name for a in node.names]
            else:
                continue
            targets |= {c for c in candidates if c in modules and c != name}
        # a package's __init__ re-exports its own modules: not an edge back into the importer
        graph[name] = {t for t in targets if not (t == name.rsplit(".", 1)[0])}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on_stack, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return out


def _is_package_init_edge(a: str, b: str) -> bool:
    return b.startswith(a + ".") or a.startswith(b + ".")


def test_no_import_cycles():
    graph = import_graph()
    # a package __init__ importing its submodules, which import siblings through the package, is not a cycle
    graph = {a: {b for b in targets if not _is_package_init_edge(a, b)} for a, targets in graph.items()}
    assert _cycles(graph) == []


def test_core_imports_neither_the_toy_world_nor_the_experiments():
    for module, targets in import_graph().items():
        if module in ENTRY_POINTS or module.startswith(("atesd.experiments", "atesd.toy")):
            continue
        bad = sorted(t for t in targets if t.startswith(("atesd.experiments", "atesd.toy")))
        assert not bad, f"{module} (core) imports {bad}"


def test_the_toy_world_does_not_import_the_experiments():
    for module, targets in import_graph().items():
        if module.startswith("atesd.toy"):
            assert not [t for t in targets if t.startswith("atesd.experiments")], module


def test_long_modules_say_why_in_their_docstring():
    for name, path in _modules().items():
        text = path.read_text()
        if len(text.splitlines()) > 400:
            docstring = ast.get_docstring(ast.parse(text)) or ""
            assert "longer than 400 lines" in docstring, f"{name}: {len(text.splitlines())} lines, no reason given"
