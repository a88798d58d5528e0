"""The modules of tracegrad import one another without a cycle: data flows one way.

Every import statement counts, at the top of a module or inside a function: a deferred import
hides a cycle from Python, not from a reader.
"""
import ast
from pathlib import Path

PACKAGE = Path(__file__).parents[1] / "tracegrad"


def module_name(path: Path) -> str:
    return "tracegrad" if path.stem == "__init__" else f"tracegrad.{path.stem}"


def imported_modules(path: Path, known: set[str]) -> set[str]:
    """The tracegrad modules that `path` imports: `from .ir import Var` imports tracegrad.ir,
    `from . import ir` too, and `from . import __version__` the package itself."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or "" if node.level == 0 else "tracegrad" + (f".{node.module}" if node.module else "")
            if node.module is None or base == "tracegrad":
                found.update(f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names)
            else:
                found.add(base)
    return {name for name in found if name in known} - {module_name(path)}


def import_graph() -> dict[str, set[str]]:
    paths = sorted(PACKAGE.glob("*.py"))
    known = {module_name(path) for path in paths}
    return {module_name(path): imported_modules(path, known) for path in paths}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """A list of modules each importing the next, the last importing the first; None if there is none."""
    done: set[str] = set()
    path: list[str] = []

    def visit(name: str) -> list[str] | None:
        if name in path:
            return path[path.index(name):]
        if name in done:
            return None
        path.append(name)
        for imported in sorted(graph[name]):
            cycle = visit(imported)
            if cycle:
                return cycle
        path.pop()
        done.add(name)
        return None

    for name in sorted(graph):
        cycle = visit(name)
        if cycle:
            return cycle
    return None


def test_the_graph_is_read_from_the_sources():
    graph = import_graph()
    assert "tracegrad.ir" in graph["tracegrad.primitives"]
    assert "tracegrad.api" in graph["tracegrad"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_tracegrad_has_no_import_cycle():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle + cycle[:1])
