"""The Slicer extension packages what the module needs, and loading the module stays light.

Classic bug: a new .py or resource works from the source tree but is missing from the CMake lists, so
the installed extension breaks. This test lists the tree (git's tracked + untracked-not-ignored files,
or a walk when git is absent) and compares it with CMakeLists.txt.
"""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CMAKE = ROOT / "CMakeLists.txt"
HEAVY = ("torch", "monai", "sklearn", "matplotlib", "dask", "pandas")


def tree_files() -> list:
    try:
        out = subprocess.run(
            ["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.split("\n")
        files = [f for f in out if f and (ROOT / f).is_file()]
    except (OSError, subprocess.CalledProcessError):
        files = [str(p.relative_to(ROOT)) for p in ROOT.rglob("*") if p.is_file()]
    return sorted(f.replace(os.sep, "/") for f in files if "__pycache__" not in f and not f.endswith(".pyc"))


def cmake_list(name) -> list:
    text = re.sub(r"#[^\n]*", "", CMAKE.read_text())
    m = re.search(r"set\(\s*" + name + r"\s+(.*?)\)", text, re.S)
    assert m, f"set({name} ...) not found in CMakeLists.txt"
    module = re.search(r"set\(\s*MODULE_NAME\s+(\w+)\s*\)", text).group(1)
    return [t.replace("${MODULE_NAME}", module) for t in m.group(1).split()]


def test_every_library_file_and_resource_is_packaged():
    files = tree_files()
    scripts, resources = set(cmake_list("MODULE_PYTHON_SCRIPTS")), set(cmake_list("MODULE_PYTHON_RESOURCES"))
    need_scripts = {f for f in files if f.startswith("DFM50NLib/") and f.endswith(".py")} | {"DFM50N.py"}
    need_resources = {
        f
        for f in files
        if f.startswith(("Resources/", "models/")) or (f.startswith("DFM50NLib/") and not f.endswith(".py"))
    }  # models/: the bundled DEMO classifier
    assert sorted(need_scripts - scripts) == [], "add these to MODULE_PYTHON_SCRIPTS in CMakeLists.txt"
    assert sorted(need_resources - resources) == [], "add these to MODULE_PYTHON_RESOURCES in CMakeLists.txt"
    listed = scripts | resources
    assert sorted(f for f in listed if not (ROOT / f).is_file()) == [], "CMakeLists.txt lists missing files"
    assert "DFM50NLib/cli/__init__.py" in scripts  # sub-packages are covered too


def test_extension_metadata_and_build():
    text = CMAKE.read_text()
    for key in (
        "EXTENSION_HOMEPAGE",
        "EXTENSION_CONTRIBUTORS",
        "EXTENSION_DESCRIPTION",
        "EXTENSION_ICONURL",
        "EXTENSION_SCREENSHOTURLS",
    ):
        assert re.search(rf'set\({key} "[^"]+"\)', text), key
    assert re.search(r'set\(EXTENSION_CATEGORY "Quantification"\)', text)
    assert re.search(r'set\(EXTENSION_DEPENDS "PyTorch"\)', text)
    assert "slicerMacroBuildScriptedModule" in text and "WITH_GENERIC_TESTS" in text
    assert "add_subdirectory(Testing)" in text and (ROOT / "Testing" / "CMakeLists.txt").is_file()
    assert "Slicer_EXTENSION_GENERATE_CONFIG" in text and "Slicer_EXTENSION_CPACK" in text
    assert (ROOT / "LICENSE").is_file()
    png = (ROOT / "Resources" / "Icons" / "DFM50N.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and png[16:24] == (128).to_bytes(4, "big") * 2  # 128 x 128


def test_only_one_python_file_at_the_top_level():
    assert sorted(p.name for p in ROOT.glob("*.py")) == ["DFM50N.py"]


def loaded_imports(tree) -> list:
    """Modules imported when the file is loaded: module level and class bodies (not function bodies)."""
    names = []

    def visit(body):
        for node in body:
            if isinstance(node, ast.Import):
                names.extend(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                names.append(("." * node.level) + (node.module or ""))
            elif isinstance(node, ast.ClassDef):
                visit(node.body)
            elif isinstance(node, (ast.If, ast.Try, ast.With)):
                visit(getattr(node, "body", []) + getattr(node, "orelse", []) + getattr(node, "finalbody", []))
                for h in getattr(node, "handlers", []):
                    visit(h.body)

    visit(tree.body)
    return names


def test_module_file_imports_nothing_heavy_at_load_time():
    names = loaded_imports(ast.parse((ROOT / "DFM50N.py").read_text()))
    assert "slicer" in names
    heavy = [n for n in names if n.split(".")[0] in HEAVY]
    assert heavy == []


def test_loading_the_module_libraries_does_not_import_torch():
    """What DFM50N.py imports at load, imported in a fresh interpreter: no torch/monai/sklearn appears."""
    libs = sorted(
        {n for n in loaded_imports(ast.parse((ROOT / "DFM50N.py").read_text())) if n.startswith("DFM50NLib")}
        | {"DFM50NLib.scene.logic", "DFM50NLib.scene.dependencies"}
    )
    code = (
        "import sys, importlib\n"
        f"for m in {libs!r}: importlib.import_module(m)\n"
        f"print(sorted(h for h in {HEAVY!r} if h in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "[]", out.stdout
