"""The "DFM50N scores" table node: one typed row per (CT volume, segment), saved with the scene.

Column names are the `Result` field names (what a researcher types in `arrayFromTableColumn`);
titles, units and descriptions are stored as column properties, so a table reloaded from a .mrb
still explains itself. Re-scoring a (volume, segment) replaces its row. Each row keeps the SHA-256
of the mask it scored: the Logic recomputes it, so an edit made after a reload is still caught.
"""

from __future__ import annotations

import weakref

import numpy as np
import vtk

TABLE_NAME = "DFM50N scores"
KIND_ATTRIBUTE = "DFM50N.Table"  # node attribute marking our table (a user may rename it)

D, I, S = "double", "int", "string"  # noqa: E741  (column types, as in the table below)
# (name, type, title, unit, description)
COLUMNS = (
    ("volume", S, "Volume", "", "CT volume node name (the case)"),
    ("segment", S, "Segment", "", "Lesion segment name"),
    ("score", D, "DFM50N score", "", "Probability of occult lymph-node metastasis from the forest, 0-1"),
    ("threshold", D, "Threshold", "", "Score at or above which the risk is high"),
    ("risk_label", S, "Risk", "", "high OLM risk / low OLM risk"),
    ("high_risk", I, "High risk", "", "1 if score >= threshold"),
    ("classifier_is_demo", I, "DEMO", "", "1 = DEMO classifier fitted on synthetic data, not the published model"),
    ("classifier_name", S, "Classifier", "", "Name of the classifier"),
    ("center_method", S, "Centre method", "", "dt_peak, centroid or point"),
    ("center_R", D, "Centre R", "mm", "Cube centre, RAS, in the CT's coordinate frame"),
    ("center_A", D, "Centre A", "mm", "Cube centre, RAS, in the CT's coordinate frame"),
    ("center_S", D, "Centre S", "mm", "Cube centre, RAS, in the CT's coordinate frame"),
    ("orientation", S, "Orientation", "", "Orientation code of the cube's array axes"),
    ("geometry", S, "Geometry", "", "physical (default) or reference (upstream parity)"),
    ("mask_volume_mm3", D, "Mask volume", "mm3", "Volume of the scored component on the CT grid"),
    ("mask_voxels", I, "Mask voxels", "voxels", "CT voxels of the scored component"),
    ("cube_mask_voxels", I, "Voxels in cube", "voxels", "Mask samples inside the 50 mm cube (1 mm3 each)"),
    ("coverage", D, "Coverage", "", "Mask volume inside the cube / whole mask volume"),
    ("touches_border", I, "Touches border", "", "1 if the mask reaches a face of the cube"),
    ("components_dropped", I, "Components dropped", "", "Smaller disconnected parts ignored"),
    ("smoking", S, "Smoking", "", "Smoking history (yes/no; empty = not given)"),
    ("spiculated", S, "Spiculated", "", "Spiculated margin (yes/no; empty = not given)"),
    ("short_axis_cm", D, "Short axis", "cm", "Short-axis diameter used by the combined model"),
    ("short_axis_source", S, "Short axis source", "", "measured or user"),
    ("combined_probability", D, "Combined probability", "", "Combined clinical model probability (NaN = not computed)"),
    ("combined_positive", S, "Combined OLM", "", "positive / negative by the combined model (cut-off 0.254)"),
    ("mask_sha256", S, "Mask SHA-256", "", "Hash of the scored segment (voxels and geometry)"),
    ("fcib_weights_sha256", S, "FCIB weights SHA-256", "", "Hash of the FCIB weights file"),
    ("classifier_sha256", S, "Classifier SHA-256", "", "Hash of the classifier"),
    ("software_version", S, "Version", "", "DFM50N software version"),
    ("created", S, "Created", "", "When the score was computed (ISO 8601, UTC)"),
    ("stale", I, "Stale", "", "1 if the segment was edited after scoring: score again"),
    ("warnings", S, "Warnings", "", "Warnings shown with the score"),
    ("segment_id", S, "Segment ID", "", "Segment ID inside the segmentation"),
    ("row_id", S, "Row ID", "", "Key of this row's node references on the table (dfm50nVolume_<row ID>, ...)"),
    (
        "exact",
        S,
        "Exact values",
        "",
        "Every number of the row at full precision (JSON): scenes save numeric columns to 6 digits",
    ),
)
COLUMN_NAMES = tuple(c[0] for c in COLUMNS)
# Each row's CT volume and segmentation are MRML node references on the table node (a scene import remaps
# them, where ID strings in cells would go stale), one role per row: "dfm50nVolume_<row_id>". Deleting one
# row's CT removes that row's reference only (with the n-th reference of one shared role, the later rows'
# references moved up one place and a re-score of CT2 overwrote CT1's row).
VOLUME_ROLE, SEGMENTATION_ROLE = "dfm50nVolume", "dfm50nSegmentation"
REFERENCE_KEYS = {"volume_node_id": VOLUME_ROLE, "segmentation_node_id": SEGMENTATION_ROLE}
_ARRAY = {D: vtk.vtkDoubleArray, I: vtk.vtkIntArray, S: vtk.vtkStringArray}


