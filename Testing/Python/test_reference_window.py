"""The windowed reference cube (only the cube's samples and the lesion's box) against the slow oracle: a
direct whole-volume ``scipy.ndimage.zoom`` of the same inputs, step by step as METHOD.md §3 states it."""

from __future__ import annotations

import numpy as np
import pytest
from test_reference import upstream_cube

from DFM50NLib.geometry import zoom_window as zw
from DFM50NLib.geometry.reference import reference_cube, reference_cube_whole_volume
from DFM50NLib.io.nifti_source import read_nifti_source, reference_cube_from_files


def write_case(folder, shape, zooms, lesions, signs=(-1, -1, 1), slope_inter=None, seed=0, ct_dtype=np.int16):
    """CT + mask NIfTI pair (nibabel); `signs` of the affine's diagonal (LPS-like default, (1, 1, 1) = LAS
    when the file is read as i -> left), optional scl_slope / scl_inter on the CT."""
    import nibabel as nib

    rng = np.random.default_rng(seed)
    affine = np.diag([s * z for s, z in zip(signs, zooms)] + [1.0])
    affine[:3, 3] = (30.0, 20.0, -50.0)
    ijk = np.indices(shape).astype(float)
    mask = np.zeros(shape, np.int16)
    for center_ijk, radius_mm, value in lesions:
        d2 = sum(((ijk[a] - center_ijk[a]) * zooms[a]) ** 2 for a in range(3))
        mask[d2 <= radius_mm**2] = value
    ct = (-800 + 60 * rng.standard_normal(shape) + 840 * (mask > 0)).astype(ct_dtype)
    ct_img = nib.Nifti1Image(ct, affine)
    if slope_inter is not None:
        ct_img.header.set_slope_inter(*slope_inter)
    ct_img.header.set_zooms(zooms)
    m_img = nib.Nifti1Image(mask, affine)
    m_img.header.set_zooms(zooms)
    paths = folder / "ct.nii.gz", folder / "mask.nii.gz"
    nib.save(ct_img, str(paths[0]))
    nib.save(m_img, str(paths[1]))
    return paths


def assert_same_as_oracle(ct_path, mask_path, method):
    ref = reference_cube_from_files(ct_path, mask_path, center_method=method)
    ct_cube, mask_cube, c = upstream_cube(ct_path, mask_path, method)
    assert list(ref.center_ijk) == c
    assert np.array_equal(ref.cube.ct, ct_cube, equal_nan=False)
    assert np.array_equal(ref.cube.ct.view(np.uint32), ct_cube.view(np.uint32))  # bit for bit, sign of 0 too
    assert np.array_equal(ref.cube.mask.astype(bool), mask_cube)
    return ref, ct_cube


CASES = {
    # name: shape, zooms, lesions ((centre ijk, radius mm, label), ...)
    "odd_sizes_small_spacing": ((37, 29, 23), (0.7, 0.63, 0.9), [((18, 15, 11), 4.0, 1), ((5, 5, 5), 1.5, 1)]),
    "large_spacing": ((31, 27, 11), (1.3, 1.7, 3.1), [((15, 13, 5), 9.0, 1)]),
    "mixed_spacing": ((41, 33, 17), (0.49, 1.25, 2.5), [((20, 16, 8), 3.5, 1)]),
    "lesion_at_low_border": ((33, 35, 19), (0.8, 0.7, 1.5), [((0, 1, 0), 4.0, 1)]),
    "lesion_at_high_border": ((33, 35, 19), (0.8, 0.7, 1.5), [((32, 34, 18), 4.0, 1)]),
    "lesion_fills_array_width": ((15, 13, 9), (2.0, 2.0, 2.0), [((7, 6, 4), 40.0, 1)]),
    "one_axis_at_1mm": ((29, 31, 17), (1.0, 0.8, 2.0), [((14, 15, 8), 5.0, 1)]),
}


@pytest.mark.parametrize("method", ["dt_peak", "centroid"])
@pytest.mark.parametrize("name", sorted(CASES))
def test_windowed_cube_equals_whole_volume_zoom(tmp_path, name, method):
    shape, zooms, lesions = CASES[name]
    ct_path, mask_path = write_case(tmp_path, shape, zooms, lesions)
    ref, ct_cube = assert_same_as_oracle(ct_path, mask_path, method)
    if "border" in name:  # the cube runs off the zoomed array: zero padding
        assert np.any(ct_cube == 0.0)
        near = [min(ci, n - 1 - ci) for ci, n in zip(ref.center_ijk, ref.zoomed_shape)]
        assert min(near) < 25


def test_las_file_and_scaled_ct(tmp_path):
    """An LAS-ordered pair (affine diagonal -, +, +) whose CT carries scl_slope / scl_inter."""
    shape, zooms = (35, 31, 13), (0.75, 0.75, 2.0)
    ct_path, mask_path = write_case(
        tmp_path, shape, zooms, [((17, 12, 6), 5.0, 1)], signs=(-1, 1, 1), slope_inter=(0.5, -1024.0)
    )
    import nibabel as nib

    assert nib.aff2axcodes(nib.load(str(ct_path)).affine) == ("L", "A", "S")
    src = read_nifti_source(ct_path)
    assert src.slope == 0.5 and src.inter == -1024.0
    assert np.array_equal(src.values(), nib.load(str(ct_path)).get_fdata())
    for method in ("dt_peak", "centroid"):
        assert_same_as_oracle(ct_path, mask_path, method)


