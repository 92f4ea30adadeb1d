"""DFM50NLogic under slicer-core (real MRML nodes): grids, transforms, untouched inputs, end-to-end score.

The reference for every mask is computed here, independently of Slicer and of the pipeline: the CT voxel
centre -> segment-grid index -> nearest voxel -> is that voxel's centre inside the analytic sphere?
"""

from __future__ import annotations

import numpy as np
import pytest
from slicer_harness import add_segmentation, add_volume, fresh_scene, linear_transform, node_count, rotation, slicer

from DFM50NLib.errors import InputError
from DFM50NLib.geometry.synthetic import make_grid, sphere_case
from DFM50NLib.geometry.volume import Volume
from DFM50NLib.scene import mrml
from DFM50NLib.scene.logic import DFM50NLogic, ScoringCancelled

CENTER = np.array([12.0, -18.0, 40.0])
RADIUS = 8.0


def affine(rot=np.eye(3), shift=(0, 0, 0)):
    m = np.eye(4)
    m[:3, :3] = rot
    m[:3, 3] = shift
    return m


@pytest.fixture(scope="module")
def ct():
    """CT on an oblique anisotropic grid, sphere lesion at CENTER."""
    ct, _ = sphere_case(
        CENTER, RADIUS, shape=(72, 72, 30), spacing=(0.75, 0.75, 2.0), direction_ras=rotation(2, 15.0), seed=3
    )
    return ct


def coarse_sphere(center=CENTER):
    """The sphere voxelised on a coarser grid, rotated 30 degrees about an oblique axis."""
    rot = rotation(0, 30.0) @ rotation(2, 20.0)
    grid = make_grid((20, 20, 20), (1.6, 1.6, 1.6), direction_ras=rot, center_ras=center + 0.37)
    ijk = np.indices(grid.shape, dtype=float).reshape(3, -1).T
    inside = np.linalg.norm(grid.ijk_to_world(ijk) - center, axis=1) <= RADIUS
    return grid.with_array(inside.reshape(grid.shape).astype(np.uint8), name="Tumor")


def nn_on_ct(ct: Volume, mask: Volume, mask_to_ct_frame=np.eye(4)) -> np.ndarray:
    """Expected mask on the CT grid: nearest segment voxel of each CT voxel centre (halves round up)."""
    m = np.linalg.inv(mask_to_ct_frame @ mask.ijk_to_ras) @ ct.ijk_to_ras
    ijk = np.indices(ct.shape, dtype=float).reshape(3, -1)
    p = np.floor(m[:3, :3] @ ijk + m[:3, 3:4] + 0.5).astype(int)
    ok = np.all((p >= 0) & (p < np.array(mask.shape)[:, None]), axis=0)
    out = np.zeros(ijk.shape[1], np.uint8)
    out[ok] = mask.array[p[0, ok], p[1, ok], p[2, ok]]
    return largest_component(out.reshape(ct.shape))


def largest_component(a):
    """METHOD.md §2.1: keep the largest face-connected component (a corner-touching voxel is its own part)."""
    from scipy import ndimage

    labels, n = ndimage.label(a, structure=ndimage.generate_binary_structure(3, 1))
    if n <= 1:
        return a
    sizes = np.bincount(labels.ravel())[1:]
    return (labels == 1 + int(np.argmax(sizes))).astype(np.uint8)


def full(pm, shape) -> np.ndarray:
    out = np.zeros(shape, np.uint8)
    o = pm.offset_ijk
    s = pm.volume.shape
    out[o[0] : o[0] + s[0], o[1] : o[1] + s[1], o[2] : o[2] + s[2]] = pm.volume.array
    return out


@pytest.fixture()
def scene():
    return fresh_scene()