def get_table(scene, create=True):
    """Our table in `scene` (by attribute, then by name), created with every column when missing."""
    for node in _table_nodes(scene):
        if node.GetAttribute(KIND_ATTRIBUTE) == "1":
            return restore_precision(ensure_columns(node))
    node = scene.GetFirstNodeByName(TABLE_NAME)
    if node is not None and node.IsA("vtkMRMLTableNode"):
        node.SetAttribute(KIND_ATTRIBUTE, "1")
        return restore_precision(ensure_columns(node))
    if not create:
        return None
    node = scene.AddNewNodeByClass("vtkMRMLTableNode", TABLE_NAME)
    node.SetAttribute(KIND_ATTRIBUTE, "1")
    return ensure_columns(node)


def _table_nodes(scene):
    nodes = scene.GetNodesByClass("vtkMRMLTableNode")
    out = [nodes.GetItemAsObject(i) for i in range(nodes.GetNumberOfItems())]
    return out


def is_scores_table(node) -> bool:
    """Any table DFM50N wrote rows into: the default one and every output table the user picked."""
    t = node.GetTable() if node is not None else None
    return t is not None and all(t.GetColumnByName(c) is not None for c in ("exact", "mask_sha256", "score"))


def scores_tables(scene) -> list:
    return [n for n in _table_nodes(scene) if is_scores_table(n)]


def restore_all(scene) -> list:
    """Full precision back in every DFM50N table of `scene` (after a load or import); returns them."""
    tables = scores_tables(scene)
    for node in tables:
        restore_precision(ensure_columns(node))
    return tables


def keep_full_precision(scene):
    """Restore every DFM50N table's numbers each time a scene is loaded or imported into `scene`, whether or
    not the panel was ever opened (the module calls this at startup). Idempotent; returns the observer tag."""
    known = _PRECISION_OBSERVERS.get(id(scene))
    if known is not None and known[0]() is scene:
        return known[1]
    tag = scene.AddObserver(scene.EndImportEvent, _restore_after_import)
    _PRECISION_OBSERVERS[id(scene)] = (weakref.ref(scene), tag)
    return tag


_PRECISION_OBSERVERS = {}  # id(scene) -> (weak reference to the scene, observer tag)


def _restore_after_import(scene, event):  # module level: a lambda could be freed with a collected scene
    restore_all(scene)


def _row_role(role, row_id) -> str:
    return f"{role}_{row_id}"


