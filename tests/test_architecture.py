"""The layering of docs/ARCHITECTURE.md, checked on the source: which thoracic module imports which.

Imports are read with ``ast`` (module level and inside functions; annotation-only imports under
``if TYPE_CHECKING:`` do not count), so the test needs no import of the package itself.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "thoracic"

#: Layer of each top-level module or package of thoracic (docs/ARCHITECTURE.md): a module may import its
#: own layer and the ones below, never a higher one.
LAYERS: dict[str, int] = {
    "__init__": 0, "constants": 0, "errors": 0, "io": 0, "safety": 0, "config": 0, "maps": 0, "geometry": 0,
    "provenance": 0, "runtime": 0, "metrics": 0, "deprecation": 0, "spec": 0,
    "data": 1,
    "models": 2,
    "losses": 3,
    "heatmaps": 4,
    "training": 5,
    "evaluation": 6,
    "reporting": 7, "prediction": 7,
    "workflows": 8,
    "commands": 9, "cli": 9, "__main__": 9,
}

#: Function-local imports of thoracic modules outside the command-line layer (which imports on use so that
#: ``thoracic --help`` stays fast), each with its reason. Nothing else may import inside a function.
LOCAL_IMPORTS_ALLOWED: dict[tuple[str, str], str] = {
    ("thoracic.workflows.predict", "thoracic.training.checkpoints"):
        "an exported model runs without the model code and Lightning (thoracic predict FILE IMAGE...)",
}


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _resolve(module: str, node: ast.ImportFrom, is_package: bool) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".")
    base = base if is_package else base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped.update(id(child) for child in ast.walk(node))
    return skipped


def import_graph() -> dict[str, list[tuple[str, bool]]]:
    """``module -> [(imported thoracic module, imported inside a function)]``."""
    graph: dict[str, list[tuple[str, bool]]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        module = _module_name(path)
        tree = ast.parse(path.read_text())
        skipped = _type_checking_nodes(tree)
        top_level = {id(node) for node in tree.body}
        edges = []
        for node in ast.walk(tree):
            if id(node) in skipped:
                continue
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [_resolve(module, node, path.name == "__init__.py")]
            else:
                continue
            for name in names:
                if name == "thoracic" or name.startswith("thoracic."):
                    edges.append((name, id(node) not in top_level))
        graph[module] = edges
    return graph


def _layer(module: str) -> int:
    parts = module.split(".")
    return LAYERS[parts[1] if len(parts) > 1 else "__init__"]


def _top(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def test_every_top_level_module_has_a_layer() -> None:
    names = {p.stem if p.is_file() else p.name for p in PACKAGE.iterdir()
             if (p.suffix == ".py") or (p.is_dir() and (p / "__init__.py").is_file())}
    assert names <= set(LAYERS), f"no layer for {sorted(names - set(LAYERS))}: add it to LAYERS and ARCHITECTURE.md"


def test_no_module_imports_a_higher_layer() -> None:
    upward = [f"{module} -> {target}" for module, edges in import_graph().items() for target, _ in edges
              if _layer(target) > _layer(module)]
    assert not upward, "imports against the layering:\n" + "\n".join(upward)


def test_libraries_never_import_workflows_or_commands() -> None:
    wrong = [f"{module} -> {target}" for module, edges in import_graph().items()
             if _top(module) not in ("workflows", "commands", "cli", "__main__") for target, _ in edges
             if _top(target) in ("workflows", "commands", "cli")]
    assert not wrong, "\n".join(wrong)


def test_no_import_cycle_between_modules() -> None:
    graph = {m: sorted({t for t, _ in edges if t != m}) for m, edges in import_graph().items()}
    # Tarjan's strongly connected components: any component of two or more modules is a cycle
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph.get(node, []):
            # importing a package runs its __init__: an edge to the package module itself
            if target not in graph:
                continue
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
                cycles.append(sorted(component))

    for module in graph:
        if module not in index:
            visit(module)
    assert not cycles, f"import cycles: {cycles}"


def test_function_local_imports_only_in_the_command_line_layer_or_with_a_reason() -> None:
    local = [(module, target) for module, edges in import_graph().items() for target, inside in edges
             if inside and _top(module) not in ("commands", "cli", "__main__")]
    unexplained = [f"{m} -> {t}" for m, t in local if (m, t) not in LOCAL_IMPORTS_ALLOWED]
    assert not unexplained, "function-local imports (import at module level, or explain why not):\n" + \
        "\n".join(unexplained)
    stale = [key for key in LOCAL_IMPORTS_ALLOWED if key not in local]
    assert not stale, f"allowed local imports that no longer exist: {stale}"


def test_commands_only_parse_arguments_and_call_a_library_or_workflow() -> None:
    """A command module defines ``add_arguments`` and ``run`` (and small argument helpers), nothing that
    computes: no class but argparse actions, and no function longer than what parsing and printing take."""
    too_long = []
    for path in sorted((PACKAGE / "commands").glob("*.py")):
        tree = ast.parse(path.read_text())
        classes = [n for n in tree.body if isinstance(n, ast.ClassDef)
                   and not any(ast.unparse(base) == "argparse.Action" for base in n.bases)]
        assert not classes, f"{path.name} defines a class"
        for node in tree.body:
            if isinstance(node, ast.FunctionDef) and node.end_lineno - node.lineno > 60:
                too_long.append(f"{path.name}:{node.name} ({node.end_lineno - node.lineno} lines)")
    assert not too_long, too_long


@pytest.mark.parametrize("name", ["data", "models", "losses", "heatmaps", "training", "evaluation"])
def test_layering_test_sees_the_libraries(name: str) -> None:
    """Guard for the guard: the graph holds every library package's modules and some of their imports."""
    graph = import_graph()
    modules = [m for m in graph if _top(m) == name]
    assert modules and any(graph[m] for m in modules)
