"""The panel against real scene events, under slicer-core (issue 18's scene defects): a scene loaded into a
non-empty scene keeps the saved segment, saving a scene does not mark rows stale, rows keep their own nodes
when another row's CT is deleted, an edit made while scoring is flagged, a closed scene's result is gone,
leaving the module mid-run keeps the job's output table, and every DFM50N table is exact after a plain load.

Scores come from the real pipeline (random-weight FCIB, bundled DEMO forest)."""

from __future__ import annotations

import dataclasses

import pytest
from slicer_harness import add_segmentation, add_volume, fresh_scene, slicer, vtk
from test_scene_persistence import CENTER, build, sphere
from test_scene_table import edit_segment

from DFM50NLib.errors import DFM50NError
from DFM50NLib.geometry.synthetic import make_grid, sphere_case
from DFM50NLib.scene import table as st
from DFM50NLib.scene.logic import WEIGHTS_SETTING, DFM50NLogic
from DFM50NLib.scene.presenter import IDLE, RUNNING, MemorySettings, PanelPresenter


def panel(scene, weights, **kw):
    presenter = PanelPresenter(DFM50NLogic(scene), settings=MemorySettings({WEIGHTS_SETTING: str(weights)}), **kw)
    presenter.setParameter("device", "cpu")
    return presenter


def selected(weights):
    """A fresh scene (CT A; lesions Tumor and Node) and a presenter with CT A / Tumor selected."""
    scene = fresh_scene()
    ct_node, seg, ids = build()
    presenter = panel(scene, weights)
    presenter.params.inputVolume = ct_node
    presenter.selectSegment(seg, ids["Tumor"])
    return scene, ct_node, seg, ids, presenter


def saved_and_reloaded(scene, logic, path):
    """Save `scene` to an .mrb, stop the old Logic watching it, load the file into a fresh scene."""
    assert scene.WriteToMRB(str(path))
    logic.removeObservers()
    scene2 = fresh_scene()
    assert scene2.ReadFromMRB(str(path))
    return scene2


def score(logic, ct_node, seg, segment_id, weights, **kw):
    return logic.scoreSegment(ct_node, seg, segment_id, weights=weights, checkDependencies=False, **kw)


def stale_flags(table):
    return [st.get_row(table, r)["stale"] for r in range(table.GetTable().GetNumberOfRows())]


# ------------------------------------------------------------------------------------------- defect 1


def test_the_saved_segment_survives_loading_a_scene_into_a_non_empty_scene(tmp_path):
    """qMRMLSegmentSelectorWidget re-populates when the import's batch ends and reports its first segment
    (currentSegmentChanged) before the widget can restore the saved one; that report must not be written."""
    fresh_scene()
    ct_a, seg_a, ids_a = build("A")
    saver = PanelPresenter(DFM50NLogic(slicer.mrmlScene))
    saver.params.inputVolume = ct_a
    saver.selectSegment(seg_a, ids_a["Node"])  # the second segment, not the one a selector picks first
    path = str(tmp_path / "a.mrb")
    assert slicer.mrmlScene.WriteToMRB(path)

    scene = fresh_scene()
    ct_b, seg_b, ids_b = build("B", shift=(30.0, 0.0, 0.0))
    presenter = PanelPresenter(DFM50NLogic(scene))
    presenter.selectSegment(seg_b, ids_b["Tumor"])
    reported = []

    def selector_repopulates(caller, event):  # what the selector does, as soon as the scene says so
        first = scene.GetFirstNodeByClass("vtkMRMLSegmentationNode")
        reported.append(first.GetName())
        presenter.selectSegment(first, first.GetSegmentation().GetNthSegmentID(0))

    tags = [scene.AddObserver(e, selector_repopulates) for e in (scene.EndImportEvent, scene.EndBatchProcessEvent)]
    restored = []
    presenter.afterImport = lambda: restored.append(presenter.savedSelection())
    assert scene.ReadFromMRB(path, False)  # import: scene B keeps its own nodes
    for tag in tags:
        scene.RemoveObserver(tag)

    assert reported == ["Lesions B", "Lesions B"]  # the selector did report scene B's first segment, twice
    node, segment_id = presenter.savedSelection()
    assert node.GetName() == "Lesions A" and node is not seg_b and node.GetScene() is scene
    assert node.GetSegmentation().GetSegment(segment_id).GetName() == "Node"
    assert presenter.params.inputVolume.GetName() == "CT A"
    assert restored == [(node, segment_id)]  # the front end restores its selector once, after the import
    presenter.selectSegment(seg_b, ids_b["Node"])  # and the user's own choices are written again
    assert presenter.savedSelection() == (seg_b, ids_b["Node"])


