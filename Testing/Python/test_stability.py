"""Stability panel: perturbed centres and masks, one batched forward, flips counted against the base."""

from __future__ import annotations

import math

import numpy as np
import pytest

from DFM50NLib.constants import DFM50N_FEATURE_INDICES
from DFM50NLib.errors import InputError
from DFM50NLib.geometry.volume import Volume
from DFM50NLib.scoring.stability import perturb_mask, stability

SLOPE = np.array([10.0, 2.0, 0.5])  # HU per mm along R, A, S


class MeanEncoder:
    """Feature 1105 = mean HU of the cube; records the batch sizes it was called with."""

    weights_sha256 = "fake"

    def __init__(self):
        self.calls = []

    def features(self, cubes):
        cubes = np.asarray(cubes, np.float32).reshape(-1, 50, 50, 50)
        self.calls.append(len(cubes))
        out = np.zeros((len(cubes), 4096), np.float32)
        out[:, DFM50N_FEATURE_INDICES[0]] = cubes.reshape(len(cubes), -1).mean(axis=1, dtype=np.float64)
        return out


class LinearClassifier:
    feature_indices = DFM50N_FEATURE_INDICES
    threshold = 0.25

    def __init__(self, base_mean, base_score=0.26, per_hu=0.001):
        self.base_mean, self.base_score, self.per_hu = base_mean, base_score, per_hu

    def predict_proba(self, x9):
        return self.base_score + (np.asarray(x9)[:, 0].astype(float) - self.base_mean) * self.per_hu


def linear_ct_and_sphere(center=(5.0, -3.0, 12.0), radius=8.0, spacing=(0.7, 0.7, 2.5), fov=110.0):
    sp = np.asarray(spacing)
    n = np.ceil(fov / sp).astype(int)
    c = np.asarray(center)
    vol = Volume.from_geometry(np.zeros(n, np.float32), sp, c - sp * (n - 1) / 2)
    ras = vol.ijk_to_world(np.indices(n).reshape(3, -1).T).reshape(*n, 3)
    ct = vol.with_array((ras @ SLOPE - 300.0).astype(np.float32))
    mask = vol.with_array((np.linalg.norm(ras - c, axis=-1) <= radius).astype(np.uint8))
    return ct, mask, c


@pytest.fixture(scope="module")
def setup():
    from DFM50NLib.geometry.center import find_center
    from DFM50NLib.geometry.cube import extract_cube
    from DFM50NLib.geometry.mask import prepare_mask

    ct, mask, c = linear_ct_and_sphere()
    pm = prepare_mask(mask, ct)
    center = find_center(pm, "centroid")
    enc = MeanEncoder()
    base_mean = float(enc.features(extract_cube(ct, pm, center, "LPS").ct)[0, DFM50N_FEATURE_INDICES[0]])
    return ct, pm, center, base_mean


def test_perturbations_scores_and_flips(setup):
    ct, pm, center, base_mean = setup
    enc = MeanEncoder()
    clf = LinearClassifier(base_mean)
    res = stability(ct, pm, center, {"center": "centroid", "orientation": "LPS"}, enc, clf)
    assert enc.calls == [9]  # base + 6 centre shifts + erosion + dilation, one batch
    assert res.base_score == pytest.approx(0.26, abs=1e-6)
    by = {p.label: p for p in res.perturbations}
    assert len(by) == 8
    # a linear CT: moving the cube by 2 mm along an axis changes its mean HU by 2 * slope, exactly
    for name, axis, sign in (("R", 0, 1), ("L", 0, -1), ("A", 1, 1), ("P", 1, -1), ("S", 2, 1), ("I", 2, -1)):
        p = by[f"centre 2 mm {name}"]  # moved 2 mm toward patient `name`
        assert p.score == pytest.approx(0.26 + sign * 2 * SLOPE[axis] * 0.001, abs=1e-4)
        expected_center = np.array(center, float)
        expected_center[axis] += sign * 2
        np.testing.assert_allclose(p.center_ras, expected_center, atol=1e-9)
    # the sphere's centroid barely moves when it is eroded/dilated by 1 mm
    for label in ("mask eroded 1 mm", "mask dilated 1 mm"):
        assert np.linalg.norm(np.subtract(by[label].center_ras, center)) < 0.5
        assert by[label].score == pytest.approx(0.26, abs=0.006)
    # only the move toward patient Left (-R: 0.24) crosses 0.25
    assert [p.label for p in res.perturbations if p.crosses] == ["centre 2 mm L"]
    assert res.n_flipped == 1 and "1 of 8" in res.warning
    assert res.min == pytest.approx(0.24, abs=1e-4) and res.max == pytest.approx(0.28, abs=1e-4)
    assert res.median == pytest.approx(float(np.median(res.scores)))
    assert res.to_dict()["n_flipped"] == 1