@pytest.mark.parametrize("dtype", [">i2", np.float32, np.uint16])
def test_other_ct_dtypes(tmp_path, dtype):
    """Big-endian, float32 and unsigned CTs: the stored values feed the spline exactly as get_fdata's."""
    ct_path, mask_path = write_case(tmp_path, (27, 25, 13), (0.9, 0.9, 1.7), [((13, 12, 6), 5.0, 1)], ct_dtype=dtype)
    assert_same_as_oracle(ct_path, mask_path, "dt_peak")


def test_equal_components_tie_and_label(tmp_path):
    """Two lesions of the same size: the first in raster order is kept, as upstream's counts.index(max)."""
    shape, zooms = (40, 24, 12), (0.8, 0.8, 2.0)
    lesions = [((28, 12, 6), 3.0, 1), ((10, 12, 6), 3.0, 1)]
    ct_path, mask_path = write_case(tmp_path, shape, zooms, lesions)
    ref, _ = assert_same_as_oracle(ct_path, mask_path, "dt_peak")
    assert ref.components_dropped == 1 and ref.center_ijk[0] < 20 / 0.8
    # an explicit label, compared with the whole-volume implementation on the same arrays
    ct_path, mask_path = write_case(tmp_path, shape, zooms, [((28, 12, 6), 3.0, 2), ((10, 12, 6), 4.0, 1)])
    ct, mask = read_nifti_source(ct_path), read_nifti_source(mask_path)
    fast = reference_cube(ct, mask, ct.zooms, mask.zooms, "centroid", label=2)
    slow = reference_cube_whole_volume(ct.values(), mask.values(), ct.zooms, mask.zooms, "centroid", label=2)
    assert fast.center_ijk == slow.center_ijk and fast.center_float == slow.center_float
    assert np.array_equal(fast.cube.ct, slow.cube.ct) and np.array_equal(fast.cube.mask, slow.cube.mask)
    assert fast.mask_voxels == slow.mask_voxels and fast.components_dropped == slow.components_dropped == 0


def test_lesion_lost_by_the_zoom_is_an_error_as_upstream(tmp_path):
    """A 5 mm lesion on 1.3 x 1.7 x 3.1 mm voxels: the order-0 zoom samples none of it (upstream: empty)."""
    from scipy import ndimage

    from DFM50NLib.errors import InputError

    ct_path, mask_path = write_case(tmp_path, (31, 27, 11), (1.3, 1.7, 3.1), [((15, 13, 5), 5.0, 1)])
    mask = read_nifti_source(mask_path)
    assert mask.values().sum() > 0
    assert not (ndimage.zoom(mask.values(), tuple(1 / s for s in mask.zooms), order=0) > 0).any()
    with pytest.raises(InputError, match="empty after resampling"):
        reference_cube_from_files(ct_path, mask_path)


def test_unit_spacing_returns_the_input(tmp_path):
    """Zoom factors all exactly 1: scipy hands back the input unfiltered (no spline); so must we."""
    ct_path, mask_path = write_case(tmp_path, (30, 28, 26), (1.0, 1.0, 1.0), [((15, 14, 13), 4.0, 1)])
    ref, ct_cube = assert_same_as_oracle(ct_path, mask_path, "dt_peak")
    assert ref.zoomed_shape == (30, 28, 26)
    assert set(np.unique(ct_cube[ct_cube != 0])) <= set(np.unique(read_nifti_source(ct_path).values()))


@pytest.mark.parametrize("seed", range(6))
def test_zoom_window_equals_scipy_zoom(seed):
    """Random sizes, spacings and windows (inside, across and beyond the borders) vs scipy.ndimage.zoom."""
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    for _ in range(5):
        shape = tuple(int(v) for v in rng.integers(2, 30, 3))
        zoom = tuple(1.0 / float(v) for v in rng.choice([0.3, 0.49, 0.7, 0.97, 1.25, 2.5, 5.0], 3))
        data = rng.normal(size=shape) * 300
        full = ndimage.zoom(data, zoom, order=3)
        window = []
        for n in full.shape:
            a = int(rng.integers(0, n))
            window.append((a, min(n, a + int(rng.integers(1, 40)))))
        got = zw.spline_zoom_window(lambda a, b, d=data: d[:, :, a:b], shape, zoom, window)
        assert np.array_equal(got, full[tuple(slice(a, b) for a, b in window)])
        nearest = ndimage.zoom(data, zoom, order=0)
        maps = zw.nearest_index_maps(shape, zoom)
        sampled = data[np.ix_(*[np.maximum(m, 0) for m in maps])]
        for ax, m in enumerate(maps):
            sampled[(slice(None),) * ax + (m < 0,)] = 0.0
        assert np.array_equal(sampled, nearest)