# ------------------------------------------------------------------------------------------- defect 2


def test_saving_a_scene_leaves_rows_unstale_in_memory_and_in_the_file(random_weights, tmp_path):
    """Saving merges labelmap layers (CollapseBinaryLabelmaps); in between, one event shows a segment with
    its neighbour's voxels (720 instead of 56 here)."""
    scene = fresh_scene()
    ct, _ = sphere_case(CENTER, 7.0, shape=(64, 64, 28), spacing=(0.8, 0.8, 2.0), seed=5)
    grid = make_grid((36, 36, 24), (1.0, 1.0, 1.0), center_ras=CENTER + [3, 3, 0])
    ct_node = add_volume(ct)
    masks = {"Tumor": sphere(grid, CENTER, 7.0, "Tumor"), "Node": sphere(grid, CENTER + [10, 10, 0], 3.0, "Node")}
    seg, ids = add_segmentation(masks)  # two separate layers, no overlap: the save collapses them into one
    logic = DFM50NLogic(scene)
    for name in ("Tumor", "Node"):
        score(logic, ct_node, seg, ids[name], random_weights)
    table = logic.getTableNode(create=False)
    assert seg.GetSegmentation().GetNumberOfLayers() == 2 and stale_flags(table) == [0, 0]
    counts = []

    def count(caller, event, *args):
        counts.append(int(slicer.util.arrayFromSegmentBinaryLabelmap(seg, ids["Node"], ct_node).sum()))

    seg.GetSegmentation().AddObserver(slicer.vtkSegmentation.SegmentModified, count)
    scene2 = saved_and_reloaded(scene, logic, tmp_path / "saved.mrb")
    assert seg.GetSegmentation().GetNumberOfLayers() == 1 and max(counts) > counts[-1]  # the transient was there
    assert stale_flags(table) == [0, 0]
    table2 = st.get_table(scene2, create=False)
    assert stale_flags(table2) == [0, 0]  # nothing stale was saved
    logic2 = DFM50NLogic(scene2)
    assert logic2.refreshStale() == []
    ct2, seg2 = scene2.GetNodeByID(ct_node.GetID()), scene2.GetNodeByID(seg.GetID())
    edit_segment(seg2, ids["Node"], ct2)  # a real edit is still caught, on the merged layer
    assert stale_flags(table2) == [0, 1]


# ------------------------------------------------------------------------------------------- defect 3