def test_coarse_rotated_segment_lands_on_ct_grid_as_analytic_nearest_neighbour(scene, ct):
    coarse = coarse_sphere()
    ct_node = add_volume(ct)
    seg, ids = add_segmentation({"Tumor": coarse})
    pm = DFM50NLogic().maskOnCTGrid(ct_node, seg, ids["Tumor"])
    expected = nn_on_ct(ct, coarse)
    assert expected.sum() > 500  # a real lesion, not a handful of voxels
    np.testing.assert_array_equal(full(pm, ct.shape), expected)
    # the mask Logic hands over is the segment itself, in the CT's frame (no resampling yet)
    mask = DFM50NLogic().segmentMask(ct_node, seg, ids["Tumor"])
    np.testing.assert_allclose(mask.ijk_to_ras @ np.r_[mask.world_to_ijk(CENTER), 1], np.r_[CENTER, 1], atol=1e-9)
    assert int(mask.array.sum()) == int(coarse.array.sum())


def test_same_parent_transform_is_the_untransformed_result(scene, ct):
    coarse = coarse_sphere()
    ct_node = add_volume(ct)
    seg, ids = add_segmentation({"Tumor": coarse})
    logic = DFM50NLogic()
    before = logic.maskOnCTGrid(ct_node, seg, ids["Tumor"])
    t = linear_transform(affine(rotation(1, 25.0), (30.0, -12.0, 7.5)))
    ct_node.SetAndObserveTransformNodeID(t.GetID())
    seg.SetAndObserveTransformNodeID(t.GetID())
    after = logic.maskOnCTGrid(ct_node, seg, ids["Tumor"])
    assert after.offset_ijk == before.offset_ijk
    np.testing.assert_array_equal(after.volume.array, before.volume.array)
    np.testing.assert_allclose(after.volume.ijk_to_ras, before.volume.ijk_to_ras)


@pytest.mark.parametrize("ct_transform", [None, affine(rotation(0, -10.0), (3.0, 4.0, -6.0))])
def test_different_transforms_follow_world_space(scene, ct, ct_transform):
    coarse = coarse_sphere(CENTER - [4.0, 2.0, -3.0])  # drawn off the lesion ...
    seg_t = affine(rotation(2, 12.0), (0, 0, 0))
    seg_t[:3, 3] = CENTER - seg_t[:3, :3] @ (CENTER - [4.0, 2.0, -3.0])  # ... and moved onto it by its transform
    ct_node = add_volume(ct)
    seg, ids = add_segmentation({"Tumor": coarse})
    seg.SetAndObserveTransformNodeID(linear_transform(seg_t, "segT").GetID())
    ct_to_world = np.eye(4)
    if ct_transform is not None:
        ct_node.SetAndObserveTransformNodeID(linear_transform(ct_transform, "ctT").GetID())
        ct_to_world = ct_transform
    pm = DFM50NLogic().maskOnCTGrid(ct_node, seg, ids["Tumor"])
    expected = nn_on_ct(ct, coarse, np.linalg.inv(ct_to_world) @ seg_t)
    np.testing.assert_array_equal(full(pm, ct.shape), expected)
    if ct_transform is None:  # the moved segment sits on the lesion: centre within a CT voxel of CENTER
        centre = pm.volume.ijk_to_world(np.argwhere(pm.volume.array).mean(axis=0))
        assert np.linalg.norm(centre - CENTER) < 1.0


def test_nonlinear_transform_is_a_clear_error_and_leaves_the_scene_as_it_was(scene, ct):
    ct_node = add_volume(ct)
    seg, ids = add_segmentation({"Tumor": coarse_sphere()})
    grid = scene.AddNewNodeByClass("vtkMRMLGridTransformNode", "warp")
    seg.SetAndObserveTransformNodeID(grid.GetID())
    n = node_count(scene)
    with pytest.raises(InputError, match="non-linear"):
        DFM50NLogic().scoreSegment(ct_node, seg, ids["Tumor"], checkDependencies=False)
    assert node_count(scene) == n


