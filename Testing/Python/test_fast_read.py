"""The ISA-L NIfTI reader gives exactly what ITK's reader gives (voxels, origin, spacing, direction); no nibabel."""

from __future__ import annotations

import gzip

import numpy as np
import pytest

from DFM50NLib.io import fast_gzip
from DFM50NLib.io.fast_nifti import read_nifti_volume


def write(path, array, affine, slope_inter=None):
    import nibabel as nib

    img = nib.Nifti1Image(array, affine)
    if slope_inter is not None:
        img.header.set_slope_inter(*slope_inter)
    nib.save(img, str(path))
    return path


def assert_same_as_itk(path):
    import SimpleITK as sitk

    from DFM50NLib import io

    fast, itk = read_nifti_volume(path), io.to_volume(sitk.ReadImage(str(path)), path)
    assert fast is not None
    assert fast.array.dtype == itk.array.dtype and fast.array.dtype.isnative
    assert np.array_equal(fast.array, itk.array) and fast.array.shape == itk.array.shape
    assert np.array_equal(fast.ijk_to_ras, itk.ijk_to_ras)  # bit for bit: the same numbers from ITK's header read
    via_io = io.read_volume(path)
    assert np.array_equal(via_io.array, itk.array) and np.array_equal(via_io.ijk_to_ras, itk.ijk_to_ras)


@pytest.mark.parametrize("dtype", [np.int16, np.uint8, np.float32, np.int32])
@pytest.mark.parametrize("name", ["a.nii.gz", "a.nii"])
def test_equals_itk_reader(tmp_path, dtype, name):
    rng = np.random.default_rng(3)
    array = (rng.normal(size=(13, 11, 7)) * 100).astype(dtype)
    t = np.deg2rad(7.0)  # an oblique (rotated) grid, LPS-like
    rot = np.array([[np.cos(t), -np.sin(t), 0], [np.sin(t), np.cos(t), 0], [0, 0, 1]]) @ np.diag([-1.0, -1.0, 1.0])
    affine = np.eye(4)
    affine[:3, :3] = rot @ np.diag([0.7, 0.8, 2.5])
    affine[:3, 3] = (30.0, -20.0, 5.0)
    assert_same_as_itk(write(tmp_path / name, array, affine))


def test_las_and_big_endian(tmp_path):
    array = np.arange(6 * 5 * 4, dtype=">i2").reshape(6, 5, 4)
    assert_same_as_itk(write(tmp_path / "las.nii.gz", array, np.diag([-1.0, 1.5, 2.0, 1.0])))


def test_scaled_or_4d_files_go_to_itk(tmp_path):
    array = np.ones((5, 5, 5), np.int16)
    assert read_nifti_volume(write(tmp_path / "s.nii.gz", array, np.eye(4), slope_inter=(2.0, -1024.0))) is None
    assert read_nifti_volume(write(tmp_path / "t.nii.gz", np.ones((5, 5, 5, 2), np.int16), np.eye(4))) is None
    assert read_nifti_volume(tmp_path / "missing.nii.gz") is None
    (tmp_path / "junk.nii.gz").write_bytes(gzip.compress(b"not a nifti"))
    assert read_nifti_volume(tmp_path / "junk.nii.gz") is None


def test_without_isal_itk_reads(tmp_path, monkeypatch):
    from DFM50NLib import io

    path = write(tmp_path / "a.nii.gz", np.arange(60, dtype=np.int16).reshape(5, 4, 3), np.eye(4))
    monkeypatch.setattr(fast_gzip, "gunzip_backend", lambda: "zlib")
    assert read_nifti_volume(path) is None
    assert np.array_equal(io.read_volume(path).array, np.arange(60, dtype=np.int16).reshape(5, 4, 3))


def test_gunzip_multi_member_equals_zlib():
    data = gzip.compress(b"abc" * 1000) + gzip.compress(b"xyz" * 7)
    assert fast_gzip.gunzip(data) == gzip.decompress(data) == b"abc" * 1000 + b"xyz" * 7
    assert fast_gzip.gunzip_backend() in ("isal", "zlib")


def test_slope_zero_means_unscaled_as_in_itk(tmp_path):
    """scl_slope 0 is "unset" for ITK and nibabel alike: read as stored, on the fast path."""
    import nibabel as nib

    array = np.arange(4 * 3 * 2, dtype=np.int16).reshape(4, 3, 2) - 1000
    img = nib.Nifti1Image(array, np.diag([0.7, 0.7, 1.25, 1.0]))
    img.header["scl_slope"], img.header["scl_inter"] = 0.0, 0.0
    nib.save(img, str(tmp_path / "z.nii.gz"))
    assert_same_as_itk(tmp_path / "z.nii.gz")


def test_nifti2_is_refused_on_both_paths(tmp_path):
    """ITK (in SimpleITK) has no NIfTI-2 reader: the fast path, which takes its geometry from ITK, refuses too."""
    import nibabel as nib

    from DFM50NLib import io
    from DFM50NLib.errors import InputError
    from DFM50NLib.io import nifti_header

    array = np.arange(5 * 4 * 3, dtype=np.float32).reshape(5, 4, 3)
    nib.save(nib.Nifti2Image(array, np.diag([-0.8, 0.9, 2.0, 1.0])), str(tmp_path / "two.nii"))
    hdr = nifti_header.parse((tmp_path / "two.nii").read_bytes()[:540])
    assert (hdr.version, hdr.shape, hdr.dtype, hdr.vox_offset) == (2, (5, 4, 3), np.dtype("<f4"), 544)
    assert read_nifti_volume(tmp_path / "two.nii") is None
    with pytest.raises(InputError, match="Cannot read .*two.nii as an image"):
        io.read_volume(tmp_path / "two.nii")


def test_preparing_a_case_imports_neither_nibabel_nor_scipy_spatial(tmp_path):
    """nibabel (0.3 s to import) is for the reference geometry only, scipy.spatial (0.1 s) not needed at all:
    a cold score reads, masks, centres, cuts and measures without them."""
    import subprocess
    import sys

    ct = np.full((40, 40, 30), -1000, np.int16)
    mask = np.zeros(ct.shape, np.uint8)
    mask[15:25, 14:24, 10:18] = 1
    ct[mask > 0] = 30
    affine = np.diag([0.8, 0.8, 1.5, 1.0])
    write(tmp_path / "ct.nii.gz", ct, affine)
    write(tmp_path / "mask.nii.gz", mask, affine)
    code = (
        "import sys; from DFM50NLib.scoring.pipeline import prepare_case; "
        "p = prepare_case(sys.argv[1], sys.argv[2]); "
        "print(p.stats['mask_voxels'], p.diameters is not None, "
        "'nibabel' in sys.modules, 'scipy.spatial' in sys.modules)"
    )
    args = [str(tmp_path / "ct.nii.gz"), str(tmp_path / "mask.nii.gz")]
    out = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, check=True)
    assert out.stdout.split() == [str(10 * 10 * 8), "True", "False", "False"]
