"""prepare_mask and find_center on analytic phantoms: oblique, flipped and anisotropic grids."""

from __future__ import annotations

import numpy as np
import pytest

from DFM50NLib.errors import DFM50NWarning, InputError
from DFM50NLib.geometry.center import find_center
from DFM50NLib.geometry.mask import prepare_mask
from DFM50NLib.geometry.synthetic import ellipsoid_case, ellipsoid_volume, make_grid, sphere_case
from DFM50NLib.geometry.volume import Volume


def rotation(axis, degrees):
    """Rodrigues rotation about `axis` (independent of the library)."""
    k = np.asarray(axis, float) / np.linalg.norm(axis)
    t = np.deg2rad(degrees)
    kx = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + np.sin(t) * kx + (1 - np.cos(t)) * kx @ kx


GRIDS = {
    "aniso": dict(spacing=(0.7, 0.7, 2.5), direction_ras=np.eye(3)),
    "flipped_lps": dict(spacing=(0.7, 0.7, 2.5), direction_ras=np.diag([-1.0, -1.0, 1.0])),
    "flipped_permuted": dict(spacing=(2.5, 0.7, 0.7), direction_ras=np.array([[0, 0, -1], [0, -1, 0], [1, 0, 0.0]])),
    "oblique": dict(spacing=(0.7, 0.7, 2.5), direction_ras=rotation((1, 2, 3), 27)),
}
CENTER = np.array([12.3, -40.1, 71.6])
LESIONS = {
    "sphere": ((8.0, 8.0, 8.0), None),
    "ellipsoid": ((11.0, 7.0, 9.0), rotation((0.3, -1, 0.5), 40)),
}


def case(grid, lesion, seed=0):
    semi, rot = LESIONS[lesion]
    g = GRIDS[grid]
    n = np.ceil(2 * 15.0 / np.asarray(g["spacing"])).astype(int)  # 30 mm field of view around the lesion
    # grid centre 0.3 mm off the lesion centre: the centre is not on a voxel centre or a voxel corner
    return ellipsoid_case(CENTER, semi, rot, shape=n, grid_center_ras=CENTER + 0.3, seed=seed, **g)


@pytest.mark.parametrize("grid", list(GRIDS))
@pytest.mark.parametrize("lesion,method", [("sphere", "dt_peak"), ("sphere", "centroid"), ("ellipsoid", "centroid")])
def test_centre_within_half_a_voxel(grid, lesion, method):
    ct, mask = case(grid, lesion)
    pm = prepare_mask(mask, ct)
    c = find_center(pm, method)
    delta_voxels = ct.world_to_ijk(c) - ct.world_to_ijk(CENTER)
    assert np.all(np.abs(delta_voxels) <= 0.5 + 1e-9), delta_voxels


@pytest.mark.parametrize("grid", list(GRIDS))
def test_dt_peak_of_an_ellipsoid_is_a_distance_maximum_near_the_centre(grid):
    """An ellipsoid's distance ridge is flat along its long axis: on a voxel grid the peak can sit a voxel
    or two from the centre (~1.5 mm here). It must be a true maximum of the physical distance transform."""
    from scipy import ndimage

    ct, mask = case(grid, "ellipsoid")
    c = find_center(prepare_mask(mask, ct), "dt_peak")
    spacing = np.asarray(GRIDS[grid]["spacing"])
    dt = ndimage.distance_transform_edt(np.pad(mask.array, 1), sampling=spacing)[1:-1, 1:-1, 1:-1]
    ijk = np.round(ct.world_to_ijk(c)).astype(int)
    np.testing.assert_allclose(ct.ijk_to_world(ijk), c, atol=1e-9)  # a voxel centre
    assert dt[tuple(ijk)] == dt.max()
    assert np.linalg.norm(c - CENTER) < 2.0


@pytest.mark.parametrize("grid", list(GRIDS))
def test_mask_volume_and_voxels(grid):
    ct, mask = case(grid, "ellipsoid")
    pm = prepare_mask(mask, ct)
    assert pm.voxels == int(mask.array.sum())  # one component, same grid: nothing lost
    assert pm.components_dropped == 0
    assert pm.volume_mm3 == pytest.approx(pm.voxels * np.prod(GRIDS[grid]["spacing"]))
    assert pm.volume_mm3 == pytest.approx(ellipsoid_volume(LESIONS["ellipsoid"][0]), rel=0.03)
    # the crop sits where the lesion is on the CT grid
    o = pm.offset_ijk
    s = pm.volume.shape
    np.testing.assert_array_equal(
        pm.volume.array, mask.array[o[0] : o[0] + s[0], o[1] : o[1] + s[1], o[2] : o[2] + s[2]]
    )
    np.testing.assert_allclose(pm.volume.ijk_to_world([0, 0, 0]), ct.ijk_to_world(o))
    assert all(n < 0.8 * m for n, m in zip(s, ct.shape))  # cropped, not a full-size copy


