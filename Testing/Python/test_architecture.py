"""The package layout is the architecture: no import cycles, Slicer only in `scene/`, layers point one way.

Reads every module of DFM50NLib with `ast` (module-level *and* function-level imports, so a lazy import
cannot hide a cycle) and checks the graph of DFM50NLib-internal imports.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LIB = ROOT / "DFM50NLib"
SLICER_SIDE = ("slicer", "vtk", "qt", "ctk", "mrml", "vtkSegmentationCorePython")

# Which subpackage may import which (beside the cross-cutting top-level modules constants, errors, atomic,
# and DFM50NLib itself for __version__). A subpackage may always import itself.
ALLOWED = {
    "geometry": set(),
    "io": {"geometry"},
    "model": {"geometry", "io"},
    "report": {"geometry", "io", "model"},
    "scoring": {"geometry", "io", "model", "report"},
    "batch": {"geometry", "io", "model", "scoring", "report"},
    "scene": {"geometry", "io", "model", "scoring", "report"},
    "web": {"geometry", "io", "model", "scoring", "report", "scene"},
    "cli": {"geometry", "io", "model", "scoring", "report", "batch", "web"},
}
CROSS_CUTTING = {"DFM50NLib", "DFM50NLib.constants", "DFM50NLib.errors", "DFM50NLib.atomic"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def all_modules() -> dict:
    return {module_name(p): p for p in sorted(LIB.rglob("*.py"))}


MODULES = all_modules()


def imports_of(path: Path) -> list:
    """(imported module, line) for every import statement anywhere in the file, resolved to absolute names."""
    tree = ast.parse(path.read_text(), filename=str(path))
    me = module_name(path)
    package = me if path.name == "__init__.py" else me.rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(a.name, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            found.append((mod, node.lineno))
            for a in node.names:  # `from pkg import submodule`
                if f"{mod}.{a.name}" in MODULES:
                    found.append((f"{mod}.{a.name}", node.lineno))
    return found


def internal_graph() -> dict:
    graph = {}
    for name, path in MODULES.items():
        graph[name] = sorted({m for m, _ in imports_of(path) if m in MODULES and m != name})
    return graph


def find_cycle(graph: dict):
    """One import cycle as a list of module names, or None (iterative DFS with colours)."""
    white, grey, black = 0, 1, 2
    colour = dict.fromkeys(graph, white)
    for start in graph:
        if colour[start] != white:
            continue
        stack = [(start, iter(graph[start]))]
        colour[start] = grey
        while stack:
            node, children = stack[-1]
            child = next(children, None)
            if child is None:
                colour[node] = black
                stack.pop()
            elif colour[child] == grey:
                path = [n for n, _ in stack]
                return path[path.index(child) :] + [child]
            elif colour[child] == white:
                colour[child] = grey
                stack.append((child, iter(graph[child])))
    return None


def subpackage(module: str):
    parts = module.split(".")
    return parts[1] if len(parts) > 2 or (len(parts) == 2 and (LIB / parts[1]).is_dir()) else None


def test_the_finder_sees_a_cycle():
    assert find_cycle({"a": ["b"], "b": ["c"], "c": ["a"], "d": []}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": ["b"], "b": [], "c": ["a", "b"]}) is None


def test_no_import_cycles():
    graph = internal_graph()
    assert len(graph) > 40 and "DFM50NLib.model.fcib" in graph["DFM50NLib.scoring.pipeline"]
    assert find_cycle(graph) is None, "import cycle: " + " -> ".join(find_cycle(graph))


def test_only_scene_imports_slicer_vtk_or_qt():
    offenders = []
    for name, path in MODULES.items():
        if subpackage(name) == "scene":
            continue
        for mod, line in imports_of(path):
            if mod.split(".")[0] in SLICER_SIDE:
                offenders.append(f"{path.relative_to(ROOT)}:{line} imports {mod}")
    assert offenders == []


def test_scene_never_imports_qt():
    offenders = [
        f"{p.relative_to(ROOT)}:{line} imports {mod}"
        for name, p in MODULES.items()
        if subpackage(name) == "scene"
        for mod, line in imports_of(p)
        if mod.split(".")[0] in ("qt", "ctk")
    ]
    assert offenders == []


PACKAGES = sorted(p.name for p in LIB.iterdir() if (p / "__init__.py").is_file())


def test_every_subpackage_has_a_layer_rule():
    assert PACKAGES and set(PACKAGES) <= set(ALLOWED), f"add a rule for {sorted(set(PACKAGES) - set(ALLOWED))}"


@pytest.mark.parametrize("package", PACKAGES)
def test_layers_point_one_way(package):
    offenders = []
    for name, path in MODULES.items():
        if subpackage(name) != package:
            continue
        for mod, line in imports_of(path):
            if mod not in MODULES or mod in CROSS_CUTTING:
                continue
            target = subpackage(mod)
            if target and target != package and target not in ALLOWED[package]:
                offenders.append(f"{path.relative_to(ROOT)}:{line} imports {mod}")
    assert offenders == [], f"DFM50NLib/{package}/ may import only {sorted(ALLOWED[package])}"


def test_top_level_holds_only_subpackages_and_cross_cutting_modules():
    top = sorted(p.name for p in LIB.iterdir() if p.suffix == ".py")
    assert top == ["__init__.py", "__main__.py", "atomic.py", "constants.py", "errors.py"]
    for folder in (p for p in LIB.iterdir() if p.is_dir() and p.name != "__pycache__"):
        init = folder / "__init__.py"
        assert init.is_file(), f"{folder.name}/ is not a package"
        doc = ast.get_docstring(ast.parse(init.read_text()))
        assert doc and len(doc.splitlines()) >= 2, f"{folder.name}/__init__.py: say in two lines what lives there"
