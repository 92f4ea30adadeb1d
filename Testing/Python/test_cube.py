"""The 50 mm cube: geometry, B-spline values, outside handling, orientation codes, statistics."""

from __future__ import annotations

import numpy as np
import pytest
from test_mask_center import CENTER, GRIDS, LESIONS, case, rotation

from DFM50NLib import io
from DFM50NLib.geometry.center import find_center
from DFM50NLib.geometry.cube import cube_stats, cube_to_ras_matrix, extract_cube
from DFM50NLib.geometry.mask import prepare_mask
from DFM50NLib.geometry.synthetic import ellipsoid_case, ellipsoid_volume, sphere_case
from DFM50NLib.geometry.volume import Volume

SAMPLE_OFFSETS = np.arange(50) - 25.0  # mm, METHOD.md §2.3


def sample_points(center, code_rows):
    """World RAS of every cube sample, written from METHOD.md §2.3 directly: centre + (n - 25) mm along each axis."""
    a, b, c = np.meshgrid(SAMPLE_OFFSETS, SAMPLE_OFFSETS, SAMPLE_OFFSETS, indexing="ij")
    rows = np.asarray(code_rows, float)
    return center + a[..., None] * rows[0] + b[..., None] * rows[1] + c[..., None] * rows[2]


LPS_ROWS = [[-1, 0, 0], [0, -1, 0], [0, 0, 1]]


@pytest.mark.parametrize("grid", list(GRIDS))
@pytest.mark.parametrize("lesion", list(LESIONS))
def test_cube_mask_volume_matches_the_analytic_volume(grid, lesion):
    ct, mask = case(grid, lesion)
    pm = prepare_mask(mask, ct)
    cube = extract_cube(ct, pm, find_center(pm, "centroid"), "LPS")
    assert cube.ct.shape == cube.mask.shape == (50, 50, 50)
    assert cube.ct.dtype == np.float32 and cube.mask.dtype == np.uint8
    assert cube.mask.sum() == pytest.approx(ellipsoid_volume(LESIONS[lesion][0]), rel=0.03)
    stats = cube_stats(cube, pm)
    assert stats == {"cube_mask_voxels": int(cube.mask.sum()), "coverage": 1.0, "touches_border": False}


@pytest.mark.parametrize("grid", ["aniso", "flipped_permuted", "oblique"])
def test_ct_samples_are_the_image_at_the_sample_points(grid):
    """A CT that is a linear function of world position: a cubic B-spline reproduces it, so every cube
    sample must equal the function at the sample's world position (METHOD.md §2.3 offsets)."""
    g = GRIDS[grid]
    n = np.ceil(120.0 / np.asarray(g["spacing"])).astype(int)  # cube + spline context inside
    grid_vol = sphere_case(CENTER, 5.0, shape=n, seed=0, **g)[1]
    ijk = np.indices(grid_vol.shape, dtype=float)
    world = np.einsum("rc,cijk->ijkr", grid_vol.ijk_to_ras[:3, :3], ijk) + grid_vol.ijk_to_ras[:3, 3]
    slope = np.array([3.0, -2.0, 1.5])
    ct = grid_vol.with_array(world @ slope - 200.0)
    pm = prepare_mask(grid_vol, ct)
    center = CENTER + np.array([0.37, -0.81, 0.44])
    cube = extract_cube(ct, pm, center, "LPS")
    expected = sample_points(center, LPS_ROWS) @ slope - 200.0
    np.testing.assert_allclose(cube.ct, expected, atol=2e-3)
    np.testing.assert_allclose(cube.cube_to_ras @ [25, 25, 25, 1], [*center, 1])
    np.testing.assert_allclose(
        cube.ct_volume().ijk_to_world([[0, 0, 0], [49, 3, 7]]), sample_points(center, LPS_ROWS)[[0, 49], [0, 3], [0, 7]]
    )


def test_outside_samples_are_air_and_follow_the_documented_extent():
    ct, mask = sphere_case(
        CENTER, 6.0, shape=(40, 30, 12), spacing=(0.7, 0.9, 2.5), direction_ras=rotation((1, 0, 1), 20)
    )
    pm = prepare_mask(mask, ct)
    center = find_center(pm)
    cube = extract_cube(ct, pm, center, "LPS")
    idx = ct.world_to_ijk(sample_points(center, LPS_ROWS))
    outside = np.any((idx < -0.5) | (idx > np.array(ct.shape) - 0.5), axis=-1)
    assert 0.3 < outside.mean() < 0.99  # the test really has both kinds
    assert np.all(cube.ct[outside] == -1024.0)
    # inside: the cubic B-spline of the whole image (edge-replicated beyond its border), by scipy directly
    from scipy import ndimage

    direct = ndimage.map_coordinates(np.asarray(ct.array, float), idx[~outside].T, order=3, mode="nearest")
    np.testing.assert_allclose(cube.ct[~outside], direct, atol=0.05)
    assert np.all(cube.mask[outside] == 0)
    assert cube.mask.sum() == pytest.approx(4 / 3 * np.pi * 216, rel=0.05)


