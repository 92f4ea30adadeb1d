"""The panel presenter under slicer-core with the real Logic and a random-weight FCIB network: its state
machine, scoring in the background (the test polls as the widget's QTimer does), Cancel during the
forward, a selection changed mid-run, and the error paths.

Scores are checked against `DFM50NLogic.scoreSegment` run synchronously on the same inputs."""

from __future__ import annotations

import time

import numpy as np
import pytest
from slicer_harness import add_segmentation, add_volume, fresh_scene

from DFM50NLib.errors import DFM50NError
from DFM50NLib.geometry.synthetic import make_grid, sphere_case
from DFM50NLib.scene import jobs
from DFM50NLib.scene import table as st
from DFM50NLib.scene.logic import WEIGHTS_SETTING, DFM50NLogic
from DFM50NLib.scene.presenter import CANCELLING, IDLE, RUNNING, MemorySettings, PanelPresenter

CENTER = np.array([12.0, -18.0, 40.0])
SECOND = CENTER + [9.0, 6.0, 0.0]


def sphere(grid, center, radius, name):
    ijk = np.indices(grid.shape, dtype=float).reshape(3, -1).T
    inside = np.linalg.norm(grid.ijk_to_world(ijk) - center, axis=1) <= radius
    return grid.with_array(inside.reshape(grid.shape).astype(np.uint8), name=name)


@pytest.fixture()
def panel(random_weights):
    return make_panel(random_weights)


def make_panel(random_weights):
    """Scene with a CT and two lesions + a presenter whose machine settings point at the random weights."""
    scene = fresh_scene()
    ct, _ = sphere_case(CENTER, 7.0, shape=(64, 64, 28), spacing=(0.8, 0.8, 2.0), seed=5)
    grid = make_grid((40, 40, 30), (1.0, 1.0, 1.0), center_ras=(CENTER + SECOND) / 2)
    ct_node = add_volume(ct)
    seg, ids = add_segmentation(
        {"Tumor": sphere(grid, CENTER, 7.0, "Tumor"), "Second": sphere(grid, SECOND, 5.0, "Second")}
    )
    logic = DFM50NLogic(scene)
    presenter = PanelPresenter(logic, settings=MemorySettings({WEIGHTS_SETTING: str(random_weights)}))
    presenter.setParameter("device", "cpu")
    return scene, ct_node, seg, ids, logic, presenter, random_weights


def poll_until(presenter, predicate, timeout=120.0):
    """Poll like the widget's timer until predicate(view) holds; returns every view seen."""
    seen, t0 = [], time.monotonic()
    while time.monotonic() - t0 < timeout:
        v = presenter.poll()
        seen.append(v)
        if predicate(v):
            return seen
        time.sleep(0.005)
    raise AssertionError(f"timed out; last view: {seen[-1]}")


def test_state_machine_from_empty_panel_to_result(panel):
    scene, ct_node, seg, ids, logic, presenter, weights = panel
    v = presenter.view()
    assert (v.state, v.apply_enabled, v.apply_tooltip) == (IDLE, False, "Select the CT volume.")
    assert not v.show_cube_enabled and not v.open_report_enabled and v.result_html == "Not scored yet."
    presenter.params.inputVolume = ct_node
    assert presenter.view().apply_tooltip == "Select the segmentation that holds the lesion."
    presenter.selectSegment(seg, "")
    assert presenter.view().apply_tooltip == "Select the lesion segment."
    presenter.selectSegment(seg, "Segment_of_another_node")  # a stale ID from the selector is not kept
    assert presenter.params.segmentId == "" and presenter.view().apply_tooltip == "Select the lesion segment."
    presenter.selectSegment(seg, ids["Tumor"])
    v = presenter.view()
    assert v.apply_enabled and v.apply_text == "Score" and v.measure_enabled and v.edit_segment_enabled
    with pytest.raises(ValueError):
        presenter.setParameter("shortAxisCm", -1.0)  # refused before any work, as the wrapper's WithinRange
    with pytest.raises(ValueError):
        presenter.setParameter("device", "tpu")

    presenter.apply()
    v = presenter.view()
    assert (v.state, v.apply_text, v.apply_enabled, v.inputs_enabled, v.polling) == (
        RUNNING,
        "Cancel",
        True,
        False,
        True,
    )
    assert not v.show_cube_enabled and v.progress_visible
    with pytest.raises(DFM50NError, match="Wait for the scoring"):
        presenter.setParameter("centerMethod", "centroid")
    seen = poll_until(presenter, lambda v: v.state == IDLE)
    progress = [v.progress for v in seen if v.progress_visible]
    assert progress == sorted(progress) and any(v.status == "Running the FCIB network" for v in seen)
    v = seen[-1]
    assert v.status == "Scored 1 segment." and v.error == "" and v.show_cube_enabled and v.open_report_enabled
    # the result box and the table carry the score computed synchronously on the same inputs
    direct = DFM50NLogic(scene).scoreSegment(
        ct_node, seg, ids["Tumor"], weights=weights, checkDependencies=False, addToTable=False, reportNode=False
    )
    [line] = v.result_lines
    assert line.segment == "Tumor" and line.score == pytest.approx(direct.score, abs=1e-7)
    assert f"{direct.score:.3f}" in v.result_html and line.demo and "DEMO" in v.demo_html
    table = scene.GetNodeByID(v.table_id)
    assert table is presenter.params.outputTable  # the output-table selector now shows the table written
    assert table.GetTable().GetNumberOfRows() == 1
    assert st.get_row(table, 0)["score"] == pytest.approx(direct.score, abs=1e-7)
    assert v.revision == 1


