"""The package's imports: no cycles (counting the imports inside functions and type checks),
and the settings load with the core alone."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "src" / "co2unit_server"
NAME = PACKAGE.name


def modules() -> dict[str, tuple[Path, bool]]:
    """Every module of the package: its dotted name -> (file, whether it is a package)."""
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        is_package = parts[-1] == "__init__"
        found[".".join(parts[:-1] if is_package else parts)] = (path, is_package)
    return found


def _known(name: str, known: dict) -> str | None:
    """The module `name` is, or is in (an imported function or class of it)."""
    while name and name not in known:
        name = name.rpartition(".")[0]
    return name or None


def _targets(node: ast.AST, module: str, is_package: bool) -> list[str]:
    """The dotted names an import statement loads (a `from X import y` loads X, maybe X.y)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if not isinstance(node, ast.ImportFrom):
        return []
    base = node.module or ""
    if node.level:
        package = module if is_package else module.rpartition(".")[0]
        for _ in range(node.level - 1):
            package = package.rpartition(".")[0]
        base = package + ("." + base if base else "")
    return [base, *(f"{base}.{alias.name}" for alias in node.names)]


def import_graph() -> dict[str, set[str]]:
    """Module -> the package's modules it imports, wherever the import statement is.

    Importing a.b.c runs the __init__ of a.b first, so that counts as an import of a.b too."""
    known = modules()
    graph = {}
    for module, (path, is_package) in known.items():
        imported = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            for target in _targets(node, module, is_package):
                if target.split(".")[0] == NAME and (found := _known(target, known)):
                    imported.add(found)
        for found in list(imported):
            while "." in found:
                found = found.rpartition(".")[0]
                imported.add(found)
        # Its own packages are loaded before the module: importing them again loads nothing.
        graph[module] = {m for m in imported if m != module and not module.startswith(m + ".")}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for other in graph[node]:
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while (top := stack.pop()) != node:
                component.append(top)
            if component:
                found.append(sorted([node, *component]))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_cycle_finder_sees_a_cycle_through_a_package_init():
    graph = {"p": {"p.a"}, "p.a": set(), "q": {"p.b"}, "p.b": {"q"}}
    assert cycles(graph) == [["p.b", "q"]]
    assert cycles({**graph, "p.a": {"q"}, "p.b": set(), "q": {"p"}}) == [["p", "p.a", "q"]]


def test_the_graph_counts_imports_inside_functions():
    graph = import_graph()
    assert f"{NAME}.server.app" in graph[f"{NAME}.wsgi"]  # imported in _load_app()


def test_no_import_cycles():
    assert cycles(import_graph()) == []


def test_loading_the_settings_imports_only_the_core(tmp_path):
    ini = tmp_path / "server.ini"
    ini.write_text("[co2unit]\ntcp_device_types = 1=tsl2561-si7021\n")
    loaded = subprocess.run(
        [sys.executable, "-c", "import sys; from co2unit_server.core.config import load_config; "
         f"load_config({{}}, {str(ini)!r}); print(*sorted(sys.modules))"],
        capture_output=True, text=True, check=True).stdout.split()
    ours = [m for m in loaded if m.split(".")[0] == NAME]
    assert ours and all(m in (NAME, f"{NAME}.core") or m.startswith(f"{NAME}.core.")
                        for m in ours), ours


def test_at_most_six_modules_at_the_package_top():
    loose = sorted(p.name for p in PACKAGE.glob("*.py") if p.name != "__init__.py")
    assert len(loose) <= 6, loose