def test_inputs_are_not_modified(scene, ct):
    ct_node = add_volume(ct)
    seg, ids = add_segmentation({"Tumor": coarse_sphere()})
    import vtk

    src = vtk.vtkSphereSource()
    src.SetCenter(*CENTER)
    src.SetRadius(RADIUS)
    src.SetThetaResolution(32)
    src.SetPhiResolution(32)
    src.Update()
    surf = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "surface only")
    sid = surf.AddSegmentFromClosedSurfaceRepresentation(src.GetOutput(), "Tumor", [1, 0, 0])
    surf.GetSegmentation().RemoveRepresentation("Binary labelmap")
    mtimes = (ct_node.GetMTime(), seg.GetMTime(), seg.GetSegmentation().GetMTime(), surf.GetSegmentation().GetMTime())
    ct_before = slicer.util.arrayFromVolume(ct_node).copy()
    n = node_count(scene)
    logic = DFM50NLogic()
    logic.segmentMask(ct_node, seg, ids["Tumor"])
    pm = logic.maskOnCTGrid(ct_node, surf, sid)
    assert pm.volume_mm3 == pytest.approx(4 / 3 * np.pi * RADIUS**3, rel=0.08)
    assert not surf.GetSegmentation().ContainsRepresentation("Binary labelmap")
    assert (
        ct_node.GetMTime(),
        seg.GetMTime(),
        seg.GetSegmentation().GetMTime(),
        surf.GetSegmentation().GetMTime(),
    ) == mtimes
    np.testing.assert_array_equal(slicer.util.arrayFromVolume(ct_node), ct_before)
    assert node_count(scene) == n


def test_wrong_selections_say_what_to_do(scene, ct):
    ct_node = add_volume(ct)
    seg, ids = add_segmentation({"Tumor": coarse_sphere()})
    logic = DFM50NLogic()
    with pytest.raises(Exception, match="Select the CT"):
        logic.scoreSegment(None, seg, ids["Tumor"], checkDependencies=False)
    with pytest.raises(Exception, match="Select the lesion segment"):
        logic.scoreSegment(ct_node, seg, "nope", checkDependencies=False)
    with pytest.raises(TypeError, match="Unknown option"):
        logic.scoreSegment(ct_node, seg, ids["Tumor"], checkDependencies=False, centre="dt_peak")


# ---------------------------------------------------------------------------------- end to end


def test_coarse_rotated_segment_scores_as_the_same_sphere_given_on_the_ct_grid(scene, ct, random_weights):
    from DFM50NLib.scoring.pipeline import score_volumes

    coarse = coarse_sphere()
    ct_node = add_volume(ct)
    seg, ids = add_segmentation({"Tumor": coarse})
    seen = []
    logic = DFM50NLogic()
    result = logic.scoreSegment(
        ct_node,
        seg,
        ids["Tumor"],
        weights=random_weights,
        checkDependencies=False,
        progress=lambda f, msg: seen.append(f),
    )
    direct = score_volumes(ct, ct.with_array(nn_on_ct(ct, coarse), name="Tumor"), weights=random_weights)
    assert abs(result.score - direct.score) < 1e-6
    np.testing.assert_allclose(result.center_ras, direct.center_ras, atol=1e-9)
    assert result.mask_voxels == direct.mask_voxels
    assert seen == sorted(seen) and seen[-1] == 1.0
    # the table row and the report node carry that score
    table = logic.getTableNode(create=False)
    assert table.GetTable().GetNumberOfRows() == 1
    assert table.GetTable().GetColumnByName("score").GetValue(0) == pytest.approx(result.score, abs=1e-12)
    report = scene.GetFirstNodeByClass("vtkMRMLTextNode")
    assert f"{result.score:.3f}" in report.GetText() and "DEMO" in report.GetText()
    # Show cube: the ROI holds the centre, oriented with the cube; the cube volume is the 50^3 samples
    roi, cube_node = logic.showCube(result, ct_node, seg, ids["Tumor"])
    c2r = np.asarray(result.cube_to_ras)
    assert roi.IsPointInROIWorld(c2r[:3, 3].tolist())  # sample (0,0,0), a corner
    assert roi.IsPointInROIWorld((c2r @ [49, 49, 49, 1])[:3].tolist())
    assert not roi.IsPointInROIWorld((c2r @ [-1, 25, 25, 1])[:3].tolist())
    assert slicer.util.arrayFromVolume(cube_node).shape == (50, 50, 50)
    np.testing.assert_allclose(mrml.ijk_to_ras(cube_node), c2r, atol=1e-9)