def test_permuted_codes_give_transposed_cubes_bit_for_bit():
    ct, mask = case("oblique", "ellipsoid")
    pm = prepare_mask(mask, ct)
    c = find_center(pm)
    lps = extract_cube(ct, pm, c, "LPS")
    for code, axes in [("SPL", (2, 1, 0)), ("psl", (1, 2, 0)), ("LSP", (0, 2, 1))]:
        other = extract_cube(ct, pm, c, code)
        assert other.orientation == code.upper()
        np.testing.assert_array_equal(other.ct, lps.ct.transpose(axes))
        np.testing.assert_array_equal(other.mask, lps.mask.transpose(axes))
    # a flipped axis is a different cube (offsets -25..24 along the other direction)
    ras = extract_cube(ct, pm, c, "RAS")
    np.testing.assert_allclose(ras.ct[1:, 1:, :], lps.ct[:0:-1, :0:-1, :], atol=1e-3)


def test_same_lesion_in_two_file_orientations_gives_the_same_cube(tmp_path):
    """The same phantom written as an RAS-ordered file and as a flipped + permuted (LPS-like) file."""
    ct, mask = ellipsoid_case(
        CENTER,
        (10.0, 7.0, 8.0),
        rotation((1, -1, 2), 35),
        shape=(72, 72, 26),
        spacing=(0.7, 0.7, 2.5),
        grid_center_ras=CENTER + 1.3,
        seed=4,
    )
    flip = np.diag([-1.0, -1.0, 1.0, 1.0])
    flip[0, 3], flip[1, 3] = ct.shape[0] - 1, ct.shape[1] - 1  # i' = n - 1 - i, j' = n - 1 - j
    perm = (2, 0, 1)
    m2 = (ct.ijk_to_ras @ flip)[:, list(perm) + [3]]
    ct2 = Volume(np.flip(ct.array, (0, 1)).transpose(perm), m2)
    mask2 = Volume(np.flip(mask.array, (0, 1)).transpose(perm), m2)
    cubes = []
    for name, (c, m, suffix) in {"ras": (ct, mask, ".nii.gz"), "lps": (ct2, mask2, ".nrrd")}.items():
        c_path = io.write_volume(c, tmp_path / f"{name}_ct{suffix}")
        m_path = io.write_volume(m, tmp_path / f"{name}_mask{suffix}")
        cv, mv = io.read_volume(c_path), io.read_mask(m_path)
        pm = prepare_mask(mv, cv)
        cubes.append(extract_cube(cv, pm, find_center(pm, "dt_peak"), "LPS"))
    assert np.max(np.abs(cubes[0].ct - cubes[1].ct)) < 1.0
    np.testing.assert_allclose(cubes[0].cube_to_ras, cubes[1].cube_to_ras, atol=1e-4)
    assert np.sum(cubes[0].mask != cubes[1].mask) <= 0.001 * cubes[0].mask.sum()


def test_coverage_and_border_for_a_lesion_larger_than_the_cube():
    ct, mask = sphere_case(CENTER, 30.0, shape=(70, 70, 70), spacing=(1.0, 1.0, 1.0))
    pm = prepare_mask(mask, ct)
    cube = extract_cube(ct, pm, CENTER, "LPS")
    stats = cube_stats(cube, pm)
    # independent count: lesion voxel centres within [-25.5, 24.5] mm along L, P and S of the centre
    world = ct.ijk_to_world(np.argwhere(mask.array))
    lps_off = (world - CENTER) * [-1, -1, 1]
    expected = np.all((lps_off >= -25.5) & (lps_off <= 24.5), axis=1).mean()
    assert stats["coverage"] == pytest.approx(expected, abs=1e-12) and stats["coverage"] < 0.9
    assert stats["touches_border"] is True
    assert stats["cube_mask_voxels"] == int(cube.mask.sum())