def test_cancel_during_the_forward_discards_the_result_and_leaves_the_table_untouched(panel):
    scene, ct_node, seg, ids, logic, presenter, _ = panel
    presenter.params.inputVolume = ct_node
    presenter.selectSegment(seg, ids["Tumor"])
    presenter.apply()
    poll_until(presenter, lambda v: presenter.job.status().stage == "forward")
    nodes_before = scene.GetNumberOfNodes()
    presenter.apply()  # the Score button reads "Cancel" while running
    v = presenter.view()
    assert (v.state, v.apply_text, v.apply_enabled) == (CANCELLING, "Cancelling…", False)
    seen = poll_until(presenter, lambda v: v.state == IDLE)
    assert presenter.job.status().state == jobs.CANCELLED and presenter.job.results is None
    assert seen[-1].status == "Cancelled: nothing was written." and seen[-1].result_lines == []
    assert scene.GetNumberOfNodes() == nodes_before  # no table, no report node
    assert st.get_table(scene, create=False) is None
    assert not seen[-1].show_cube_enabled
    # the panel is usable again: the next Score runs to the end
    presenter.apply()
    assert poll_until(presenter, lambda v: v.state == IDLE)[-1].status == "Scored 1 segment."


def test_a_selection_changed_mid_run_does_not_redirect_the_result(panel):
    scene, ct_node, seg, ids, logic, presenter, _ = panel
    other_ct = add_volume(sphere_case(SECOND, 5.0, shape=(40, 40, 20), spacing=(1.0, 1.0, 2.0), seed=1)[0], "Other")
    presenter.params.inputVolume = ct_node
    presenter.selectSegment(seg, ids["Tumor"])
    presenter.apply()
    presenter.selectSegment(seg, ids["Second"])  # the selector is read-only while running: ignored
    assert presenter.params.segmentId == ids["Tumor"]
    presenter.params.segmentId = ids["Second"]  # ... and even a direct change of the scene's parameters
    presenter.params.inputVolume = other_ct
    v = poll_until(presenter, lambda v: v.state == IDLE)[-1]
    [scored] = presenter.scored
    assert (scored.segment_id, scored.volume_node) == (ids["Tumor"], ct_node)
    assert [line.segment for line in v.result_lines] == ["Tumor"]
    table = scene.GetNodeByID(v.table_id)
    row = st.get_row(table, 0)
    assert (row["segment_id"], row["volume_node_id"]) == (ids["Tumor"], ct_node.GetID())
    assert np.linalg.norm(np.array(scored.result.center_ras) - CENTER) < 1.5
    # Show cube acts on the scored segment: "Second" (now selected) was never scored
    roi, cube, centre = presenter.showCube()
    assert np.linalg.norm(np.array(centre) - CENTER) < 1.5
    assert roi.GetNodeReference("dfm50nVolume") is ct_node


def test_score_all_lists_every_segment_and_reports_failures_together(panel):
    scene, ct_node, seg, ids, logic, presenter, _ = panel
    empty = make_grid((8, 8, 8), (1.0, 1.0, 1.0), center_ras=CENTER).with_array(np.zeros((8, 8, 8), np.uint8))
    from slicer_harness import oriented_image

    seg.AddSegmentFromBinaryLabelmapRepresentation(oriented_image(empty.array, empty.ijk_to_ras), "Empty", [0, 0, 1])
    presenter.params.inputVolume = ct_node
    presenter.selectSegment(seg, "")
    presenter.setParameter("allSegments", True)
    presenter.apply()
    v = poll_until(presenter, lambda v: v.state == IDLE)[-1]
    assert [line.segment for line in v.result_lines] == ["Tumor", "Second"]
    assert "Tumor: DFM50N score" in v.result_html and "Second: DFM50N score" in v.result_html
    assert v.errors.startswith("Empty: ") and "empty" in v.errors and v.status == "Scored 2 segments. 1 failed."
    assert scene.GetNodeByID(v.table_id).GetTable().GetNumberOfRows() == 2