def test_cancel_stops_before_the_network_and_writes_nothing(scene, ct, random_weights):
    ct_node = add_volume(ct)
    seg, ids = add_segmentation({"Tumor": coarse_sphere()})
    logic = DFM50NLogic()
    n = node_count(scene)

    def progress(fraction, message):
        if fraction >= 0.15:
            logic.requestCancel()

    with pytest.raises(ScoringCancelled):
        logic.scoreSegment(
            ct_node, seg, ids["Tumor"], weights=random_weights, checkDependencies=False, progress=progress
        )
    assert node_count(scene) == n


def test_all_segments_one_row_each_and_failures_reported_together(scene, ct, random_weights):
    ct_node = add_volume(ct)
    empty = coarse_sphere().with_array(np.zeros((20, 20, 20), np.uint8), name="Empty")
    seg, ids = add_segmentation({"Tumor": coarse_sphere(), "Second": coarse_sphere(CENTER + [3, 0, 0]), "Empty": empty})
    logic = DFM50NLogic()
    with pytest.raises(Exception, match="1 of 3 segments") as err:
        logic.scoreAllSegments(ct_node, seg, weights=random_weights, checkDependencies=False)
    assert "Empty" in str(err.value)
    table = logic.getTableNode(create=False)
    names = [table.GetTable().GetColumnByName("segment").GetValue(r) for r in range(table.GetTable().GetNumberOfRows())]
    assert sorted(names) == ["Second", "Tumor"]


# ---------------------------------------------------------------------------------- README console example


def readme_console_example(WEIGHTS, OUT_CSV):
    """Verbatim body of the README's "Slicer Python console" batch example (after loading the data)."""
    import slicer

    from DFM50NLib.scene.logic import DFM50NLogic
    from DFM50NLib.scoring.result import write_csv

    logic = DFM50NLogic()
    ct = slicer.util.getNodesByClass("vtkMRMLScalarVolumeNode")[0]
    results = []
    for seg in slicer.util.getNodesByClass("vtkMRMLSegmentationNode"):
        for segment_id, r in logic.scoreAllSegments(ct, seg, weights=WEIGHTS, center="dt_peak").items():
            name = seg.GetSegmentation().GetSegment(segment_id).GetName()
            print(f"{seg.GetName()} / {name}: {r.score:.3f} {r.risk_label}{' (DEMO)' if r.classifier_is_demo else ''}")
            results.append(r)
    write_csv(results, OUT_CSV)  # every field of every score, one row each
    return logic.getTableNode(), results


def test_readme_console_example_runs(scene, ct, random_weights, tmp_path, capsys):
    add_volume(ct)
    add_segmentation({"Tumor": coarse_sphere()}, name="Lesions A")
    add_segmentation({"Tumor": coarse_sphere(CENTER + [2, 1, 0])}, name="Lesions B")
    table, results = readme_console_example(random_weights, tmp_path / "scores.csv")
    assert table.GetTable().GetNumberOfRows() == 2 and len(results) == 2
    assert "Lesions A / Tumor: " in capsys.readouterr().out
    lines = (tmp_path / "scores.csv").read_text().splitlines()
    assert len(lines) == 3 and lines[0].startswith("case_id,score")


# ---------------------------------------------------------------------------------- dependencies