def test_only_the_cube_neighbourhood_is_copied():
    import tracemalloc

    big = np.broadcast_to(np.int16(-700), (512, 512, 600))  # full-size CT costing no memory
    ct = Volume.from_geometry(big, (0.7, 0.7, 1.0), origin_ras=(-180.0, -180.0, -300.0))
    _, m = sphere_case((10.0, 20.0, 30.0), 8.0, shape=(30, 30, 30), spacing=(1.0, 1.0, 1.0))
    pm = prepare_mask(m, ct)
    for direction in (np.eye(3), rotation((0, 0, 1), 10)):
        ct_d = Volume.from_geometry(big, (0.7, 0.7, 1.0), (-180.0, -180.0, -300.0), direction)
        tracemalloc.start()
        cube = extract_cube(ct_d, pm, (10.0, 20.0, 30.0))
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert peak < 40e6  # a float64 copy of this CT would be 1.26 GB
        np.testing.assert_allclose(cube.ct, -700.0, atol=1e-6)


def test_cube_to_ras_matrix_follows_the_code():
    m = cube_to_ras_matrix((1.0, 2.0, 3.0), "SPL")
    np.testing.assert_allclose(m @ [25, 25, 25, 1], [1, 2, 3, 1])
    np.testing.assert_allclose(m @ [26, 25, 25, 1], [1, 2, 4, 1])  # axis 0 -> Superior
    np.testing.assert_allclose(m @ [25, 26, 25, 1], [1, 1, 3, 1])  # axis 1 -> Posterior (A decreases)
    np.testing.assert_allclose(m @ [25, 25, 26, 1], [0, 2, 3, 1])  # axis 2 -> Left (R decreases)


@pytest.mark.parametrize("axis", [(0, 0, 1), (1, 0, 0), (0, 1, 0), (1, 2, 3), None])
def test_every_sampling_path_is_the_whole_image_spline(axis):
    """Axis-aligned, rotated about one axis (each CT axis in turn) and doubly oblique grids take three code
    paths (tensor product, slabs + 2-D spline, map_coordinates): each must equal the cubic B-spline of the
    whole image (scipy on the full array) to 0.01 HU on a textured CT with 1000 HU edges, and the fast
    paths the generic one to float noise."""
    from scipy import ndimage

    from DFM50NLib.geometry import cube as cube_mod

    rng = np.random.default_rng(3)
    arr = np.where(rng.random((14, 14, 14)) < 0.5, -850.0, 40.0).repeat(8, 0).repeat(8, 1).repeat(8, 2)[:100, :96, :104]
    arr += ndimage.gaussian_filter(rng.normal(0, 300, arr.shape), 1.0)
    direction = np.diag([-1.0, -1.0, 1.0]) if axis is None else rotation(axis, 23)
    ct = Volume.from_geometry(arr, (0.7, 0.75, 0.8), (5.0, -3.0, 2.0), direction)
    center = ct.ijk_to_world(np.array(arr.shape) / 2 + [0.3, -0.2, 0.45])
    m = (ct.ras_to_ijk @ cube_to_ras_matrix(center, "LPS"))[:3]
    assert len(cube_mod._lone_axes(m)) == {None: 3, (1, 2, 3): 0}.get(axis, 1)
    got = cube_mod._sample_ct(ct, cube_to_ras_matrix(center, "LPS"))
    ijk = ct.world_to_ijk(sample_points(center, LPS_ROWS)).reshape(-1, 3).T
    whole = ndimage.map_coordinates(arr, ijk, order=3, mode="nearest").reshape(got.shape)
    inside = np.all((ijk >= -0.5) & (ijk <= np.array(arr.shape)[:, None] - 0.5), axis=0).reshape(got.shape)
    assert inside.mean() > 0.5 and np.all(got[~inside] == -1024.0)
    assert np.abs(got - whole)[inside].max() < 0.01
    np.testing.assert_allclose(got, cube_mod._sample_general(ct, m), atol=1e-6)


def test_fast_paths_fill_outside_samples_with_air():
    """A lesion near a corner of a CT rotated about S: slab path, part of the cube outside on two axes."""
    from DFM50NLib.geometry import cube as cube_mod

    rng = np.random.default_rng(5)
    ct = Volume.from_geometry(
        rng.normal(0, 200, (40, 50, 30)), (0.8, 0.8, 1.2), (0.0, 0.0, 0.0), rotation((0, 0, 1), 15)
    )
    center = ct.ijk_to_world([3.0, 45.0, 2.3])  # no sample exactly on the border
    cm = cube_to_ras_matrix(center, "LPS")
    m = (ct.ras_to_ijk @ cm)[:3]
    got, ref = cube_mod._sample_ct(ct, cm), cube_mod._sample_general(ct, m)
    idx = ct.world_to_ijk(sample_points(center, LPS_ROWS))
    outside = np.any((idx < -0.5) | (idx > np.array(ct.shape) - 0.5), axis=-1)
    assert 0.5 < outside.mean() < 0.95
    assert np.all(got[outside] == -1024.0)
    np.testing.assert_allclose(got, ref, atol=1e-6)
