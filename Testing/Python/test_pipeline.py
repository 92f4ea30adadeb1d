"""End to end: files or volumes -> score_case -> Result and files, checked against the stages run by hand."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from DFM50NLib import io
from DFM50NLib.constants import DFM50N_FEATURE_INDICES, DISCLAIMER
from DFM50NLib.errors import InputError
from DFM50NLib.geometry.center import find_center
from DFM50NLib.geometry.cube import extract_cube
from DFM50NLib.geometry.mask import prepare_mask
from DFM50NLib.geometry.synthetic import sphere_case
from DFM50NLib.model.classifier import load_classifier
from DFM50NLib.model.fcib import get_encoder
from DFM50NLib.scoring import pipeline
from DFM50NLib.scoring.result import read_json

RADIUS = 8.0
CENTER = np.array([10.0, -20.0, 35.0])


@pytest.fixture(scope="module")
def case():
    """A sphere on an anisotropic, oblique grid (as scanners write them)."""
    theta = np.deg2rad(20)
    rot = np.array([[np.cos(theta), -np.sin(theta), 0], [np.sin(theta), np.cos(theta), 0], [0, 0, 1]])
    return sphere_case(
        center_ras=CENTER, radius_mm=RADIUS, shape=(96, 96, 40), spacing=(0.7, 0.7, 2.5), direction_ras=rot, seed=1
    )


@pytest.fixture(scope="module")
def encoder(random_weights):
    return get_encoder(random_weights)


def test_score_equals_the_stages_run_by_hand(case, encoder, random_weights):
    ct, mask = case
    result = pipeline.score_volumes(ct, mask, weights=random_weights, case_id="sphere")

    pm = prepare_mask(mask, ct)
    center = find_center(pm, "dt_peak")
    cube = extract_cube(ct, pm, center, "LPS")
    feats = encoder.features(cube.ct)[0]
    clf = load_classifier()
    expected = float(clf.predict_proba(feats[list(DFM50N_FEATURE_INDICES)][None])[0])

    assert result.score == pytest.approx(expected, abs=1e-12)
    assert result.high_risk == (expected >= 0.25)
    assert result.risk_label == ("high OLM risk" if expected >= 0.25 else "low OLM risk")
    assert result.classifier_is_demo and "DEMO" in result.warnings[0]
    assert result.center_ras == pytest.approx(list(center))
    assert result.center_lps == pytest.approx([-center[0], -center[1], center[2]])
    # within half a voxel of the analytic centre, on every voxel axis
    d_ijk = ct.world_to_ijk(result.center_ras) - ct.world_to_ijk(CENTER)
    assert np.all(np.abs(d_ijk) <= 0.5 + 1e-9), d_ijk
    analytic = 4 / 3 * math.pi * RADIUS**3
    assert result.mask_volume_mm3 == pytest.approx(analytic, rel=0.05)
    assert result.coverage == pytest.approx(1.0, abs=1e-3) and not result.touches_border
    assert result.cube_mask_voxels == pytest.approx(analytic, rel=0.03)
    assert list(result.features) == [f"pred_{i}" for i in DFM50N_FEATURE_INDICES]
    assert result.features["pred_1105"] == pytest.approx(float(feats[1105]))
    assert result.orientation == "LPS" and result.geometry == "physical" and result.center_method == "dt_peak"
    assert len(result.fcib_weights_sha256) == 64 and len(result.classifier_sha256) == 64
    assert {"mask", "center", "cube", "forward", "classify", "total"} <= set(result.timings)


def test_orientation_changes_the_cube_axes_and_is_recorded(case, random_weights):
    ct, mask = case
    lps = pipeline.prepare_case(ct, mask, orientation="LPS")
    spl = pipeline.prepare_case(ct, mask, orientation="spl")
    assert spl.options["orientation"] == "SPL"
    np.testing.assert_array_equal(spl.cube.ct, lps.cube.ct.transpose(2, 1, 0))


def test_files_in_two_orientations_give_the_same_score(case, tmp_path, random_weights):
    """The same lesion written as-is and with its voxel axes flipped and permuted: same world, same score."""
    ct, mask = case
    from DFM50NLib.geometry.volume import Volume

    perm = (2, 0, 1)
    m = ct.ijk_to_ras.copy()
    flip = np.eye(4)
    flip[0, 0], flip[0, 3] = -1, ct.shape[0] - 1  # i' = n-1-i
    m2 = m @ flip
    m2 = m2[:, list(perm) + [3]]
    ct2 = Volume(np.flip(ct.array, 0).transpose(perm), m2)
    mask2 = Volume(np.flip(mask.array, 0).transpose(perm), m2)
    paths = {}
    for name, vol in {"a_ct": ct, "a_mask": mask, "b_ct": ct2, "b_mask": mask2}.items():
        paths[name] = io.write_volume(vol, tmp_path / f"{name}.nii.gz")
    ra = pipeline.score_case(paths["a_ct"], paths["a_mask"], weights=random_weights)
    rb = pipeline.score_case(paths["b_ct"], paths["b_mask"], weights=random_weights)
    assert rb.center_ras == pytest.approx(ra.center_ras, abs=1e-4)  # NIfTI stores the affine in float32
    assert rb.score == pytest.approx(ra.score, abs=1e-6)
    pa = pipeline.prepare_case(paths["a_ct"], paths["a_mask"])
    pb = pipeline.prepare_case(paths["b_ct"], paths["b_mask"])
    assert np.max(np.abs(pa.cube.ct - pb.cube.ct)) < 1.0


def test_outputs_are_written_and_read_back(case, tmp_path, random_weights):
    ct, mask = case
    out = tmp_path / "out"
    result = pipeline.score_case(
        ct,
        mask,
        case_id="c/1",
        weights=random_weights,
        out_dir=out,
        write_cubes=True,
        keep_features=4096,
        clinical={"smoking": True, "spiculated": False, "short_axis_cm": 1.5},
    )
    back = read_json(out / "c_1.dfm50n.json")
    assert back.score == result.score and back.case_id == "c/1"
    assert len(back.all_features) == 4096
    assert back.disclaimer == DISCLAIMER
    logit = -1.34614 - 0.60818 * 1 - 0.33883 * 1.5 - 0.19792 * 0 + 6.22427 * result.score
    assert back.combined_probability == pytest.approx(1 / (1 + math.exp(-logit)), abs=1e-12)
    csv_text = (out / "c_1.dfm50n.csv").read_text()
    assert "score" in csv_text.splitlines()[0] and str(result.score) in csv_text
    cube_ct = io.read_volume(out / "c_1_ct_50cube.nii.gz")
    cube_mask = io.read_volume(out / "c_1_mask_50cube.nii.gz")
    # the audit cube overlays the CT: its sample 25,25,25 sits on the centre in world space
    assert cube_ct.ijk_to_world([25, 25, 25]) == pytest.approx(result.center_ras, abs=1e-3)
    assert int(cube_mask.array.sum()) == result.cube_mask_voxels
    assert not list(out.glob("*.part*")), "no temporary files may be left behind"


def test_missing_clinical_input_is_not_guessed(case, random_weights):
    ct, mask = case
    r = pipeline.score_volumes(ct, mask, weights=random_weights, clinical={"smoking": True})
    assert r.combined_probability is None and r.combined_positive is None


def test_bad_input_writes_nothing(case, tmp_path, random_weights):
    ct, mask = case
    empty = mask.with_array(np.zeros_like(mask.array))
    out = tmp_path / "out"
    with pytest.raises(InputError, match="(?i)empty"):
        pipeline.score_case(ct, empty, weights=random_weights, out_dir=out)
    assert not out.exists() or not any(out.iterdir())


def test_unknown_options_fail_before_any_work(case):
    ct, mask = case
    with pytest.raises(InputError, match="centre method"):
        pipeline.prepare_case(ct, mask, center="middle")
    with pytest.raises(InputError, match="geometry"):
        pipeline.prepare_case(ct, mask, geometry="approx")
    with pytest.raises(InputError):
        pipeline.prepare_case(ct, mask, orientation="LLS")
    with pytest.raises(InputError, match="point"):
        pipeline.prepare_case(ct, mask, center="point")


def test_given_point_is_the_centre(case):
    ct, mask = case
    p = pipeline.prepare_case(ct, mask, center="point", point_ras=(11.0, -19.0, 34.0))
    assert p.center_ras == pytest.approx([11.0, -19.0, 34.0])
    assert p.cube.ct_volume().ijk_to_world([25, 25, 25]) == pytest.approx([11.0, -19.0, 34.0])


def test_result_json_has_no_nan(case, random_weights):
    ct, mask = case
    r = pipeline.score_volumes(ct, mask, weights=random_weights)
    r.long_axis_mm = float("nan")
    json.loads(r.to_json())  # strict JSON: NaN would be rejected by other readers
    assert json.loads(r.to_json())["long_axis_mm"] is None


def test_report_and_stability_end_to_end(case, tmp_path, random_weights, encoder):
    ct, mask = case
    out = tmp_path / "rep"
    r = pipeline.score_case(ct, mask, case_id="rep1", weights=random_weights, out_dir=out, report=True, stability=True)
    html = (out / "rep1_report.html").read_text()
    assert f"{r.score:.3f}" in html and "data:image/png;base64," in html
    assert (out / "rep1_report.pdf").read_bytes().startswith(b"%PDF")
    # stability: the +2 mm R shift scored independently
    from DFM50NLib.geometry.cube import extract_cube

    pm = prepare_mask(mask, ct)
    shifted = np.array(r.center_ras) + [2.0, 0, 0]
    feats = encoder.features(extract_cube(ct, pm, shifted, "LPS").ct)[0]
    p_shift = float(load_classifier().predict_proba(feats[list(DFM50N_FEATURE_INDICES)][None])[0])
    assert r.stability["n"] == 8
    assert r.stability["min"] <= p_shift <= r.stability["max"]
