"""Reference geometry (METHOD.md §3) against a straightforward reimplementation written from the METHOD.md §3 text."""

from __future__ import annotations

import numpy as np
import pytest

from DFM50NLib.errors import InputError
from DFM50NLib.io.nifti_source import reference_cube_from_files


def upstream_cube(image_path, mask_path, center_method):
    """METHOD.md §3, step by step, as the upstream scripts would do it."""
    import nibabel as nib
    from scipy import ndimage

    img, msk = nib.load(str(image_path)), nib.load(str(mask_path))
    data, mdata = img.get_fdata(), msk.get_fdata()
    sx, sy, sz = img.header.get_zooms()[:3]
    mx, my, mz = msk.header.get_zooms()[:3]
    data = ndimage.zoom(data, zoom=(1 / sx, 1 / sy, 1 / sz), order=3)
    mdata = ndimage.zoom(mdata, zoom=(1 / mx, 1 / my, 1 / mz), order=0)
    mdata = mdata > 0
    lab, n = ndimage.label(mdata)
    counts = [np.sum(lab == i) for i in range(1, n + 1)]
    mdata = lab == (1 + counts.index(max(counts)))
    if center_method == "dt_peak":
        dist = ndimage.distance_transform_edt(mdata)
        center = np.unravel_index(np.argmax(dist), dist.shape)
    else:
        center = ndimage.center_of_mass(mdata)
    c = [int(np.round(v)) for v in center]
    padded = np.pad(data, 25, mode="constant", constant_values=0)
    cube = padded[c[0] : c[0] + 50, c[1] : c[1] + 50, c[2] : c[2] + 50]  # [c-25, c+25) in unpadded indices
    mpadded = np.pad(mdata, 25)
    return cube.astype(np.float32), mpadded[c[0] : c[0] + 50, c[1] : c[1] + 50, c[2] : c[2] + 50], c


def write_pair(folder, shape, zooms, lesions, seed=0):
    """Anisotropic CT + mask NIfTI pair written with nibabel (LPS-like affine, as ITK writes DICOM CTs)."""
    import nibabel as nib

    rng = np.random.default_rng(seed)
    affine = np.diag([-zooms[0], -zooms[1], zooms[2], 1.0])
    affine[:3, 3] = (30.0, 20.0, -50.0)
    ijk = np.indices(shape).astype(float)
    mask = np.zeros(shape, np.int16)
    for center_ijk, radius_mm, value in lesions:
        d2 = sum(((ijk[a] - center_ijk[a]) * zooms[a]) ** 2 for a in range(3))
        mask[d2 <= radius_mm**2] = value
    ct = (-800 + 60 * rng.standard_normal(shape) + 840 * (mask > 0)).astype(np.int16)
    ct_img = nib.Nifti1Image(ct, affine)
    ct_img.header.set_zooms(zooms)
    m_img = nib.Nifti1Image(mask, affine)
    m_img.header.set_zooms(zooms)
    paths = folder / "ct.nii.gz", folder / "mask.nii.gz"
    nib.save(ct_img, str(paths[0]))
    nib.save(m_img, str(paths[1]))
    return paths


@pytest.mark.parametrize("method", ["dt_peak", "centroid"])
@pytest.mark.parametrize("layout", ["inside", "near_edge"])
def test_bit_for_bit_with_the_upstream_arithmetic(tmp_path, method, layout):
    zooms = (0.7, 0.8, 2.5)
    if layout == "inside":  # big lesion + a small second component that must be dropped
        shape, lesions = (48, 44, 14), [((22, 20, 7), 6.0, 1), ((40, 38, 7), 3.0, 2)]
    else:  # the cube runs off the (zoomed) array on every axis: zero padding
        shape, lesions = (30, 26, 8), [((6, 20, 1), 4.0, 1)]
    ct_path, mask_path = write_pair(tmp_path, shape, zooms, lesions)
    ref = reference_cube_from_files(ct_path, mask_path, center_method=method)
    ct_cube, mask_cube, c = upstream_cube(ct_path, mask_path, method)
    assert ref.cube.ct.dtype == np.float32 and ref.cube.ct.shape == (50, 50, 50)
    assert np.array_equal(ref.cube.ct, ct_cube)
    assert np.array_equal(ref.cube.mask.astype(bool), mask_cube)
    assert list(ref.center_ijk) == c
    assert ref.cube.geometry == "reference" and ref.cube.orientation == "file-ijk"
    assert ref.components_dropped == len(lesions) - 1
    assert ref.stats["cube_mask_voxels"] == int(mask_cube.sum())
    if layout == "near_edge":
        assert np.any(ref.cube.ct == 0.0) and ref.stats["coverage"] <= 1.0


def test_audit_cube_sits_at_the_centre_in_world_space(tmp_path):
    import nibabel as nib

    ct_path, mask_path = write_pair(tmp_path, (48, 44, 14), (0.7, 0.8, 2.5), [((22.0, 20.0, 7.0), 6.0, 1)])
    ref = reference_cube_from_files(ct_path, mask_path, center_method="centroid")
    affine = nib.load(str(ct_path)).affine
    # zoomed index x maps to original index x * (n_in - 1) / (n_out - 1) (scipy.ndimage.zoom, grid_mode=False)
    n_in, n_out = np.array([48, 44, 14]), np.array(ref.zoomed_shape)
    original = np.array(ref.center_ijk) * (n_in - 1) / (n_out - 1)
    expected = affine @ [*original, 1.0]
    np.testing.assert_allclose(ref.cube.cube_to_ras @ [25, 25, 25, 1], expected, atol=1e-9)
    np.testing.assert_allclose(ref.center_ras, expected[:3], atol=1e-9)
    # the lesion (centre index 22, 20, 7 in the file) is within a zoomed voxel of the cube centre
    np.testing.assert_allclose(ref.center_ras, (affine @ [22.0, 20.0, 7.0, 1.0])[:3], atol=2.6)


def test_reference_errors(tmp_path):
    ct_path, mask_path = write_pair(tmp_path, (20, 20, 6), (1.0, 1.0, 2.0), [((10, 10, 3), 3.0, 1)])
    with pytest.raises(InputError, match="'dt_peak' and 'centroid'"):
        reference_cube_from_files(ct_path, mask_path, center_method="point")
    with pytest.raises(InputError, match="no voxel with label 4"):
        reference_cube_from_files(ct_path, mask_path, label=4)
    with pytest.raises(InputError, match="not found"):
        reference_cube_from_files(tmp_path / "missing.nii.gz", mask_path)
