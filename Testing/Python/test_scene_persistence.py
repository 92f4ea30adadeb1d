"""What a saved or imported scene keeps, under slicer-core: the selected segment, table rows tied to
their nodes by MRML node references (also after importing into a scene that already has nodes), scores
at full precision through a .mrb, one ROI + one cube volume per segment, and the jump to the cube centre
in world coordinates when the CT is under a transform."""

from __future__ import annotations

import dataclasses

import numpy as np
from slicer_harness import add_segmentation, add_volume, fresh_scene, linear_transform, slicer, vtk

from DFM50NLib.geometry.synthetic import make_grid, sphere_case
from DFM50NLib.scene import params as P
from DFM50NLib.scene import table as st
from DFM50NLib.scene.logic import WEIGHTS_SETTING, DFM50NLogic
from DFM50NLib.scene.presenter import MemorySettings, PanelPresenter

CENTER = np.array([-20.0, 15.0, -30.0])


def sphere(grid, center, radius, name):
    ijk = np.indices(grid.shape, dtype=float).reshape(3, -1).T
    inside = np.linalg.norm(grid.ijk_to_world(ijk) - center, axis=1) <= radius
    return grid.with_array(inside.reshape(grid.shape).astype(np.uint8), name=name)


def build(scene_name="A", shift=(0.0, 0.0, 0.0)):
    """A CT and a segmentation with two lesions in the current scene."""
    c = CENTER + shift
    ct, _ = sphere_case(c, 7.0, shape=(64, 64, 28), spacing=(0.8, 0.8, 2.0), seed=5)
    grid = make_grid((36, 36, 24), (1.0, 1.0, 1.0), center_ras=c + [2, 2, 0])
    ct_node = add_volume(ct, f"CT {scene_name}")
    seg, ids = add_segmentation(
        {"Tumor": sphere(grid, c, 7.0, "Tumor"), "Node": sphere(grid, c + [6, 6, 0], 4.0, "Node")},
        name=f"Lesions {scene_name}",
    )
    return ct_node, seg, ids


def add_slice_views(scene):
    """Red/Yellow/Green slice + composite nodes, as the application's layout would create them."""
    views = []
    for name in ("Red", "Yellow", "Green"):
        sn = slicer.vtkMRMLSliceNode()
        sn.SetName(name)
        sn.SetLayoutName(name)
        sn.SetSingletonTag(name)
        scene.AddNode(sn)
        cn = slicer.vtkMRMLSliceCompositeNode()
        cn.SetLayoutName(name)
        cn.SetSingletonTag(name)
        scene.AddNode(cn)
        views.append((sn, cn))
    return views


def score(logic, ct_node, seg, segment_id, weights, **kw):
    return logic.scoreSegment(ct_node, seg, segment_id, weights=weights, checkDependencies=False, **kw)


def test_the_saved_segment_is_restored_from_an_mrb(tmp_path):
    scene = fresh_scene()
    ct_node, seg, ids = build()
    presenter = PanelPresenter(DFM50NLogic(scene))
    presenter.params.inputVolume = ct_node
    presenter.selectSegment(seg, ids["Node"])  # the second segment, not the first
    presenter.setParameter("shortAxisCm", 1.25)
    presenter.setParameter("device", "cpu")
    path = str(tmp_path / "selection.mrb")
    assert scene.WriteToMRB(path)

    scene2 = fresh_scene()
    assert scene2.ReadFromMRB(path)
    restored = PanelPresenter(DFM50NLogic(scene2))
    node, segment_id = restored.savedSelection()
    assert segment_id == ids["Node"] and segment_id != seg.GetSegmentation().GetNthSegmentID(0)
    assert node is not None and node.GetName() == "Lesions A" and node.GetScene() is scene2
    assert node.GetSegmentation().GetSegment(segment_id).GetName() == "Node"
    p = restored.params
    assert (p.inputVolume.GetName(), p.shortAxisCm, p.device, p.allSegments) == ("CT A", 1.25, "cpu", False)
    # the Qt-free parameters and Slicer's @parameterNodeWrapper store the same strings
    raw = P.parameter_node(scene2, create=False)
    assert raw.GetParameter("segmentId") == ids["Node"] and raw.GetParameter("shortAxisCm") == "1.25"
    assert raw.GetParameter("allSegments") == "False" and raw.GetNodeReference("segmentationNode") is node