def test_mask_on_a_coarser_rotated_grid_is_resampled_in_world_space():
    import SimpleITK as sitk

    from DFM50NLib.io import to_sitk

    ct, _ = case("aniso", "sphere")
    # the same sphere drawn on a 1.5 mm grid rotated 30 degrees about an oblique axis, flipped on one axis
    _, coarse = sphere_case(
        CENTER,
        8.0,
        shape=(26, 26, 26),
        spacing=(1.5, 1.5, 1.5),
        direction_ras=rotation((1, 1, 0), 30) @ np.diag([1.0, -1.0, 1.0]),
        seed=0,
    )
    pm = prepare_mask(coarse, ct)
    # independent reference: SimpleITK's own nearest-neighbour resampling onto the whole CT grid
    ref = sitk.Resample(
        to_sitk(coarse),
        to_sitk(ct.with_array(np.zeros(ct.shape, np.uint8))),
        sitk.Transform(),
        sitk.sitkNearestNeighbor,
        0,
    )
    full = sitk.GetArrayFromImage(ref).T
    o, s = pm.offset_ijk, pm.volume.shape
    assert int(full.sum()) == pm.voxels
    np.testing.assert_array_equal(full[o[0] : o[0] + s[0], o[1] : o[1] + s[1], o[2] : o[2] + s[2]], pm.volume.array)
    assert pm.volume_mm3 == pytest.approx(4 / 3 * np.pi * 8.0**3, rel=0.05)


def test_largest_face_connected_component_is_kept():
    a = np.zeros((20, 20, 20), np.uint8)
    a[2:8, 2:8, 2:8] = 1  # 216 voxels
    a[8, 8, 8] = 1  # touches the big block only at a corner: separate with 6-connectivity
    a[12:15, 12:15, 12:15] = 3  # 27 voxels, another label
    vol = Volume.from_geometry(a, (1.0, 1.0, 2.0))
    pm = prepare_mask(vol, vol)
    assert (pm.voxels, pm.components_dropped) == (216, 2)
    assert pm.offset_ijk == (2, 2, 2) and pm.volume.shape == (6, 6, 6)
    assert pm.volume_mm3 == pytest.approx(216 * 2.0)
    pm3 = prepare_mask(vol, vol, label=3)
    assert (pm3.voxels, pm3.components_dropped, pm3.offset_ijk) == (27, 0, (12, 12, 12))


def test_dt_peak_tie_break_and_border():
    a = np.zeros((10, 10, 10), np.uint8)
    a[3:5, 3:5, 3:5] = 1  # 2x2x2: all 8 voxels tie and are equally near the centroid -> lowest index
    vol = Volume.from_geometry(a, (1.0, 1.0, 1.0), origin_ras=(5.0, 6.0, 7.0))
    pm = prepare_mask(vol, vol)
    np.testing.assert_allclose(find_center(pm, "dt_peak"), [8.0, 9.0, 10.0])
    np.testing.assert_allclose(find_center(pm, "centroid"), [8.5, 9.5, 10.5])
    # a 7x5x9 box cut by the CT's corner: its true middle, not a voxel at the image edge
    b = np.zeros((20, 20, 20), np.uint8)
    b[:7, :5, :9] = 1
    vb = Volume.from_geometry(b, (1.0, 1.0, 1.0))
    np.testing.assert_allclose(find_center(prepare_mask(vb, vb), "dt_peak"), [3.0, 2.0, 4.0])


def test_dt_peak_uses_the_physical_spacing():
    # a 9 x 9 x 3 voxel box with 1 x 1 x 5 mm voxels is 9 x 9 x 15 mm: without spacing every one of the
    # 7 x 7 middle-slice voxels would tie; with spacing only the middle voxel is the farthest from background
    a = np.zeros((15, 15, 7), np.uint8)
    a[3:12, 3:12, 2:5] = 1
    vol = Volume.from_geometry(a, (1.0, 1.0, 5.0))
    np.testing.assert_allclose(find_center(prepare_mask(vol, vol), "dt_peak"), [7.0, 7.0, 15.0])


