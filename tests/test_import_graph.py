"""The modules of src/ import each other without cycles, counting imports inside functions too."""

import ast
from pathlib import Path
from typing import Dict, List, Optional, Set

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {"sm_dream": ROOT / "src" / "sm_dream", "sm_dream.eval_tasks": ROOT / "eval_tasks"}


def _modules() -> Dict[str, Path]:
    """Dotted module name -> file, for every .py file of the package (a package is its __init__)."""
    found = {}
    for prefix, folder in PACKAGES.items():
        for path in folder.rglob("*.py"):
            parts = list(path.relative_to(folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join([prefix] + parts)] = path
    return found


def _resolve(module: str, is_package: bool, node: ast.AST, known: Set[str]) -> List[str]:
    """The known modules an import statement loads (`from a import b` loads a, and a.b if a module)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names if alias.name in known]
    base: Optional[str] = node.module
    if node.level:
        package = module.split(".") if is_package else module.split(".")[:-1]
        package = package[: len(package) - (node.level - 1)]
        base = ".".join(package + ([node.module] if node.module else []))
    targets = [base] if base in known else []
    targets += [f"{base}.{alias.name}" for alias in node.names if f"{base}.{alias.name}" in known]
    return targets


def import_graph() -> Dict[str, Set[str]]:
    modules = _modules()
    graph = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        edges = set()
        for node in ast.walk(tree):  # every import, at module level or inside a function
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                edges.update(_resolve(name, path.name == "__init__.py", node, set(modules)))
        graph[name] = edges - {name}
    return graph


def find_cycle(graph: Dict[str, Set[str]]) -> Optional[List[str]]:
    """One cycle as [a, b, ..., a], or None (depth-first search with colours)."""
    state, stack = {}, []

    def visit(node: str) -> Optional[List[str]]:
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                cycle = visit(nxt)
                if cycle:
                    return cycle
        state[node] = "done"
        stack.pop()
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


def test_src_modules_have_no_import_cycle():
    graph = import_graph()
    assert "sm_dream.model.denoising" in graph and "sm_dream.model.modeling_sm_dream" in graph
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_loop_and_its_helpers_never_import_back_up():
    graph = import_graph()
    upper = {"sm_dream.model.generation_utils", "sm_dream.model.modeling_sm_dream", "sm_dream.model.denoising"}
    for helper in ("unmasking", "cache", "remasking", "decoding_trace", "soft_masking", "blocks", "positions",
                   "logit_rows", "row_ops", "sampling"):
        assert not graph[f"sm_dream.model.{helper}"] & upper, helper
    assert "sm_dream.model.generation_utils" not in graph["sm_dream.model.denoising"]


def test_the_checker_finds_cycles_through_function_level_imports(tmp_path, monkeypatch):
    package = tmp_path / "sm_dream"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("from .b import g\n\ndef f():\n    return g()\n")
    (package / "b.py").write_text("def g():\n    from . import a  # deferred\n    return a\n")
    (package / "c.py").write_text("import sm_dream.a\n")
    monkeypatch.setitem(PACKAGES, "sm_dream", package)
    monkeypatch.delitem(PACKAGES, "sm_dream.eval_tasks")
    graph = import_graph()
    assert graph["sm_dream.c"] == {"sm_dream.a"}
    assert find_cycle(graph) in (["sm_dream.a", "sm_dream.b", "sm_dream.a"], ["sm_dream.b", "sm_dream.a", "sm_dream.b"])


@pytest.mark.parametrize("graph,expected", [({"a": {"b"}, "b": set()}, None),
                                            ({"a": {"a2"}, "a2": {"a"}}, ["a", "a2", "a"])])
def test_find_cycle(graph, expected):
    assert find_cycle(graph) == expected