def test_table_rows_follow_their_nodes_when_a_scene_is_imported_into_a_non_empty_scene(random_weights, tmp_path):
    scene_a = fresh_scene()
    ct_a, seg_a, ids_a = build("A")
    logic_a = DFM50NLogic(scene_a)
    ra = score(logic_a, ct_a, seg_a, ids_a["Tumor"], random_weights)
    path = str(tmp_path / "a.mrb")
    assert scene_a.WriteToMRB(path)
    logic_a.removeObservers()

    scene_b = fresh_scene()  # already holds nodes with the very IDs scene A used
    ct_b, seg_b, ids_b = build("B", shift=(30.0, 0.0, 0.0))
    logic_b = DFM50NLogic(scene_b)
    score(logic_b, ct_b, seg_b, ids_b["Node"], random_weights)
    assert (ct_b.GetID(), seg_b.GetID()) == (ct_a.GetID(), seg_a.GetID())
    assert scene_b.ReadFromMRB(path, False)  # import, do not clear

    tables = [scene_b.GetNthNodeByClass(i, "vtkMRMLTableNode") for i in range(2)]
    imported = next(t for t in tables if t is not logic_b.getTableNode(create=False))
    row = st.get_row(imported, 0)
    ct_imported = scene_b.GetNodeByID(row["volume_node_id"])
    seg_imported = scene_b.GetNodeByID(row["segmentation_node_id"])
    assert ct_imported is not ct_b and ct_imported.GetName() == "CT A"
    assert seg_imported is not seg_b and seg_imported.GetName() == "Lesions A"
    assert row["segment"] == "Tumor" and row["score"] == ra.score
    # nothing looks stale: the row's hash is recomputed on the imported nodes it references
    assert DFM50NLogic(scene_b).refreshStale(imported) == []
    # the original table still points at scene B's own nodes
    own = st.get_row(logic_b.getTableNode(create=False), 0)
    assert (own["volume_node_id"], own["segmentation_node_id"]) == (ct_b.GetID(), seg_b.GetID())


def test_scores_keep_full_precision_through_an_mrb(random_weights, tmp_path):
    scene = fresh_scene()
    ct_node, seg, ids = build()
    logic = DFM50NLogic(scene)
    r = score(logic, ct_node, seg, ids["Tumor"], random_weights, addToTable=False)
    r = dataclasses.replace(r, score=0.2499996, risk_label="low OLM risk", high_risk=False, coverage=1 / 3)
    table = logic.writeResult(r, ct_node, seg, ids["Tumor"], "0" * 64)
    path = str(tmp_path / "precision.mrb")
    assert scene.WriteToMRB(path)
    logic.removeObservers()

    scene2 = fresh_scene()
    assert scene2.ReadFromMRB(path)
    table = st.get_table(scene2, create=False)
    row = st.get_row(table, 0)
    assert row["score"] == 0.2499996 and row["coverage"] == 1 / 3  # exact, not 0.25 / 0.333333
    assert row["risk_label"] == "low OLM risk" and row["high_risk"] == 0
    assert st.column_array(table, "score")[0] == 0.2499996  # the numeric column is restored too
    assert table.GetTable().GetColumnByName("score").GetDataType() == 11  # still a double column


