"""RECIST-style diameters on synthetic ellipsoids whose axes are known analytically."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest

from DFM50NLib.errors import InputError
from DFM50NLib.geometry.diameters import axial_diameters
from DFM50NLib.geometry.volume import Volume


def rot(axis, deg):
    """Rotation matrix about RAS axis 0 (R), 1 (A) or 2 (S)."""
    c, s = math.cos(math.radians(deg)), math.sin(math.radians(deg))
    i, j = [a for a in range(3) if a != axis]
    m = np.eye(3)
    m[i, i], m[i, j], m[j, i], m[j, j] = c, -s, s, c
    return m


def ellipsoid_volume(semi, spacing, direction=np.eye(3), center=(3.2, -7.9, 11.0), spin_deg=0.0, fov=70.0):
    """Mask Volume: ellipsoid with semi-axes `semi` (mm) along R/A/S rotated `spin_deg` about S."""
    spacing = np.asarray(spacing, float)
    n = np.ceil(fov / spacing).astype(int)
    center = np.asarray(center, float)
    origin = center - direction @ (spacing * (n - 1) / 2)  # grid centred on the lesion
    origin = origin + direction @ (spacing * 0.31)  # not exactly on a voxel centre in-plane
    vol = Volume.from_geometry(np.zeros(n, np.uint8), spacing, origin, direction)
    ijk = np.stack(np.meshgrid(*[np.arange(k) for k in n], indexing="ij"), -1).reshape(-1, 3)
    ras = vol.ijk_to_world(ijk)
    local = (ras - center) @ rot(2, spin_deg)  # = R^T (ras - c) for each row
    inside = ((local / np.asarray(semi, float)) ** 2).sum(1) <= 1.0
    return vol.with_array(inside.reshape(n).astype(np.uint8)), center


def check_lines(d, center, spin_deg=None):
    (p, q), (s1, s2) = np.array(d.long_endpoints_ras), np.array(d.short_endpoints_ras)
    assert np.linalg.norm(q - p) == pytest.approx(d.long_mm, abs=1e-6)
    assert np.linalg.norm(s2 - s1) == pytest.approx(d.short_mm, abs=1e-6)
    u, v = (q - p) / d.long_mm, (s2 - s1) / d.short_mm
    assert abs(u @ v) < 1e-6  # perpendicular
    assert p[2] == q[2] == s1[2] == s2[2] == d.slice_s_mm  # all on the axial slice
    if spin_deg is not None:  # the long line follows the long axis (mod 180 deg), give or take a voxel
        angle = math.degrees(math.atan2(u[1], u[0])) % 180
        assert min(abs(angle - spin_deg % 180), 180 - abs(angle - spin_deg % 180)) < 10  # staircase ends
    # both lines cross near the lesion centre for a centred ellipsoid
    assert np.linalg.norm((p + q)[:2] / 2 - center[:2]) < 1.5


def test_axis_aligned_1mm():
    mask, c = ellipsoid_volume((12, 7, 9), (1, 1, 1))
    d = axial_diameters(mask)
    assert d.long_mm == pytest.approx(24, abs=1.0)
    assert d.short_mm == pytest.approx(14, abs=1.0)
    assert not d.resampled
    assert abs(d.slice_s_mm - c[2]) <= 0.5 + 1e-9
    check_lines(d, c, spin_deg=0)
    assert d.volume_mm3 == pytest.approx(4 / 3 * math.pi * 12 * 7 * 9, rel=0.03)


def test_anisotropic_grid_rotated_30_about_S():
    mask, c = ellipsoid_volume((15, 9, 11), (0.7, 0.7, 2.5), spin_deg=30)
    d = axial_diameters(mask)
    # the chosen slice is within half a slice (1.25 mm) of the centre: chord shrink <= 1 - sqrt(1-(1.25/11)^2)
    assert d.long_mm == pytest.approx(30, abs=1.0)
    assert d.short_mm == pytest.approx(18, abs=1.0)
    assert not d.resampled
    assert d.short_cm == pytest.approx(d.short_mm / 10)
    check_lines(d, c, spin_deg=30)
    assert d.volume_mm3 == pytest.approx(4 / 3 * math.pi * 15 * 9 * 11, rel=0.03)


def test_grid_rotated_in_plane_needs_no_resampling():
    mask, c = ellipsoid_volume((14, 8, 10), (0.8, 0.8, 2.0), direction=rot(2, 40), spin_deg=-30)
    d = axial_diameters(mask)
    assert not d.resampled
    assert d.long_mm == pytest.approx(28, abs=1.0)
    assert d.short_mm == pytest.approx(16, abs=1.0)
    check_lines(d, c, spin_deg=-30)


def test_oblique_grid_is_resampled_onto_axial_planes():
    direction = rot(0, 25) @ rot(2, 15)  # slices tilted 25 deg away from axial
    mask, c = ellipsoid_volume((13, 8, 10), (0.8, 0.8, 1.5), direction=direction, spin_deg=30)
    d = axial_diameters(mask)
    assert d.resampled
    assert d.long_mm == pytest.approx(26, abs=1.0)
    assert d.short_mm == pytest.approx(16, abs=1.0)
    check_lines(d, c, spin_deg=30)


def test_voxelised_disk_measures_its_diameter_not_one_pixel_less():
    spacing = 0.7
    mask, c = ellipsoid_volume((5, 5, 40), (spacing, spacing, 1.0), fov=30)  # a 10 mm cylinder-like rod
    d = axial_diameters(mask)
    assert d.long_mm == pytest.approx(10, abs=0.5)
    assert d.short_mm == pytest.approx(10, abs=0.5)


def test_prepared_mask_like_input_uses_its_volume():
    mask, _ = ellipsoid_volume((6, 5, 4), (1, 1, 1), fov=20)
    pm = SimpleNamespace(volume=mask, volume_mm3=123.0, offset_ijk=(0, 0, 0), voxels=int(mask.array.sum()))
    d = axial_diameters(pm)
    assert d.volume_mm3 == 123.0
    assert d.long_mm == pytest.approx(12, abs=1.0)


def test_empty_mask_is_an_input_error():
    vol = Volume.from_geometry(np.zeros((5, 5, 5), np.uint8), (1, 1, 1))
    with pytest.raises(InputError, match="empty"):
        axial_diameters(vol)


def test_single_pixel_lesion():
    arr = np.zeros((5, 5, 5), np.uint8)
    arr[2, 2, 2] = 1
    d = axial_diameters(Volume.from_geometry(arr, (0.5, 0.5, 2.0)))
    assert d.long_mm == pytest.approx(0.5)  # edge midpoints of one 0.5 mm pixel
    assert d.short_mm == pytest.approx(0.5)


def test_own_hull_has_qhulls_vertices():
    """The monotone-chain hull (no scipy.spatial import) keeps exactly the vertices Qhull keeps, on point sets
    from a half-pixel grid (many collinear boundary points) and on random reals."""
    from scipy.spatial import ConvexHull

    from DFM50NLib.geometry.diameters import _hull_vertices

    rng = np.random.default_rng(1)
    for trial in range(200):
        pts = rng.normal(size=(int(rng.integers(5, 300)), 2)) * 20
        if trial % 2 == 0:
            pts = np.round(pts * 2) / 2
        want = {tuple(p) for p in pts[ConvexHull(pts).vertices]}
        assert {tuple(p) for p in _hull_vertices(pts)} == want
    line = np.array([[0.0, 0.0], [1.0, 1.0], [2.0, 2.0], [0.5, 0.5], [3.0, 3.0]])
    assert {tuple(p) for p in _hull_vertices(line)} == {(0.0, 0.0), (3.0, 3.0)}


def test_longest_diameter_ignores_point_order():
    """Equal longest pairs (a pixelated disk has several): the same endpoints whatever the order of the points."""
    from DFM50NLib.geometry.diameters import _longest_diameter

    yy, xx = np.mgrid[-6:7, -6:7]
    disk = np.stack([xx[xx**2 + yy**2 <= 36], yy[xx**2 + yy**2 <= 36]], axis=1).astype(float)
    first = _longest_diameter(disk)
    rng = np.random.default_rng(0)
    for _ in range(10):
        again = _longest_diameter(disk[rng.permutation(len(disk))])
        assert again[0] == first[0] and np.array_equal(again[1], first[1]) and np.array_equal(again[2], first[2])
    assert first[0] == 12.0 and tuple(first[1]) < tuple(first[2])
