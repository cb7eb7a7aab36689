"""The package's layers, read from its source: no import runs from a lower layer to a higher one, no two
modules import each other (directly or in a circle), and no import of gpo_lab is hidden inside a function.

The order is the one ``gpo_lab/__init__.py`` documents; a new package gets a place in ``LAYERS``.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "gpo_lab"

# Lowest first. A module may import from its own layer's package and from every layer before it.
LAYERS = (
    ("errors", "config_dir"),
    ("store",),
    ("parallel",),
    ("losses",),
    ("scoring",),
    ("data",),
    ("models",),
    ("eval",),
    ("training",),
    ("tasks",),
    ("run", "status"),
    ("report",),
    ("__main__",),
)


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imported_modules(name: str, node: ast.Import | ast.ImportFrom) -> set[str]:
    """The gpo_lab modules an import statement loads (``from pkg import module`` loads the module)."""
    if isinstance(node, ast.Import):
        candidates = [alias.name for alias in node.names]
    else:
        base = node.module or ""
        if node.level:
            package = name if MODULES[name].name == "__init__.py" else name.rsplit(".", 1)[0]
            parts = package.split(".")[: len(package.split(".")) - node.level + 1]
            base = ".".join([*parts, base] if base else parts)
        candidates = [base, *(f"{base}.{alias.name}" for alias in node.names)]
    return {c for c in candidates if c in MODULES and c != name}


def imports_of(name: str) -> tuple[set[str], list[str]]:
    """A module's gpo_lab imports, and those placed inside a function (as source lines)."""
    tree = ast.parse(MODULES[name].read_text())
    found: set[str] = set()
    hidden = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found |= imported_modules(name, node)
    for function in ast.walk(tree):
        if isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for node in ast.walk(function):
                if isinstance(node, (ast.Import, ast.ImportFrom)) and imported_modules(name, node):
                    hidden.append(f"{name}: {ast.unparse(node)}")
    return found, hidden


GRAPH = {name: imports_of(name)[0] for name in MODULES}


def layer(name: str) -> int:
    top = name.split(".")[1] if "." in name else ""
    for index, packages in enumerate(LAYERS):
        if top in packages:
            return index
    if name == "gpo_lab":
        return len(LAYERS)  # the package's own __init__ imports nothing but may document everything
    raise AssertionError(f"{name} belongs to no layer: give gpo_lab/{top} a place in LAYERS and in gpo_lab/__init__.py")


def test_every_module_has_a_layer():
    for name in MODULES:
        layer(name)


def test_no_import_runs_from_a_lower_layer_to_a_higher_one():
    upward = [
        f"{name} (layer {layer(name)}) imports {target} (layer {layer(target)})"
        for name, targets in GRAPH.items()
        for target in targets
        if layer(target) > layer(name)
    ]
    assert not upward, "\n".join(upward)


def test_no_circle_of_imports():
    """A depth-first search over the import graph: a back edge is a circle (a package's ``__init__``
    re-exporting its own modules is not one, since those modules do not import the package back)."""
    state: dict[str, str] = {}
    circles = []

    def visit(name: str, path: list[str]) -> None:
        state[name] = "open"
        for target in sorted(GRAPH[name]):
            if state.get(target) == "open":
                circles.append(" -> ".join([*path[path.index(target) :], target]))
            elif target not in state:
                visit(target, [*path, target])
        state[name] = "done"

    for name in sorted(GRAPH):
        if name not in state:
            visit(name, [name])
    assert not circles, "\n".join(circles)


def test_no_gpo_lab_import_is_hidden_inside_a_function():
    hidden = [line for name in MODULES for line in imports_of(name)[1]]
    assert not hidden, "\n".join(hidden)


def test_the_store_imports_only_the_standard_library_and_yaml():
    """The status and report commands read a run's files through store/: it must load no framework."""
    heavy = []
    for name, path in MODULES.items():
        if not name.startswith("gpo_lab.store"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                tops = [alias.name.split(".")[0] for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level:
                tops = [(node.module or "").split(".")[0]]
            else:
                continue
            heavy += [f"{name}: {top}" for top in tops if top not in sys.stdlib_module_names | {"yaml", "gpo_lab"}]
    assert not heavy, "\n".join(heavy)


@pytest.mark.parametrize(
    "imports, expected",
    [
        ({"a": {"b"}, "b": {"c"}, "c": set()}, False),
        ({"a": {"b"}, "b": {"a"}}, True),
    ],
)
def test_the_circle_search_finds_a_circle_and_only_a_circle(imports, expected, monkeypatch):
    monkeypatch.setattr(f"{__name__}.GRAPH", imports)
    if expected:
        with pytest.raises(AssertionError, match="a -> b -> a"):
            test_no_circle_of_imports()
    else:
        test_no_circle_of_imports()