def test_point_method():
    ct, mask = case("aniso", "sphere")
    pm = prepare_mask(mask, ct)
    p = CENTER + (1.0, -2.0, 0.5)
    np.testing.assert_allclose(find_center(pm, "point", p), p)
    with pytest.warns(DFM50NWarning, match="outside the lesion"):
        find_center(pm, "point", CENTER + (15.0, 0, 0))
    with pytest.raises(InputError, match="would not contain the lesion"):
        find_center(pm, "point", CENTER + (40.0, 0, 0))
    with pytest.raises(InputError, match="finite"):
        find_center(pm, "point", (1.0, np.nan, 2.0))
    with pytest.raises(InputError, match="needs a point"):
        find_center(pm, "point")
    with pytest.raises(InputError, match="Unknown centre method"):
        find_center(pm, "middle")


def test_errors_say_what_is_wrong():
    ct, mask = case("aniso", "sphere")
    with pytest.raises(InputError, match="empty"):
        prepare_mask(mask.with_array(np.zeros(mask.shape, np.uint8)), ct)
    labelled = mask.with_array(mask.array * 2 + (np.arange(mask.shape[0]) == 0)[:, None, None] * 5)
    with pytest.raises(InputError, match=r"no voxel with label 7.*Labels present: 2, 5"):
        prepare_mask(labelled, ct, label=7)
    far = Volume(mask.array, mask.ijk_to_ras @ np.diag([1, 1, 1, 1.0]) + np.array([[0, 0, 0, 500.0]] * 3 + [[0] * 4]))
    with pytest.raises(InputError, match="does not overlap the CT"):
        prepare_mask(far, ct)
    with pytest.raises(InputError, match="2-D"):
        prepare_mask(Volume(np.ones((5, 5), np.uint8), np.eye(4)), ct)
    with pytest.raises(InputError, match="4-D"):
        prepare_mask(Volume(np.ones((5, 5, 5, 2), np.uint8), np.eye(4)), ct)


def test_no_full_size_allocation_for_a_mask_on_another_grid():
    import tracemalloc

    big = np.broadcast_to(np.int16(-1000), (512, 512, 600))  # a full-size CT that costs no memory
    ct = Volume.from_geometry(big, (0.7, 0.7, 1.0), origin_ras=(-180.0, -180.0, -300.0))
    _, m = sphere_case(
        (10.0, 20.0, 30.0), 10.0, shape=(40, 40, 40), spacing=(0.9, 0.9, 0.9), direction_ras=rotation((0, 0, 1), 15)
    )
    tracemalloc.start()
    pm = prepare_mask(m, ct)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 20e6  # a 512x512x600 bool copy alone would be 157 MB
    assert pm.volume_mm3 == pytest.approx(4 / 3 * np.pi * 1000, rel=0.05)


def test_make_grid_places_its_middle_on_the_requested_point():
    g = make_grid((11, 8, 5), (0.7, 0.9, 2.5), direction_ras=rotation((1, 2, 0), 33), center_ras=(4.0, -3.0, 9.0))
    np.testing.assert_allclose(g.ijk_to_world([5.0, 3.5, 2.0]), [4.0, -3.0, 9.0], atol=1e-12)
    np.testing.assert_allclose(g.spacing, [0.7, 0.9, 2.5])


@pytest.mark.parametrize("label", [None, 3])
def test_bounding_box_in_any_memory_order(label):
    """C-ordered, Fortran-ordered (Slicer's [k,j,i].T) and permuted views give the box of the voxels."""
    from DFM50NLib.geometry.mask import _bounding_box

    rng = np.random.default_rng(2)
    arr = np.zeros((70, 90, 60), np.int16)
    arr[tuple(rng.integers([10, 20, 5], [60, 80, 50], size=(40, 3)).T)] = 3
    arr[12, 85, 58] = 7  # another label: part of the box only without a label
    for view in (arr, np.asfortranarray(arr), np.ascontiguousarray(arr.transpose(2, 0, 1)).transpose(1, 2, 0)):
        sel = np.argwhere(view != 0 if label is None else view == label)
        assert _bounding_box(view, label) == (tuple(sel.min(axis=0)), tuple(sel.max(axis=0) + 1))