def test_dependencies_are_installed_only_after_consent():
    import types

    from DFM50NLib.scene import dependencies as dep

    calls, asked = [], []
    fake = types.SimpleNamespace(util=types.SimpleNamespace(pip_install=calls.append))
    need = (
        dep.Requirement("dfm50n_no_such_module_xyz", "dfm50n-no-such-module-xyz>=1"),
        dep.Requirement("numpy", "numpy>=1.24"),
    )
    assert [r.module for r in dep.missing(need)] == ["dfm50n_no_such_module_xyz"]
    assert dep.missing() == []  # this environment has everything: nothing is asked, nothing installed
    assert dep.ensure(confirm=lambda m: pytest.fail("asked although nothing is missing")) == []
    with pytest.raises(dep.DependencyError, match="dfm50n-no-such-module-xyz>=1"):
        dep.ensure(None, need, slicer_module=fake)
    with pytest.raises(dep.DependencyError):
        dep.ensure(lambda m: asked.append(m) or False, need, slicer_module=fake)
    assert calls == [] and "dfm50n-no-such-module-xyz>=1" in asked[0]
    with pytest.raises(dep.DependencyError, match="still missing"):  # agreed: pip runs, module still absent
        dep.ensure(lambda m: True, need, slicer_module=fake)
    assert calls == ["dfm50n-no-such-module-xyz>=1"]
    ensured = []
    newer = types.SimpleNamespace(  # Slicer >= 5.12: slicer.packaging.pip_ensure, no second dialog
        packaging=types.SimpleNamespace(
            pip_ensure=lambda reqs, prompt_install, requester: ensured.append(
                ([str(r) for r in reqs], prompt_install, requester)
            )
        )
    )
    with pytest.raises(dep.DependencyError, match="still missing"):
        dep.ensure(lambda m: True, need, slicer_module=newer)
    assert ensured == [(["dfm50n-no-such-module-xyz>=1"], False, "DFM50N")]


def test_a_failing_pip_is_a_clear_message_not_a_traceback():
    """Both installers run pip in a process and raise CalledProcessError when it fails; here pip really
    fails (a package that does not exist, no index), for Slicer >= 5.12 and for 5.8/5.10."""
    import subprocess
    import sys
    import types

    from DFM50NLib.scene import dependencies as dep

    def real_pip(*specs):
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "--no-index", "--quiet", *specs], check=True, capture_output=True
        )

    need = (dep.Requirement("dfm50n_no_such_module_xyz", "dfm50n-no-such-module-xyz>=1"),)
    newer = types.SimpleNamespace(
        packaging=types.SimpleNamespace(pip_ensure=lambda reqs, **kw: real_pip(*(str(r) for r in reqs)))
    )
    older = types.SimpleNamespace(util=types.SimpleNamespace(pip_install=lambda text: real_pip(*text.split())))
    for fake in (newer, older):
        with pytest.raises(dep.DependencyError) as err:
            dep.ensure(lambda m: True, need, slicer_module=fake)
        text = str(err.value)
        assert "dfm50n-no-such-module-xyz>=1 failed: pip exited with code 1" in text
        assert "internet" in text and "slicer.util.pip_install('dfm50n-no-such-module-xyz>=1')" in text
        assert isinstance(err.value.__cause__, subprocess.CalledProcessError)


def test_slicer_packaging_is_imported_explicitly_not_looked_up_as_an_attribute(monkeypatch):
    """On 5.12 `slicer.packaging` is a submodule nobody imported yet: getattr(slicer, "packaging") is None."""
    import sys
    import types

    from DFM50NLib.scene import dependencies as dep

    assert getattr(slicer, "packaging", None) is None  # slicer-core has no packaging module
    assert dep.packaging_module(slicer) is None  # -> 5.8/5.10 path (slicer.util.pip_install)
    fake = types.ModuleType("slicer.packaging")
    fake.pip_ensure = lambda *a, **k: None
    monkeypatch.setitem(sys.modules, "slicer.packaging", fake)
    assert getattr(slicer, "packaging", None) is None and dep.packaging_module(slicer) is fake