def test_deleting_one_rows_ct_leaves_the_other_rows_references_alone(random_weights, tmp_path):
    scene = fresh_scene()
    ct1, seg, ids = build("A")
    ct2 = add_volume(sphere_case(CENTER, 7.0, shape=(60, 60, 26), spacing=(0.9, 0.9, 2.0), seed=9)[0], "CT 2")
    logic = DFM50NLogic(scene)
    r1 = score(logic, ct1, seg, ids["Tumor"], random_weights)
    score(logic, ct2, seg, ids["Tumor"], random_weights)
    table = logic.getTableNode(create=False)
    ct2_id = ct2.GetID()
    scene.RemoveNode(ct1)
    rows = [st.get_row(table, r) for r in range(2)]
    assert [(r["volume"], r["volume_node_id"]) for r in rows] == [("CT A", ""), ("CT 2", ct2_id)]
    assert st.find_row(table, ct2_id, seg.GetID(), ids["Tumor"]) == 1
    r2b = score(logic, ct2, seg, ids["Tumor"], random_weights, center="centroid")  # re-score CT 2
    rows = [st.get_row(table, r) for r in range(table.GetTable().GetNumberOfRows())]
    assert [(r["volume"], r["center_method"]) for r in rows] == [("CT A", "dt_peak"), ("CT 2", "centroid")]
    assert len(rows) == 2 and rows[1]["score"] == r2b.score and rows[0]["score"] == r1.score
    assert logic.refreshStale(table) == [0]  # its CT is gone: its score cannot be checked any more
    # the references survive a save and a load
    scene2 = saved_and_reloaded(scene, logic, tmp_path / "deleted.mrb")
    table2 = st.get_table(scene2, create=False)
    assert [st.get_row(table2, r)["volume_node_id"] for r in range(2)] == ["", ct2_id]
    assert scene2.GetNodeByID(ct2_id).GetName() == "CT 2"


def test_a_table_saved_with_one_shared_role_gets_a_role_per_row():
    """Scenes saved before per-row roles: the n-th reference of "dfm50nVolume" belonged to row n."""
    scene = fresh_scene()
    ct1, seg, ids = build("A")
    ct2 = add_volume(sphere_case(CENTER, 7.0, shape=(40, 40, 20), spacing=(1.0, 1.0, 2.0), seed=3)[0], "CT 2")
    node = scene.AddNewNodeByClass("vtkMRMLTableNode", st.TABLE_NAME)
    col = vtk.vtkStringArray()
    col.SetName("segment_id")
    for ct in (ct1, ct2):
        col.InsertNextValue(ids["Tumor"])
        node.AddNodeReferenceID(st.VOLUME_ROLE, ct.GetID())
        node.AddNodeReferenceID(st.SEGMENTATION_ROLE, seg.GetID())
    node.GetTable().AddColumn(col)
    table = st.get_table(scene, create=False)
    assert table is node and node.GetNumberOfNodeReferences(st.VOLUME_ROLE) == 0
    assert [st.get_row(table, r)["volume_node_id"] for r in range(2)] == [ct1.GetID(), ct2.GetID()]
    scene.RemoveNode(ct1)
    assert [st.get_row(table, r)["volume_node_id"] for r in range(2)] == ["", ct2.GetID()]
    assert st.find_row(table, ct2.GetID(), seg.GetID(), ids["Tumor"]) == 1


# ------------------------------------------------------------------------------------------- defect 4


def test_a_segment_edited_while_it_is_scored_is_stale_when_the_result_arrives(random_weights):
    scene, ct_node, seg, ids, presenter = selected(random_weights)
    assert presenter.view().edit_segment_enabled
    presenter.apply()
    assert presenter.view().state == RUNNING and not presenter.view().edit_segment_enabled
    edit_segment(seg, ids["Tumor"], ct_node)  # in the Segment Editor, while the job runs on its own copy
    v = presenter.wait(300)
    assert v.status == "Scored 1 segment." and v.edit_segment_enabled
    table = scene.GetNodeByID(v.table_id)
    assert stale_flags(table) == [1]
    assert st.get_row(table, 0)["mask_sha256"] == presenter.scored[0].mask_sha256  # the hash of what was scored


# ------------------------------------------------------------------------------------------- defect 6


def test_a_closed_scenes_result_is_gone_and_show_cube_adds_nothing(random_weights):
    scene, ct_node, seg, ids, presenter = selected(random_weights)
    presenter.apply()
    v = presenter.wait(300)
    assert v.show_cube_enabled and v.result_lines
    scene.Clear(0)  # File > Close scene
    v = presenter.view()
    assert (v.result_lines, v.result_html, v.status, v.table_id) == ([], "Not scored yet.", "", "")
    assert not (v.show_cube_enabled or v.open_report_enabled or v.dicom_sr_enabled)
    with pytest.raises(DFM50NError, match="Score a segment first"):
        presenter.showCube()
    for cls in ("vtkMRMLMarkupsROINode", "vtkMRMLScalarVolumeNode", "vtkMRMLTableNode", "vtkMRMLTextNode"):
        assert scene.GetNumberOfNodesByClass(cls) == 0, cls


