"""The package's shape: no import cycle between its sub-packages (tinytrain.X)."""
from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import tinytrain

ROOT = Path(tinytrain.__file__).parent


def _unit(name: str) -> str | None:
    """tinytrain.X[.Y...] -> X when X is a sub-package or module of tinytrain; None otherwise."""
    parts = name.split(".")
    if parts[0] != "tinytrain" or len(parts) < 2:
        return None
    x = parts[1]
    return x if (ROOT / x).is_dir() or (ROOT / f"{x}.py").is_file() else None


def import_graph() -> dict[str, dict[str, list[str]]]:
    """{unit: {imported unit: ["tinytrain/a/b.py:12", ...]}} from every import statement, function-level
    ones included (a lazy import is still a dependency)."""
    graph: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    for path in sorted(ROOT.rglob("*.py")):
        parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
        package = parts[:-1]                     # what a relative import is relative to
        if parts[-1] == "__init__":
            parts = parts[:-1]
        src = _unit(".".join(parts))
        if src is None:
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package[:len(package) - (node.level - 1)]
                    base = ".".join(up + ([node.module] if node.module else []))
                names = [base] if node.module else [f"{base}.{a.name}" for a in node.names]
            else:
                continue
            for name in names:
                dst = _unit(name)
                if dst is not None and dst != src:
                    graph[src][dst].append(f"{path.relative_to(ROOT.parent)}:{node.lineno}")
    return graph


def find_cycle(graph: dict[str, dict[str, list[str]]]) -> list[str] | None:
    """One cycle as [a, b, ..., a], or None."""
    state: dict[str, int] = {}      # 1 on the current path, 2 done
    stack: list[str] = []

    def visit(u: str) -> list[str] | None:
        state[u] = 1
        stack.append(u)
        for v in sorted(graph.get(u, {})):
            if state.get(v) == 1:
                return stack[stack.index(v):] + [v]
            if v not in state and (found := visit(v)):
                return found
        stack.pop()
        state[u] = 2
        return None

    for u in sorted(graph):
        if u not in state and (found := visit(u)):
            return found
    return None


def test_the_graph_sees_relative_lazy_and_absolute_imports():
    graph = import_graph()
    assert "models" in graph["methods"] and "costs" in graph["methods"]        # from ..models... / lazy ones
    assert "models" in graph["costs"] and "cli" in graph["__main__"]
    assert find_cycle({"a": {"b": []}, "b": {"c": []}, "c": {"a": []}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b": []}, "b": {}}) is None


def test_no_import_cycle_between_sub_packages():
    graph = import_graph()
    cycle = find_cycle(graph)
    if cycle:
        where = "; ".join(f"{a} -> {b} at {', '.join(graph[a][b][:3])}" for a, b in zip(cycle, cycle[1:]))
        raise AssertionError(f"package import cycle {' -> '.join(cycle)} ({where})")