def _migrate_id_columns(node):
    """Tables saved before rows used node references kept the MRML IDs in text columns: turn them into
    references (right for a scene loaded on its own; an import may already have remapped other nodes)."""
    table = node.GetTable()
    for key, role in REFERENCE_KEYS.items():
        col = table.GetColumnByName(key)
        if col is not None and node.GetNumberOfNodeReferences(role) == 0:
            for r in range(table.GetNumberOfRows()):
                node.SetNthNodeReferenceID(role, r, col.GetValue(r))
            table.RemoveColumnByName(key)


def _migrate_shared_roles(node):
    """Tables saved with the n-th reference of one shared role per row: give each row its ID and its own roles."""
    t = node.GetTable()
    ids = t.GetColumnByName("row_id")
    for r in range(t.GetNumberOfRows()):
        if not ids.GetValue(r):
            ids.SetValue(r, _next_row_id(node))
            for role in REFERENCE_KEYS.values():
                if r < node.GetNumberOfNodeReferences(role):
                    node.SetNodeReferenceID(_row_role(role, ids.GetValue(r)), node.GetNthNodeReferenceID(role, r))
    for role in REFERENCE_KEYS.values():
        if node.GetNumberOfNodeReferences(role):
            node.RemoveNodeReferenceIDs(role)


def _next_row_id(node) -> str:
    ids = node.GetTable().GetColumnByName("row_id")
    used = [int(v) for v in (ids.GetValue(r) for r in range(ids.GetNumberOfValues())) if v.isdigit()]
    return str(max(used, default=0) + 1)


def ensure_columns(node):
    """Add missing columns (typed, with title, unit, description); existing data is kept."""
    _migrate_id_columns(node)
    table = node.GetTable()
    rows = table.GetNumberOfRows()
    for name, kind, title, unit, description in COLUMNS:
        if table.GetColumnByName(name) is None:
            arr = _ARRAY[kind]()
            arr.SetName(name)
            arr.SetNumberOfTuples(rows)
            for r in range(rows):
                _set(arr, r, kind, None)
            table.AddColumn(arr)
        node.SetColumnTitle(name, title)
        node.SetColumnDescription(name, description)
        if unit:
            node.SetColumnUnitLabel(name, unit)
    _migrate_shared_roles(node)
    node.SetUseColumnTitleAsColumnHeader(True)
    node.Modified()
    return node


def _set(arr, row, kind, value):
    if kind == S:
        arr.SetValue(row, "" if value is None else str(value))
    elif kind == I:
        arr.SetValue(row, int(value) if value is not None else 0)
    else:
        arr.SetValue(row, float("nan") if value is None else float(value))


def _yes_no(v):
    return None if v is None else ("yes" if v else "no")


def row_values(
    result, *, volume_name, segment_name, volume_node_id, segmentation_node_id, segment_id, mask_sha256
) -> dict:
    """The row for one Result, keyed by column name."""
    d = result.to_dict(include_all_features=False)
    values = {k: d.get(k) for k in COLUMN_NAMES if k in d}
    values.update(
        volume=volume_name,
        segment=segment_name,
        volume_node_id=volume_node_id,
        segmentation_node_id=segmentation_node_id,
        segment_id=segment_id,
        mask_sha256=mask_sha256,
        stale=0,
        warnings=" | ".join(result.warnings),
        smoking=_yes_no(result.smoking),
        spiculated=_yes_no(result.spiculated),
        combined_positive=None
        if result.combined_positive is None
        else ("positive" if result.combined_positive else "negative"),
    )
    for axis, v in zip("RAS", result.center_ras):
        values[f"center_{axis}"] = v
    return values


def row_node_id(node, role, row) -> str:
    """MRML ID of the node row `row` references in `role` ("" when none, e.g. that node was deleted)."""
    ids = node.GetTable().GetColumnByName("row_id")
    if ids is None:  # a table from before per-row roles, not migrated yet (`ensure_columns` does it)
        return node.GetNthNodeReferenceID(role, row) or ""
    row_id = ids.GetValue(row)
    return (node.GetNodeReferenceID(_row_role(role, row_id)) or "") if row_id else ""