def test_show_cube_reuses_one_roi_and_one_cube_volume_per_segment_and_displays_it(random_weights):
    scene = fresh_scene()
    views = add_slice_views(scene)
    ct_node, seg, ids = build()
    logic = DFM50NLogic(scene)
    r_tumor = score(logic, ct_node, seg, ids["Tumor"], random_weights)
    r_node = score(logic, ct_node, seg, ids["Node"], random_weights)
    roi1, cube1 = logic.showCube(r_tumor, ct_node, seg, ids["Tumor"])
    roi2, cube2 = logic.showCube(r_tumor, ct_node, seg, ids["Tumor"])
    assert (roi1, cube1) == (roi2, cube2)
    roi3, cube3 = logic.showCube(r_node, ct_node, seg, ids["Node"])
    assert roi3 is not roi1 and cube3 is not cube1
    assert scene.GetNumberOfNodesByClass("vtkMRMLMarkupsROINode") == 2
    assert scene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode") == 3  # CT + one cube per segment
    assert slicer.util.arrayFromVolume(cube3).shape == (50, 50, 50)
    for _, composite in views:  # the last cube is shown over the CT
        assert composite.GetBackgroundVolumeID() == ct_node.GetID()
        assert composite.GetForegroundVolumeID() == cube3.GetID() and composite.GetForegroundOpacity() == 0.5
    # re-scoring with another centre moves the same ROI
    r2 = score(logic, ct_node, seg, ids["Tumor"], random_weights, center="centroid")
    roi4, _ = logic.showCube(r2, ct_node, seg, ids["Tumor"])
    assert roi4 is roi1
    c2r = np.asarray(r2.cube_to_ras)
    np.testing.assert_allclose(roi1.GetCenterWorld(), c2r[:3, :3] @ np.full(3, 24.5) + c2r[:3, 3], atol=1e-6)
    assert scene.GetNumberOfNodesByClass("vtkMRMLTextNode") == 2  # one report node per segment


def test_jump_goes_to_the_world_centre_when_the_ct_is_under_a_transform(random_weights):
    scene = fresh_scene()
    views = add_slice_views(scene)
    ct_node, seg, ids = build()
    shift = np.eye(4)
    shift[:3, 3] = [12.0, -16.0, 0.0]  # 20 mm
    t = linear_transform(shift)
    ct_node.SetAndObserveTransformNodeID(t.GetID())
    seg.SetAndObserveTransformNodeID(t.GetID())
    presenter = PanelPresenter(DFM50NLogic(scene), settings=MemorySettings({WEIGHTS_SETTING: str(random_weights)}))
    presenter.params.inputVolume = ct_node
    presenter.selectSegment(seg, ids["Tumor"])
    presenter.setParameter("device", "cpu")
    presenter.apply()
    presenter.wait(300)
    [scored] = presenter.scored
    local = np.array(scored.result.center_ras)
    assert np.linalg.norm(local - CENTER) < 1.5  # the centre is reported in the CT's own frame
    roi, cube, world = presenter.showCube()
    np.testing.assert_allclose(world, local + shift[:3, 3], atol=1e-9)
    for slice_node, _ in views:
        m = slice_node.GetSliceToRAS()
        np.testing.assert_allclose([m.GetElement(i, 3) for i in range(3)], world, atol=1e-6)
    # the ROI sits under the same transform, so it surrounds the world centre too
    c2r = np.asarray(scored.result.cube_to_ras)
    roi_local_centre = c2r[:3, :3] @ np.full(3, 24.5) + c2r[:3, 3]
    np.testing.assert_allclose(roi.GetCenterWorld(), roi_local_centre + shift[:3, 3], atol=1e-6)
    assert cube.GetParentTransformNode() is t


def test_a_table_saved_with_id_columns_gets_node_references():
    """Scenes written before rows used node references: the ID text columns become references."""
    scene = fresh_scene()
    ct_node, seg, ids = build()
    node = scene.AddNewNodeByClass("vtkMRMLTableNode", st.TABLE_NAME)
    old = (("segment_id", ids["Node"]), ("volume_node_id", ct_node.GetID()), ("segmentation_node_id", seg.GetID()))
    for name, value in old:
        col = vtk.vtkStringArray()
        col.SetName(name)
        col.InsertNextValue(value)
        node.GetTable().AddColumn(col)
    table = st.get_table(scene, create=False)
    assert table is node and table.GetTable().GetColumnByName("volume_node_id") is None
    row = st.get_row(table, 0)
    assert (row["volume_node_id"], row["segmentation_node_id"]) == (ct_node.GetID(), seg.GetID())
    assert row["segment_id"] == ids["Node"] and table.GetTable().GetNumberOfRows() == 1
