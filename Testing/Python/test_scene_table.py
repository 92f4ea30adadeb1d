"""The "DFM50N scores" table: typed columns with units, one row per (volume, segment), stale flags,
and a .mrb round trip - under slicer-core with real scores (random-weight FCIB, bundled DEMO forest)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from slicer_harness import add_segmentation, add_volume, fresh_scene, slicer

from DFM50NLib.geometry.synthetic import make_grid, sphere_case
from DFM50NLib.scene import table as st
from DFM50NLib.scene.logic import DFM50NLogic

CENTER = np.array([-20.0, 15.0, -30.0])
VTK_TYPES = {"double": 11, "int": 6, "string": 13}  # VTK_DOUBLE, VTK_INT, VTK_STRING


def sphere_mask(grid, center, radius, name):
    ijk = np.indices(grid.shape, dtype=float).reshape(3, -1).T
    inside = np.linalg.norm(grid.ijk_to_world(ijk) - center, axis=1) <= radius
    return grid.with_array(inside.reshape(grid.shape).astype(np.uint8), name=name)


@pytest.fixture()
def case(random_weights):
    """A fresh scene with a CT, two segments (one scored twice in some tests) and a Logic."""
    scene = fresh_scene()
    ct, _ = sphere_case(CENTER, 7.0, shape=(64, 64, 28), spacing=(0.8, 0.8, 2.0), seed=5)
    grid = make_grid((24, 24, 24), (1.25, 1.25, 1.25), center_ras=CENTER)
    ct_node = add_volume(ct)
    seg, ids = add_segmentation(
        {"Tumor": sphere_mask(grid, CENTER, 7.0, "Tumor"), "Node": sphere_mask(grid, CENTER + [3, 3, 0], 4.0, "Node")}
    )
    logic = DFM50NLogic()
    opts = dict(weights=random_weights, checkDependencies=False)
    return scene, ct_node, seg, ids, logic, opts


def test_columns_are_typed_with_units_and_descriptions(case):
    scene, ct_node, seg, ids, logic, opts = case
    r = logic.scoreSegment(ct_node, seg, ids["Tumor"], clinical={"smoking": True, "spiculated": False}, **opts)
    table = logic.getTableNode(create=False)
    t = table.GetTable()
    assert [t.GetColumn(i).GetName() for i in range(t.GetNumberOfColumns())] == list(st.COLUMN_NAMES)
    for name, kind, title, unit, description in st.COLUMNS:
        assert t.GetColumnByName(name).GetDataType() == VTK_TYPES[kind], name
        assert table.GetColumnTitle(name) == title and table.GetColumnDescription(name) == description
        assert table.GetColumnUnitLabel(name) == unit
    row = st.get_row(table, 0)
    assert row["score"] == pytest.approx(r.score, abs=1e-12) and row["threshold"] == 0.25
    assert row["risk_label"] == r.risk_label and row["high_risk"] == int(r.score >= 0.25)
    assert row["classifier_is_demo"] == 1 and row["stale"] == 0
    assert [row["center_R"], row["center_A"], row["center_S"]] == pytest.approx(r.center_ras)
    assert row["mask_volume_mm3"] == pytest.approx(r.mask_volume_mm3) and row["mask_voxels"] == r.mask_voxels
    assert row["cube_mask_voxels"] == r.cube_mask_voxels and row["coverage"] == pytest.approx(r.coverage)
    assert row["smoking"] == "yes" and row["spiculated"] == "no"
    assert row["short_axis_source"] == "measured" and row["short_axis_cm"] == pytest.approx(r.short_axis_cm)
    assert row["combined_probability"] == pytest.approx(r.combined_probability)
    assert row["combined_positive"] in ("positive", "negative")
    assert row["fcib_weights_sha256"] == r.fcib_weights_sha256 and len(row["mask_sha256"]) == 64
    assert (row["volume"], row["segment"], row["segment_id"]) == ("CT", "Tumor", ids["Tumor"])
    assert "DEMO" in row["warnings"]


def test_missing_clinical_values_are_nan_and_empty_not_guessed(case):
    scene, ct_node, seg, ids, logic, opts = case
    logic.scoreSegment(ct_node, seg, ids["Tumor"], **opts)
    row = st.get_row(logic.getTableNode(), 0)
    assert math.isnan(row["combined_probability"]) and row["smoking"] == "" and row["combined_positive"] == ""


def test_rescoring_replaces_the_row_other_segments_add_rows(case):
    scene, ct_node, seg, ids, logic, opts = case
    logic.scoreSegment(ct_node, seg, ids["Tumor"], **opts)
    logic.scoreSegment(ct_node, seg, ids["Node"], **opts)
    r = logic.scoreSegment(ct_node, seg, ids["Tumor"], center="centroid", **opts)
    table = logic.getTableNode()
    assert table.GetTable().GetNumberOfRows() == 2
    row = st.get_row(table, st.find_row(table, ct_node.GetID(), seg.GetID(), ids["Tumor"]))
    assert row["center_method"] == "centroid" and row["score"] == pytest.approx(r.score, abs=1e-12)
    assert scene.GetNumberOfNodesByClass("vtkMRMLTableNode") == 1
    # one report text node per (volume, segment), replaced too
    assert scene.GetNumberOfNodesByClass("vtkMRMLTextNode") == 2


def edit_segment(seg, segment_id, ct_node, grow_voxels=2):
    """Paint a few more voxels into the segment, as the Segment Editor would."""
    arr = slicer.util.arrayFromSegmentBinaryLabelmap(seg, segment_id, ct_node)
    idx = np.argwhere(arr)
    k, j, i = idx[idx[:, 2].argmax()]  # a lesion voxel at the largest i: grow the lesion from there
    arr[k, j, i + 1 : i + 1 + grow_voxels] = 1
    slicer.util.updateSegmentBinaryLabelmapFromArray(arr, seg, segment_id, ct_node)


def test_editing_the_segment_marks_its_row_stale_and_only_that_row(case):
    scene, ct_node, seg, ids, logic, opts = case
    logic.scoreSegment(ct_node, seg, ids["Tumor"], **opts)
    logic.scoreSegment(ct_node, seg, ids["Node"], **opts)
    table = logic.getTableNode()
    tumor = st.find_row(table, ct_node.GetID(), seg.GetID(), ids["Tumor"])
    node = st.find_row(table, ct_node.GetID(), seg.GetID(), ids["Node"])
    seg.GetSegmentation().GetSegment(ids["Tumor"]).SetColor(0.1, 0.9, 0.1)  # not an edit of the lesion
    seg.GetSegmentation().GetSegment(ids["Tumor"]).Modified()
    assert st.get_row(table, tumor)["stale"] == 0
    edit_segment(seg, ids["Tumor"], ct_node)
    assert st.get_row(table, tumor)["stale"] == 1 and st.get_row(table, node)["stale"] == 0
    assert logic.refreshStale(table) == [tumor]
    logic.scoreSegment(ct_node, seg, ids["Tumor"], **opts)  # re-scoring clears it
    assert st.get_row(table, tumor)["stale"] == 0


def test_mrb_round_trip_keeps_the_table_and_staleness_is_found_after_reload(case, tmp_path):
    scene, ct_node, seg, ids, logic, opts = case
    r = logic.scoreSegment(ct_node, seg, ids["Tumor"], **opts)
    logic.scoreSegment(ct_node, seg, ids["Node"], **opts)
    path = str(tmp_path / "scored.mrb")
    assert scene.WriteToMRB(path)
    logic.removeObservers()

    scene2 = fresh_scene()
    assert scene2.ReadFromMRB(path)
    logic2 = DFM50NLogic()
    table = logic2.getTableNode(create=False)
    assert table is not None and table.GetName() == st.TABLE_NAME
    t = table.GetTable()
    assert t.GetNumberOfRows() == 2
    for name, kind, *_ in st.COLUMNS:  # numbers are still numbers after the round trip
        assert t.GetColumnByName(name).GetDataType() == VTK_TYPES[kind], name
    assert table.GetColumnUnitLabel("mask_volume_mm3") == "mm3"
    assert table.GetColumnDescription("coverage") == {c[0]: c[4] for c in st.COLUMNS}["coverage"]
    row = st.get_row(table, st.find_row(table, ct_node.GetID(), seg.GetID(), ids["Tumor"]))
    assert row["score"] == pytest.approx(r.score, abs=1e-9) and row["created"] == r.created
    # unedited segments are not stale after reload; an edit made after reload is found by the hash
    assert logic2.refreshStale(table) == []
    ct2, seg2 = scene2.GetNodeByID(ct_node.GetID()), scene2.GetNodeByID(seg.GetID())
    edit_segment(seg2, ids["Node"], ct2)
    stale = logic2.refreshStale(table)
    assert [st.get_row(table, i)["segment"] for i in stale] == ["Node"]