def test_no_flip_no_warning(setup):
    ct, pm, center, base_mean = setup
    res = stability(
        ct,
        pm,
        center,
        {"center": "dt_peak", "orientation": "SPL"},
        MeanEncoder(),
        LinearClassifier(base_mean, base_score=0.6),
    )
    assert res.n_flipped == 0 and res.warning is None


def test_point_centre_skips_mask_perturbations(setup):
    ct, pm, center, base_mean = setup
    enc = MeanEncoder()
    res = stability(
        ct,
        pm,
        center,
        {"center": "point", "orientation": "LPS", "point_ras": list(center)},
        enc,
        LinearClassifier(base_mean),
    )
    assert enc.calls == [7] and len(res.perturbations) == 6 and res.notes


def sphere_pm(radius, spacing, box=40.0):
    from DFM50NLib.geometry.mask import prepare_mask

    ct, mask, _ = linear_ct_and_sphere(radius=radius, spacing=spacing, fov=box)
    return prepare_mask(mask, ct)


def test_erosion_dilation_match_smaller_and_larger_spheres():
    pm = sphere_pm(8.0, (0.5, 0.5, 0.5))
    er, di = perturb_mask(pm, "erode", 1.0), perturb_mask(pm, "dilate", 1.0)
    assert er.volume_mm3 == pytest.approx(sphere_pm(7.0, (0.5, 0.5, 0.5)).volume_mm3, rel=0.04)
    assert di.volume_mm3 == pytest.approx(sphere_pm(9.0, (0.5, 0.5, 0.5)).volume_mm3, rel=0.04)
    assert er.voxels == int(er.volume.array.sum()) and di.voxels == int(di.volume.array.sum())

    def centroid(m):
        return m.volume.ijk_to_world(np.argwhere(m.volume.array).mean(axis=0))

    np.testing.assert_allclose(centroid(di), centroid(pm), atol=1e-6)  # same world position after padding
    np.testing.assert_allclose(centroid(er), centroid(pm), atol=1e-6)


def test_physical_margin_on_anisotropic_grid_is_not_one_voxel(setup):
    _, pm, _, _ = setup  # sphere r = 8 mm on 0.7 x 0.7 x 2.5 mm, slices at centre + k * 2.5 mm
    er = perturb_mask(pm, "erode", 1.0)
    slices = lambda m: int(np.any(m.volume.array, axis=(0, 1)).sum())
    # slices at centre +-1.25, 3.75, 6.25 mm: the outermost (boundary halfway to 8.75) is 1.25 mm deep: kept
    assert slices(er) == slices(pm) == 6
    # in a central slice (1.25 mm off the centre) the disk loses 1 mm of radius (0.7 mm pixels), not 2.5 mm
    mid = lambda m: int(m.volume.array[:, :, m.volume.array.shape[2] // 2].sum()) * 0.49
    assert mid(er) == pytest.approx(math.pi * (7**2 - 1.25**2), rel=0.06)
    assert mid(pm) == pytest.approx(math.pi * (8**2 - 1.25**2), rel=0.06)


def test_mask_eroded_away_is_skipped(setup):
    _, pm, _, _ = setup
    tiny = type(pm)(pm.volume.with_array(np.pad(np.ones((1, 1, 1), np.uint8), 1)), (0, 0, 0), 1, 1.0, 0)
    assert perturb_mask(tiny, "erode", 1.0) is None


def test_needs_ct_and_mask():
    with pytest.raises(InputError, match="reference"):
        stability(None, None, [0, 0, 0], {}, MeanEncoder(), LinearClassifier(0.0))
