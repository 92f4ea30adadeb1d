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
    """The combo-box choice lists DFM50N.py uses: its own NAME = [literal list] assignments and the lists it
    imports from DFM50NLib.scene.params (the one description shared with the browser front end)."""
    from DFM50NLib.scene import params

    tree = ast.parse(MODULE.read_text())
    lists = {name: value for name, value in vars(params).items() if name.endswith("_CHOICES")}
    lists.update(
        {
            t.id: ast.literal_eval(n.value)
            for n in tree.body
            if isinstance(n, ast.Assign) and isinstance(n.value, ast.List)
            for t in n.targets
            if isinstance(t, ast.Name)
        }
    )
    return lists


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
        "saveDicomSRButton": "QPushButton",
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
    # a bound QComboBox needs a Choice annotation: Slicer's QComboBoxToStringableConnector fills the items
    # from it (and raises RuntimeError at connectGui without one); the widget adds no items of its own
    widgets = ui_widgets()
    for field, widget in bound.items():
        if widgets[widget].get("class") == "QComboBox":
            assert fields[field], f"{field} is bound to a QComboBox but has no Choice"
    assert ".addItems(" not in code


def module_classes() -> dict:
    return {n.name: n for n in ast.parse(MODULE.read_text()).body if isinstance(n, ast.ClassDef)}


def test_widget_methods_are_bindings_only():
    """Behaviour lives in the tested presenter: every widget method except setup is a few lines."""
    classes = module_classes()
    for cls in ("DFM50NWidget", "ReportViewer"):
        for fn in classes[cls].body:
            if isinstance(fn, ast.FunctionDef) and fn.name != "setup":
                lines = fn.end_lineno - fn.lineno + 1 - (1 if ast.get_docstring(fn) else 0)
                assert lines <= 15, f"{cls}.{fn.name} has {lines} lines"
    src = MODULE.read_text()
    assert "PanelPresenter(" in src and "self.presenter.poll()" in src and "qt.QTimer()" in src
    assert "processEvents" not in src and "QDesktopServices" not in src  # no busy loop, no external browser
    assert "waitCursor=True" not in ast.get_source_segment(src, _method(classes, "onScoreButton"))


def _method(classes, name):
    return next(f for f in classes["DFM50NWidget"].body if isinstance(f, ast.FunctionDef) and f.name == name)


def test_parameter_node_matches_the_qt_free_description():
    """DFM50NParameterNode (Slicer's wrapper) and DFM50NLib.scene.params.FIELDS name the same fields,
    defaults and annotations, so a scene saved by the panel is read by the presenter and the browser."""
    from DFM50NLib.scene import params

    cls = module_classes()["DFM50NParameterNode"]
    src = MODULE.read_text()
    fields = {s.target.id: s for s in cls.body if isinstance(s, ast.AnnAssign)}
    assert list(fields) == [f.name for f in params.FIELDS]
    for f in params.FIELDS:
        stmt = fields[f.name]
        if f.kind != "node":
            assert ast.literal_eval(stmt.value) == f.default, f.name
        else:
            assert stmt.value is None and ast.get_source_segment(src, stmt.annotation) == f"slicer.{f.node_class}"
    short = ast.get_source_segment(src, fields["shortAxisCm"].annotation)
    assert "WithinRange(*SHORT_AXIS_RANGE_CM)" in short and "Decimals(SHORT_AXIS_DECIMALS)" in short
    assert "classifierFolder" not in fields  # a machine setting: loading a scene never changes the model
    choices = parameter_fields()
    assert {n: tuple(c) for n, c in choices.items() if c} == {f.name: f.choices for f in params.FIELDS if f.choices}


def test_module_conventions():
    src = MODULE.read_text()
    tree = ast.parse(src)
    imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) for a in n.names}
    assert {"tr", "translate"} <= imported and 'parent.title = _("DFM50N")' in src
    for heavy in ("torch", "sklearn", "matplotlib", "scipy"):  # nothing heavy at module load
        assert not any(
            isinstance(n, (ast.Import, ast.ImportFrom))
            and heavy in ((n.module or "") if isinstance(n, ast.ImportFrom) else n.names[0].name)
            for n in tree.body
        ), heavy
    init = next(f for f in module_classes()["DFM50N"].body if isinstance(f, ast.FunctionDef))
    deps = next(
        ast.literal_eval(n.value)
        for n in ast.walk(init)
        if isinstance(n, ast.Assign) and ast.get_source_segment(src, n.targets[0]) == "parent.dependencies"
    )
    assert {"Segmentations", "SegmentEditor", "Markups", "Tables"} <= set(deps)
    assert "registerCustomSampleDataSource" in src and 'connect("startupCompleted()", registerSampleData)' in src
    assert "self.assertEqual(missing, []" in src and "Skipped" not in src  # the self-test fails, never skips


def test_combo_boxes_show_words_not_the_stored_values():
    """Slicer's QComboBoxToStringableConnector fills a bound combo box with str(choice) at connectGui and
    reads/writes the item index only: the widget renames the items right after connecting, from the
    Qt-free table of labels (one per choice, in the choices' order)."""
    from DFM50NLib.scene import params

    widgets = ui_widgets()
    bound = {
        prop.find("string").text: w
        for w in widgets.values()
        if w.get("class") == "QComboBox"
        for prop in w.findall("property")
        if prop.get("name") == "SlicerParameterName"
    }
    assert set(bound) == {f.name for f in params.FIELDS if f.choices}
    for name in bound:
        labels, values = params.choice_labels(name), params.FIELD_BY_NAME[name].choices
        assert len(labels) == len(values) == len(set(labels)), name
        assert all(label != value and label.strip() for label, value in zip(labels, values)), name
    assert params.choice_labels("centerMethod")[params.CENTER_CHOICES.index("dt_peak")].startswith("Deepest")
    assert params.choice_labels("device")[params.DEVICE_CHOICES.index("auto")].startswith("Automatic")
    assert params.choice_labels("segmentId") == [] and params.choice_labels("nope") == []
    src = MODULE.read_text()
    set_node = ast.get_source_segment(src, _method(module_classes(), "setParameterNode"))
    assert set_node.index("connectGui(self.ui)") < set_node.index("self.showChoiceLabels()")
    show = ast.get_source_segment(src, _method(module_classes(), "showChoiceLabels"))
    assert "setItemText(index, label)" in show and "choice_labels(" in show and "SlicerParameterName" in show


def test_the_module_binds_the_scene_fixes_that_live_in_the_presenter_and_the_table():
    """Scene-load behaviour is Qt-free (tested in test_panel_scene.py); the module only has to hook it up."""
    src = MODULE.read_text()
    module_init = next(f for f in module_classes()["DFM50N"].body if isinstance(f, ast.FunctionDef))
    init = ast.get_source_segment(src, module_init)
    assert "keep_full_precision(slicer.mrmlScene)" in init  # exact tables after any load, panel opened or not
    setup = ast.get_source_segment(src, _method(module_classes(), "setup"))
    assert "afterImport=self.restoreSegmentSelection" in setup and "EndImportEvent" not in src
    assert "self.presenter.removeObservers()" in ast.get_source_segment(src, _method(module_classes(), "cleanup"))