def find_row(node, volume_node_id, segmentation_node_id, segment_id) -> int:
    """Row index of this (volume, segmentation, segment), or -1."""
    t = node.GetTable()
    seg_col = t.GetColumnByName("segment_id")
    for r in range(t.GetNumberOfRows()):
        if (
            seg_col.GetValue(r) == segment_id
            and row_node_id(node, VOLUME_ROLE, r) == volume_node_id
            and row_node_id(node, SEGMENTATION_ROLE, r) == segmentation_node_id
        ):
            return r
    return -1


def _exact_text(values) -> str:
    """name=repr(value);... for the double columns: repr is the shortest text that reads back to the
    same double, and the text has no quote, comma or tab for the .tsv/.csv writer to mangle."""
    return ";".join(
        f"{name}={float(values[name])!r}" for name, kind, *_ in COLUMNS if kind == D and values.get(name) is not None
    )


def _parse_exact(text) -> dict:
    out = {}
    for item in (text or "").split(";"):
        name, sep, value = item.partition("=")
        if sep:
            try:
                out[name] = float(value)
            except ValueError:
                continue  # a hand-edited cell: the numeric column stays as it is
    return out


def restore_precision(node):
    """Numeric columns back to full precision from the "exact" cells (after loading a saved scene)."""
    t = node.GetTable()
    col = t.GetColumnByName("exact")
    if col is None:
        return node
    for r in range(t.GetNumberOfRows()):
        for name, value in _parse_exact(col.GetValue(r)).items():
            arr = t.GetColumnByName(name)
            if arr is not None:
                arr.SetValue(r, float(value))
    t.Modified()
    return node


def set_row(node, values: dict) -> int:
    """Write one row, replacing the row of the same (volume, segmentation, segment); returns its index."""
    ensure_columns(node)
    row = find_row(node, values["volume_node_id"], values["segmentation_node_id"], values["segment_id"])
    t = node.GetTable()
    if row < 0:
        row_id = _next_row_id(node)
        row = t.GetNumberOfRows()
        for name, kind, *_ in COLUMNS:
            arr = t.GetColumnByName(name)
            arr.InsertNextValue("" if kind == S else (0 if kind == I else float("nan")))
    else:
        row_id = t.GetColumnByName("row_id").GetValue(row)
    values = dict(values, exact=_exact_text(values), row_id=row_id)
    for name, kind, *_ in COLUMNS:
        _set(t.GetColumnByName(name), row, kind, values.get(name))
    for key, role in REFERENCE_KEYS.items():
        node.SetNodeReferenceID(_row_role(role, row_id), values[key])
    t.Modified()
    node.Modified()
    return row


def get_row(node, row) -> dict:
    """A row as a dict of Python values (NaN for missing numbers; numbers at full precision), with the
    MRML IDs its node references point at now (`volume_node_id`, `segmentation_node_id`)."""
    t = node.GetTable()
    out = {}
    for name, kind, *_ in COLUMNS:
        v = t.GetColumnByName(name).GetValue(row)
        out[name] = v if kind == S else (int(v) if kind == I else float(v))
    for name, value in _parse_exact(out["exact"]).items():
        if name in out:
            out[name] = value
    for key, role in REFERENCE_KEYS.items():
        out[key] = row_node_id(node, role, row)
    return out


def set_stale(node, row, stale=True):
    col = node.GetTable().GetColumnByName("stale")
    if int(col.GetValue(row)) != int(bool(stale)):
        col.SetValue(row, int(bool(stale)))
        node.GetTable().Modified()
        node.Modified()


def column_array(node, name) -> np.ndarray:
    """A numeric column as numpy (console use: column_array(table, "score"))."""
    from vtk.util import numpy_support

    return numpy_support.vtk_to_numpy(node.GetTable().GetColumnByName(name))
