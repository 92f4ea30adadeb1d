"""The panel's settings saved with the scene, Qt-free: one description shared by Slicer and the browser.

In Slicer the widget wraps the module's parameter node with `@parameterNodeWrapper` (DFM50N.py, fields
built from `FIELDS`); everywhere else (slicer-core tests, the browser front end) `SceneParameters` reads
and writes the *same* node with the same strings the wrapper's serializers use (str as is, float as
`str(value)`, bool as "True"/"False", a node as a node reference of the field's name). So a scene saved
by one is read by the other, and the presenter works with either object.

Machine settings (weights file, classifier folder) are NOT here: they live in the application's settings
(QSettings in Slicer), so opening someone's scene never changes which model this machine uses.
"""

from __future__ import annotations

from dataclasses import dataclass

MODULE_NAME = "DFM50N"

CENTER_CHOICES = ["dt_peak", "centroid"]
ORIENTATION_CHOICES = ["LPS", "LAS", "RAS", "SPL"]
GEOMETRY_CHOICES = ["physical", "reference"]
YES_NO_CHOICES = ["unknown", "yes", "no"]
DEVICE_CHOICES = ["auto", "cpu", "cuda"]
SHORT_AXIS_RANGE_CM = (0.0, 20.0)  # 0 = "measured" (the spin box's special value)
SHORT_AXIS_DECIMALS = 2
_YES_NO_LABELS = {"unknown": "Not given", "yes": "Yes", "no": "No"}
# What a combo box shows for each stored value; the parameter node (and the scene file) keeps the value.
CHOICE_LABELS = {
    "centerMethod": {"dt_peak": "Deepest lesion point (default)", "centroid": "Centre of mass"},
    "orientation": {
        "LPS": "LPS: left, posterior, superior (default)",
        "LAS": "LAS: left, anterior, superior (dcm2niix)",
        "RAS": "RAS: right, anterior, superior",
        "SPL": "SPL: superior, posterior, left (FCIB training)",
    },
    "geometry": {"physical": "Physical: 1 mm, patient-aligned (default)", "reference": "Reference: upstream parity"},
    "device": {"auto": "Automatic: GPU when available", "cpu": "CPU", "cuda": "GPU (CUDA)"},
    "smoking": _YES_NO_LABELS,
    "spiculation": _YES_NO_LABELS,
}


@dataclass(frozen=True)
class Field:
    name: str
    kind: str  # "node" | "str" | "bool" | "float"
    default: object = None
    choices: tuple = ()
    range: tuple = ()
    node_class: str = ""


FIELDS = (
    Field("inputVolume", "node", None, node_class="vtkMRMLScalarVolumeNode"),
    Field("segmentationNode", "node", None, node_class="vtkMRMLSegmentationNode"),
    Field("outputTable", "node", None, node_class="vtkMRMLTableNode"),
    Field("segmentId", "str", ""),
    Field("allSegments", "bool", False),
    Field("centerMethod", "str", "dt_peak", tuple(CENTER_CHOICES)),
    Field("orientation", "str", "LPS", tuple(ORIENTATION_CHOICES)),
    Field("geometry", "str", "physical", tuple(GEOMETRY_CHOICES)),
    Field("device", "str", "auto", tuple(DEVICE_CHOICES)),
    Field("smoking", "str", "unknown", tuple(YES_NO_CHOICES)),
    Field("spiculation", "str", "unknown", tuple(YES_NO_CHOICES)),
    Field("shortAxisCm", "float", 0.0, range=SHORT_AXIS_RANGE_CM),
)
FIELD_BY_NAME = {f.name: f for f in FIELDS}


def choice_labels(name) -> list:
    """The words for field `name`'s choices, in the order of its choices: Slicer's combo-box connector fills
    the items with the raw values in that order and reads the index back, so the widget may rename them."""
    field = FIELD_BY_NAME.get(name)
    return [CHOICE_LABELS[name][c] for c in field.choices] if field is not None and field.choices else []


def validate(field: Field, value):
    """The wrapper's validators (Choice, WithinRange, IsInstance) for one value; returns it normalised."""
    if field.kind == "node":
        if value is not None and not value.IsA(field.node_class):
            raise ValueError(f"{field.name} must be a {field.node_class}, not {value.GetClassName()}")
        return value
    if field.kind == "bool":
        if not isinstance(value, bool):
            raise ValueError(f"{field.name} must be True or False, not {value!r}")
        return value
    if field.kind == "float":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"{field.name} must be a number, not {value!r}")
        lo, hi = field.range
        if not lo <= value <= hi:
            raise ValueError(f"{field.name} must be within [{lo}, {hi}], not {value!r}")
        return float(value)
    if not isinstance(value, str):
        raise ValueError(f"{field.name} must be text, not {value!r}")
    if field.choices and value not in field.choices:
        raise ValueError(f"{field.name} must be one of {list(field.choices)}, not {value!r}")
    return value


def parameter_node(scene, create=True):
    """The module's singleton vtkMRMLScriptedModuleNode (as ScriptedLoadableModuleLogic makes it)."""
    node = scene.GetSingletonNode(MODULE_NAME, "vtkMRMLScriptedModuleNode")
    if node is None and create:
        node = scene.AddNewNodeByClass("vtkMRMLScriptedModuleNode", scene.GenerateUniqueName(MODULE_NAME))
        node.SetSingletonTag(MODULE_NAME)
        node.SetAttribute("ModuleName", MODULE_NAME)
    return node


class SceneParameters:
    """Attribute access to the parameter node, field by field, exactly as `@parameterNodeWrapper` stores it.

    `params.segmentId = "Segment_2"` writes the node (ValueError for a value the wrapper would refuse);
    `params.inputVolume` returns the referenced node or None."""

    def __init__(self, node):
        object.__setattr__(self, "parameterNode", node)
        for field in FIELDS if node is not None else ():  # as the wrapper does: write missing defaults
            if not node.HasParameter(field.name):
                setattr(self, field.name, field.default)

    def __getattr__(self, name):
        field = FIELD_BY_NAME.get(name)
        if field is None:
            raise AttributeError(name)
        node = self.parameterNode
        if field.kind == "node":
            return node.GetNodeReference(name)
        if not node.HasParameter(name):
            return field.default
        text = node.GetParameter(name)
        if field.kind == "bool":
            return text == "True"
        if field.kind == "float":
            return float(text) if text else field.default
        return text

    def __setattr__(self, name, value):
        field = FIELD_BY_NAME.get(name)
        if field is None:
            raise AttributeError(f"DFM50N has no parameter {name!r}")
        value = validate(field, value)
        node = self.parameterNode
        if field.kind == "node":
            node.SetParameter(name, "")
            node.SetNodeReferenceID(name, value.GetID() if value is not None else None)
        elif field.kind == "bool":
            node.SetParameter(name, "True" if value else "False")
        else:
            node.SetParameter(name, str(value))

    def __bool__(self):
        return self.parameterNode is not None
