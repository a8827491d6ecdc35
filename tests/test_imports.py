"""What ``import hedgetune`` loads: the heavy optional stacks only when used."""

from __future__ import annotations

import subprocess
import sys


def test_import_loads_no_heavy_module() -> None:
    """Importing the package must not pull in scipy.stats (about a second), Numba (compiled kernels
    load on first use), plotting, tables or the LLM, cluster and HTTP stacks."""
    heavy = ("scipy.stats", "numba", "matplotlib", "pyarrow", "torch", "transformers", "ray", "aiohttp", "pandas")
    code = (
        "import sys, hedgetune\n"
        f"heavy = {heavy!r}\n"
        "print(sorted({m for m in sys.modules for h in heavy if m == h or m.startswith(h + '.')}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout


def _import_graph() -> dict[str, set[str]]:
    """hedgetune's modules and the hedgetune modules each imports, deferred imports (inside
    functions) included, ``if TYPE_CHECKING:`` blocks excluded."""
    import ast
    from pathlib import Path

    root = Path(__file__).parent.parent / "src" / "hedgetune"
    modules = {}
    for path in root.rglob("*.py"):
        parts = path.relative_to(root.parent).with_suffix("").parts
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        tree = ast.parse(path.read_text())
        typing_only = {id(sub) for node in ast.walk(tree) if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test) for sub in ast.walk(node)}
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        for node in ast.walk(tree):
            if id(node) in typing_only or not isinstance(node, ast.Import | ast.ImportFrom):
                continue
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
                module = ".".join([*base, *([node.module] if node.module else [])])
                targets = [f"{module}.{alias.name}" if f"{module}.{alias.name}" in modules else module for alias in node.names]
            graph[name] |= {t for t in targets if t in modules and t != name}
    return graph


def test_no_import_circle_remains() -> None:
    """Layers point one way (issue 29): no cycle among hedgetune's modules, counting deferred imports."""
    graph = _import_graph()
    assert len(graph) > 50
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(module: str) -> None:
        state[module] = 1
        path.append(module)
        for target in sorted(graph[module]):
            if state.get(target) == 1:
                raise AssertionError("import circle: " + " -> ".join([*path[path.index(target):], target]))
            if target not in state:
                visit(target)
        path.pop()
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module)