def test_requirement_files_list_exactly_what_in_slicer_use_needs():
    from DFM50NLib.scene import dependencies as dep

    for name, reqs in dep.REQUIREMENT_FILES.items():
        lines = (dep.RESOURCES / name).read_text().splitlines()
        assert [x for x in lines if x and not x.startswith("#")] == [r.spec for r in reqs], name
    scoring = {r.module for r in dep.for_scoring("physical")}
    assert scoring == {"torch", "scipy", "platformdirs"}  # nibabel only for reference geometry
    assert {r.module for r in dep.for_scoring("reference")} == scoring | {"nibabel"}
    assert [r.module for r in dep.REPORT_REQUIREMENTS] == ["matplotlib"]


def test_torch_comes_from_the_pytorch_extension_never_from_plain_pip(monkeypatch):
    import types

    from DFM50NLib.scene import dependencies as dep

    calls = []
    fake = types.SimpleNamespace(util=types.SimpleNamespace(pip_install=calls.append))
    monkeypatch.setattr(dep, "is_installed", lambda m: m != "torch")
    monkeypatch.setitem(__import__("sys").modules, "PyTorchUtils", None)  # extension not installed
    with pytest.raises(dep.DependencyError, match="PyTorch' extension"):
        dep.ensure(lambda m: True, slicer_module=fake)
    assert calls == []


def test_reference_geometry_scores_as_the_upstream_files_exported_from_slicer(scene, ct, random_weights, tmp_path):
    """Reference mode = the upstream scripts run on the CT and the segment exported to NIfTI on the CT grid."""
    from DFM50NLib import io
    from DFM50NLib.scoring.pipeline import score_case

    coarse = coarse_sphere()
    ct_node = add_volume(ct)
    seg, ids = add_segmentation({"Tumor": coarse})
    result = DFM50NLogic().scoreSegment(
        ct_node, seg, ids["Tumor"], weights=random_weights, geometry="reference", checkDependencies=False
    )
    ct_path = io.write_volume(ct, tmp_path / "ct.nii.gz")
    mask_path = io.write_volume(ct.with_array(nn_on_ct(ct, coarse)), tmp_path / "mask.nii.gz")
    files = score_case(ct_path, mask_path, geometry="reference", weights=random_weights)
    assert result.geometry == "reference" and abs(result.score - files.score) < 1e-6
    np.testing.assert_allclose(result.center_ras, files.center_ras, atol=1e-9)


# ---------------------------------------------------------------------------------- the module's self-test


def test_module_self_test_body_passes_under_slicer_core(scene, random_weights, monkeypatch):
    """DFM50NTest.test_score_synthetic_sphere (DFM50N.py) run here without Qt: its method is compiled from
    the file alone (the module's Qt classes are never imported), `self` is a plain unittest.TestCase."""
    import ast
    import logging
    import os
    import unittest
    from pathlib import Path

    from DFM50NLib.model import fcib

    src = (Path(__file__).resolve().parents[2] / "DFM50N.py").read_text()
    cls = next(n for n in ast.parse(src).body if isinstance(n, ast.ClassDef) and n.name == "DFM50NTest")
    wanted = ("test_score_synthetic_sphere", "scoreLikeThePanel")
    fns = [n for n in cls.body if isinstance(n, ast.FunctionDef) and n.name in wanted]
    namespace = {"slicer": slicer, "os": os, "logging": logging, "DFM50NLogic": DFM50NLogic}
    exec(compile(ast.Module(body=fns, type_ignores=[]), "DFM50N.py", "exec"), namespace)
    # the 738 MB random checkpoint is already cached for the test session: link it instead of writing it again
    monkeypatch.setattr(fcib, "save_random_checkpoint", lambda path, seed=0: os.symlink(random_weights, path))

    class Case(unittest.TestCase):
        def runTest(self):
            pass

        def delayDisplay(self, message):
            logging.info(message)

        scoreLikeThePanel = namespace["scoreLikeThePanel"]

    namespace["test_score_synthetic_sphere"](Case())
    assert scene.GetNumberOfNodesByClass("vtkMRMLTableNode") == 1
