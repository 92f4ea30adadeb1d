"""The ISA-L NIfTI reader gives exactly what ITK's reader gives (voxels, origin, spacing, direction)."""

from __future__ import annotations

import gzip

import numpy as np
import pytest

from DFM50NLib.geometry import fast_gzip
from DFM50NLib.geometry.fast_nifti import read_nifti_fast


def write(path, array, affine, slope_inter=None):
    import nibabel as nib

    img = nib.Nifti1Image(array, affine)
    if slope_inter is not None:
        img.header.set_slope_inter(*slope_inter)
    nib.save(img, str(path))
    return path


def assert_same_as_itk(path):
    import SimpleITK as sitk

    fast, itk = read_nifti_fast(path), sitk.ReadImage(str(path))
    assert fast is not None
    assert fast.GetPixelID() == itk.GetPixelID() and fast.GetSize() == itk.GetSize()
    assert fast.GetOrigin() == itk.GetOrigin() and fast.GetSpacing() == itk.GetSpacing()
    assert fast.GetDirection() == itk.GetDirection()
    assert np.array_equal(sitk.GetArrayViewFromImage(fast), sitk.GetArrayViewFromImage(itk))


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
    assert read_nifti_fast(write(tmp_path / "s.nii.gz", array, np.eye(4), slope_inter=(2.0, -1024.0))) is None
    assert read_nifti_fast(write(tmp_path / "t.nii.gz", np.ones((5, 5, 5, 2), np.int16), np.eye(4))) is None
    assert read_nifti_fast(tmp_path / "missing.nii.gz") is None
    (tmp_path / "junk.nii.gz").write_bytes(gzip.compress(b"not a nifti"))
    assert read_nifti_fast(tmp_path / "junk.nii.gz") is None


def test_without_isal_itk_reads(tmp_path, monkeypatch):
    from DFM50NLib.geometry import io

    path = write(tmp_path / "a.nii.gz", np.arange(60, dtype=np.int16).reshape(5, 4, 3), np.eye(4))
    monkeypatch.setattr(fast_gzip, "gunzip_backend", lambda: "zlib")
    assert read_nifti_fast(path) is None
    assert np.array_equal(io.read_volume(path).array, np.arange(60, dtype=np.int16).reshape(5, 4, 3))


def test_gunzip_multi_member_equals_zlib():
    data = gzip.compress(b"abc" * 1000) + gzip.compress(b"xyz" * 7)
    assert fast_gzip.gunzip(data) == gzip.decompress(data) == b"abc" * 1000 + b"xyz" * 7
    assert fast_gzip.gunzip_backend() in ("isal", "zlib")