def test_error_paths_say_what_to_do(panel, tmp_path):
    scene, ct_node, seg, ids, logic, presenter, _ = panel
    with pytest.raises(DFM50NError, match="Select the CT volume"):
        presenter.apply()
    presenter.params.inputVolume = ct_node
    presenter.selectSegment(seg, ids["Tumor"])
    presenter.setWeightsPath(tmp_path / "missing.torch")
    assert presenter.view().weights_status.startswith("not found") and presenter.view().download_visible
    presenter.apply()
    v = poll_until(presenter, lambda v: v.state == IDLE)[-1]
    assert v.status == "Scoring failed." and "missing.torch" in v.error
    assert presenter.takeError() == v.error and presenter.takeError() == ""
    assert st.get_table(scene, create=False) is None and not v.show_cube_enabled
    with pytest.raises(DFM50NError, match="Score a segment first"):
        presenter.showCube()


def test_weights_download_runs_in_the_background_and_cancel_keeps_the_part(panel, tmp_path):
    """A local HTTP server (its own process) stands in for Zenodo and serves a real checkpoint: the download
    child reports progress, Cancel kills it with the partial file kept, and the next Download resumes it to
    the full, byte-identical file, checked (structure, hash) in the child."""
    import filecmp

    from range_server import serving

    scene, ct_node, seg, ids, logic, presenter, weights = panel
    size = weights.stat().st_size
    dest = tmp_path / "model_weights.torch"
    with serving(weights, stall_after=64 << 20) as url:  # the first attempt stalls after 64 MiB
        presenter.startDownload(dest, url=url, expected_size=size)
        seen = poll_until(presenter, lambda v: presenter.download.status().fraction * size >= 32 << 20)
        assert seen[-1].state == "downloading" and seen[-1].download_text == "Cancel download"
        assert "Downloading the FCIB weights:" in seen[-1].status and not seen[-1].apply_enabled
        child = presenter.download.process
        presenter.toggleDownload()
        v = poll_until(presenter, lambda v: v.state == IDLE)[-1]
        part = dest.with_name(dest.name + ".part")
        assert child.gone() and "cancelled" in v.status and not dest.exists() and part.stat().st_size >= 32 << 20
        presenter.startDownload(dest, url=url, expected_size=size)
        v = poll_until(presenter, lambda v: v.state == IDLE, timeout=300)[-1]
    assert v.status == f"FCIB weights ready: {dest}", v.error
    assert filecmp.cmp(dest, weights, shallow=False) and presenter.weightsPath() == str(dest) == v.weights_path
    assert presenter.download.process.gone()  # the download child ends with its job


def test_reference_geometry_and_auto_device_in_the_background_job(panel):
    """The worker runs the upstream-parity path too, and "auto" picks the CPU on a machine without CUDA."""
    import torch

    scene, ct_node, seg, ids, logic, presenter, weights = panel
    presenter.params.inputVolume = ct_node
    presenter.selectSegment(seg, ids["Tumor"])
    presenter.setParameter("geometry", "reference")
    presenter.setParameter("device", "auto")
    presenter.apply()
    v = presenter.wait(300)
    assert v.status == "Scored 1 segment.", v.error
    [scored] = presenter.scored
    direct = DFM50NLogic(scene).scoreSegment(
        ct_node,
        seg,
        ids["Tumor"],
        weights=weights,
        geometry="reference",
        checkDependencies=False,
        addToTable=False,
        reportNode=False,
    )
    assert scored.result.geometry == "reference" and abs(scored.result.score - direct.score) < 1e-7
    assert scored.result.device == ("cuda" if torch.cuda.is_available() else "cpu")
    assert not v.show_cube_enabled and v.open_report_enabled  # a reference cube is not a 50 mm box
    with pytest.raises(DFM50NError, match="physical geometry"):
        presenter.showCube()


def test_download_without_torch_keeps_the_file_and_says_what_to_do(monkeypatch, tmp_path):
    """The download needs no torch; only the final structure check does (in the child), and its failure says
    how to finish."""
    from range_server import serving

    fake = tmp_path / "shadow" / "torch"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('No module named torch (test shadow)')\n")
    monkeypatch.setenv("PYTHONPATH", str(fake.parent))
    payload = tmp_path / "w.bin"
    payload.write_bytes(np.random.default_rng(0).integers(0, 255, 3 << 20, dtype=np.uint8).tobytes())
    with serving(payload) as url:
        job = jobs.DownloadJob(tmp_path / "w.torch", url=url, expected_size=3 << 20).start()
        status = job.wait(60)
    assert status.state == jobs.FAILED and status.fraction == 1.0
    assert "kept" in status.error and "PyTorch" in status.error and "Download again" in status.error
    assert (tmp_path / "w.torch.part").stat().st_size == 3 << 20 and job.process.gone()
