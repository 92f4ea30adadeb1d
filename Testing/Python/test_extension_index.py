"""Extensions Index readiness, checked on the files themselves: the catalogue entry against the v1.0.1
schema's fields, the CMake metadata it must agree with, and the pictures the index CI fetches."""

from __future__ import annotations

import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CMAKE = (ROOT / "CMakeLists.txt").read_text()
# Slicer Schemas/slicer-extension-catalog-entry-schema-v1.0.1.json: "required" and "properties"
# (additionalProperties: false, so no other key is allowed)
SCHEMA_REQUIRED = {"$schema", "category", "scm_url"}
SCHEMA_PROPERTIES = SCHEMA_REQUIRED | {
    "scm_revision",
    "scm_type",
    "build_dependencies",
    "build_subdirectory",
    "enabled",
    "tier",
}
# ExtensionsIndex scripts/check_description_files.py ACCEPTED_EXTENSION_CATEGORIES (excerpt)
CATEGORIES = {"Quantification", "Segmentation", "Chest Imaging Platform", "Analysis", "Informatics", "Utilities"}


def cmake_set(name) -> str:
    m = re.search(rf'set\({name} "([^"]*)"\)', CMAKE)
    assert m, name
    return m.group(1)


def test_catalogue_entry_fits_the_v1_0_1_schema_and_the_cmake_metadata():
    raw = (ROOT / "DFM50N.json").read_bytes()
    assert b"\r" not in raw  # the index CI refuses CRLF
    entry = json.loads(raw)
    assert entry["$schema"].endswith("slicer-extension-catalog-entry-schema-v1.0.1.json#")
    assert SCHEMA_REQUIRED <= set(entry) <= SCHEMA_PROPERTIES
    assert entry["category"] == "Quantification" == cmake_set("EXTENSION_CATEGORY") and entry["category"] in CATEGORIES
    assert entry["build_dependencies"] == ["PyTorch"] == cmake_set("EXTENSION_DEPENDS").split()
    assert isinstance(entry["tier"], int) and 1 <= entry["tier"] <= 5
    assert entry["scm_url"].startswith("https://github.com/") and entry["scm_url"].endswith(".git")
    assert re.search(r"^project\(DFM50N\)$", CMAKE, re.M)  # project() == the JSON file name
    assert (ROOT / "LICENSE").is_file()


def test_cmake_uses_the_current_template_minimum_and_points_at_pictures_in_the_repo():
    assert CMAKE.startswith("cmake_minimum_required(VERSION 3.28.0...3.28.0 FATAL_ERROR)")
    for name in ("EXTENSION_ICONURL", "EXTENSION_SCREENSHOTURLS"):
        for url in cmake_set(name).split():
            m = re.match(r"https://raw\.githubusercontent\.com/DFM50N/SlicerDFM50N/main/(.+)$", url)
            assert m, url
            data = (ROOT / m.group(1)).read_bytes()
            assert data[:8] == b"\x89PNG\r\n\x1a\n", url  # served as image/png
    readme = (ROOT / "README.md").read_text()
    assert "docs/screenshot.png" in readme