def test_a_job_running_when_its_scene_closes_delivers_nothing_into_the_next_scene(random_weights):
    scene, ct_node, seg, ids, presenter = selected(random_weights)
    presenter.apply()
    scene.Clear(0)
    v = presenter.wait(300)
    assert v.state == IDLE and v.result_lines == [] and presenter.scored == []
    assert scene.GetNumberOfNodesByClass("vtkMRMLTableNode") == 0
    assert scene.GetNumberOfNodesByClass("vtkMRMLTextNode") == 0


# ------------------------------------------------------------------------------------------- defect 7


def test_leaving_the_module_mid_run_keeps_the_jobs_output_table(random_weights):
    scene = fresh_scene()
    ct_node, seg, ids = build()
    presenter = panel(scene, random_weights)
    mine = scene.AddNewNodeByClass("vtkMRMLTableNode", "My scores")
    presenter.params.inputVolume = ct_node
    presenter.selectSegment(seg, ids["Tumor"])
    presenter.params.outputTable = mine
    params = presenter.params
    presenter.apply()
    presenter.setParameters(None)  # the widget's exit(): the panel lets go of the parameter node
    v = presenter.wait(300)
    assert v.status == "Scored 1 segment." and v.table_id == mine.GetID()
    assert mine.GetTable().GetNumberOfRows() == 1 and st.get_row(mine, 0)["segment"] == "Tumor"
    assert scene.GetFirstNodeByName(st.TABLE_NAME) is None  # nothing went to the default table
    presenter.setParameters(params)  # entering again
    assert presenter.params.outputTable is mine


# ------------------------------------------------------------------------------------------- defect 8


def test_every_dfm50n_table_is_exact_after_a_plain_load(random_weights, tmp_path):
    """Two tables (the default one and an output table the user picked), loaded without any panel: the
    module's startup hook restores both; without it the file's 6 digits read 0.25, the threshold."""
    scene = fresh_scene()
    ct_node, seg, ids = build()
    logic = DFM50NLogic(scene)
    r = score(logic, ct_node, seg, ids["Tumor"], random_weights, addToTable=False)
    r = dataclasses.replace(r, score=0.2499996, risk_label="low OLM risk", high_risk=False)
    logic.writeResult(r, ct_node, seg, ids["Tumor"], "0" * 64)
    mine = scene.AddNewNodeByClass("vtkMRMLTableNode", "My scores")
    logic.writeResult(dataclasses.replace(r, coverage=1 / 3), ct_node, seg, ids["Node"], "0" * 64, mine)
    path = str(tmp_path / "two-tables.mrb")
    assert scene.WriteToMRB(path)
    logic.removeObservers()

    def loaded(watch):
        scene2 = fresh_scene()
        if watch:
            st.keep_full_precision(scene2)  # what the module does at startup for slicer.mrmlScene
        assert scene2.ReadFromMRB(path)
        nodes = [scene2.GetFirstNodeByName(name) for name in (st.TABLE_NAME, "My scores")]
        return [float(st.column_array(n, "score")[0]) for n in nodes] + [
            float(st.column_array(nodes[1], "coverage")[0])
        ]

    assert loaded(watch=False) == [0.25, 0.25, 0.333333]  # the defect: what a plain load shows
    assert loaded(watch=True) == [0.2499996, 0.2499996, 1 / 3]
    scene3 = fresh_scene()
    assert st.keep_full_precision(scene3) == st.keep_full_precision(scene3)  # one observer per scene
    assert scene3.ReadFromMRB(path, False) and scene3.ReadFromMRB(path, False)  # imported twice
    tables = st.scores_tables(scene3)
    assert len(tables) == 4 and {float(st.column_array(t, "score")[0]) for t in tables} == {0.2499996}
