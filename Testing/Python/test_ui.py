"""The Qt Designer file parses, and every widget/parameter the module code names exists in it.

The widget itself needs a full Slicer (Qt); these checks catch the usual breakage (a renamed widget,
a parameter bound to nothing) without one."""

from __future__ import annotations

import ast
import re
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
UI = ROOT / "Resources" / "UI" / "DFM50N.ui"
MODULE = ROOT / "DFM50N.py"


def ui_widgets() -> dict:
    tree = ET.parse(UI)
    return {w.get("name"): w for w in tree.iter("widget")}


def module_lists() -> dict:
    """DFM50N.py's module-level NAME = [literal list] assignments (the combo-box choices)."""
    tree = ast.parse(MODULE.read_text())
    return {
        t.id: ast.literal_eval(n.value)
        for n in tree.body
        if isinstance(n, ast.Assign) and isinstance(n.value, ast.List)
        for t in n.targets
        if isinstance(t, ast.Name)
    }


def list_value(node_or_text, lists):
    """A literal list, or the name of a module-level one, as the module would see it."""
    node = ast.parse(node_or_text, mode="eval").body if isinstance(node_or_text, str) else node_or_text
    return lists[node.id] if isinstance(node, ast.Name) else ast.literal_eval(node)


def parameter_fields() -> dict:
    """DFM50NParameterNode's annotated fields -> Choice list (or None)."""
    tree = ast.parse(MODULE.read_text())
    lists = module_lists()
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "DFM50NParameterNode")
    fields = {}
    for stmt in cls.body:
        if isinstance(stmt, ast.AnnAssign):
            choice = [
                c
                for c in ast.walk(stmt.annotation)
                if isinstance(c, ast.Call) and getattr(c.func, "id", "") == "Choice"
            ]
            fields[stmt.target.id] = list_value(choice[0].args[0], lists) if choice else None
    return fields


def test_ui_parses_and_every_widget_the_code_uses_exists():
    widgets = ui_widgets()
    used = set(re.findall(r"self\.ui\.(\w+)", MODULE.read_text()))
    assert len(used) > 20
    assert sorted(used - set(widgets)) == []


def test_required_controls_are_there_with_the_right_classes():
    w = ui_widgets()
    expected = {
        "inputVolumeSelector": "qMRMLNodeComboBox",
        "segmentSelector": "qMRMLSegmentSelectorWidget",
        "allSegmentsCheckBox": "QCheckBox",
        "centerMethodComboBox": "QComboBox",
        "advancedCollapsibleButton": "ctkCollapsibleButton",
        "weightsPathLineEdit": "ctkPathLineEdit",
        "classifierPathLineEdit": "ctkPathLineEdit",
        "smokingComboBox": "QComboBox",
        "spiculationComboBox": "QComboBox",
        "shortAxisSpinBox": "QDoubleSpinBox",
        "scoreButton": "QPushButton",
        "progressBar": "QProgressBar",
        "showCubeButton": "QPushButton",
        "openReportButton": "QPushButton",
        "editSegmentButton": "QPushButton",
        "downloadWeightsButton": "QPushButton",
        "browseWeightsButton": "QPushButton",
    }
    assert {k: w[k].get("class") for k in expected} == expected
    types = [s.text for s in w["inputVolumeSelector"].iter("string")]
    assert "vtkMRMLScalarVolumeNode" in types
    custom = {c.find("class").text for c in ET.parse(UI).iter("customwidget")}
    used_custom = {x.get("class") for x in w.values() if x.get("class", "").startswith(("ctk", "qMRML"))}
    assert used_custom <= custom


def test_every_bound_parameter_exists_and_combo_items_match_the_choices():
    fields = parameter_fields()
    bound = {}
    for name, w in ui_widgets().items():
        for prop in w.findall("property"):
            if prop.get("name") == "SlicerParameterName":
                bound[prop.find("string").text] = name
    assert set(bound) <= set(fields), set(bound) - set(fields)
    # every panel setting is saved in the scene: each field is bound in the .ui or handled in code
    code = MODULE.read_text()
    for field in set(fields) - set(bound):
        assert f"_parameterNode.{field}" in code or f"p.{field}" in code, field
    # the items the widget adds to each bound combo box are exactly the field's choices
    added = dict(re.findall(r"\(self\.ui\.(\w+ComboBox), (\w+|\[[^\]]*\])\)", code))
    lists = module_lists()
    for field, widget in bound.items():
        if fields[field] is not None:
            assert list_value(added[widget], lists) == fields[field], field
