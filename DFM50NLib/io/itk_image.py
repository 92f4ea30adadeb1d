"""NIfTI, NRRD and MetaImage through SimpleITK: reading as a RAS `Volume` without copying, and writing atomically.

SimpleITK's LPS geometry is converted to RAS here, once. The voxel array is a read-only view of SimpleITK's
buffer (``[k, j, i]`` transposed to ``[i, j, k]``), not a copy: a 512x512x600 CT costs its file size once.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

import DFM50NLib.io.integrity as integrity
from DFM50NLib import atomic
from DFM50NLib.errors import InputError
from DFM50NLib.geometry.volume import RAS_TO_LPS, Volume
from DFM50NLib.io.dicom_series import read_dicom_series
from DFM50NLib.io.filenames import WRITE_SUFFIXES, file_stem


def read_itk(path, series_uid=None):
    import SimpleITK as sitk

    p = Path(path)
    if not p.exists():
        raise InputError(f"File not found: {p}. Check the path (and the working folder for relative paths).")
    if p.is_dir():
        return read_dicom_series(p, series_uid)
    integrity.check_image_file(p)  # ITK zero-fills what is missing: inflate and check the whole stream first
    try:
        return sitk.ReadImage(str(p))
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[-1] if str(exc).strip() else ""
        raise InputError(
            f"Cannot read {p} as an image ({first}). Supported: NIfTI (.nii, .nii.gz), NRRD "
            "(.nrrd, .nhdr), MetaImage (.mha, .mhd) and folders holding a DICOM series."
        ) from None


class _KeepAlive:
    """Array-interface wrapper whose only job is to hold the SimpleITK image the view points into."""

    def __init__(self, view, owner):
        self.__array_interface__ = view.__array_interface__
        self._view, self._owner = view, owner


def to_volume(img, path) -> Volume:
    """SimpleITK image (LPS, [k, j, i]) -> Volume (RAS, [i, j, k]) without copying the voxels."""
    import SimpleITK as sitk

    dim = img.GetDimension()
    size = tuple(img.GetSize())
    if dim == 4 and size[3] == 1:  # a 3-D image stored with a trailing time axis of length 1
        img = img[:, :, :, 0]
        dim, size = 3, size[:3]
    if dim != 3 or min(size) < 1:
        what = "2-D" if dim == 2 else f"{dim}-D"
        raise InputError(
            f"{path}: is a {what} image of size {size}; DFM50N needs one 3-D volume "
            "(a CT series or a lesion mask with at least one voxel along each axis)."
        )
    view = sitk.GetArrayViewFromImage(img)
    array = np.asarray(_KeepAlive(view, img)).T  # [i, j, k], read-only, shares the image buffer
    m = np.eye(4)
    m[:3, :3] = np.asarray(img.GetDirection(), dtype=float).reshape(3, 3) * np.asarray(img.GetSpacing())[None, :]
    m[:3, 3] = img.GetOrigin()
    return Volume(array, RAS_TO_LPS @ m, name=file_stem(path), meta={"path": str(path)})


def write_volume(vol: Volume, path) -> Path:
    """Write `vol` atomically (format from the suffix: .nii.gz, .nii, .nrrd, .mha) with its RAS geometry.

    The file's geometry is the volume's own, so audit cubes overlay the CT in Slicer / ITK-SNAP.
    """
    import SimpleITK as sitk

    path = Path(path)
    if not str(path).lower().endswith(WRITE_SUFFIXES):
        raise InputError(f"Cannot write {path}: use one of {', '.join(WRITE_SUFFIXES)}.")
    img = to_sitk(vol)
    with atomic.atomic_path(path) as tmp:
        sitk.WriteImage(img, str(tmp), useCompression=not str(path).lower().endswith(".nii"))
    return path


def to_sitk(vol: Volume):
    """`Volume` -> SimpleITK image with LPS origin/spacing/direction (copies the voxels once)."""
    import SimpleITK as sitk

    a = np.asarray(vol.array)
    if a.ndim != 3:
        raise InputError(f"Only 3-D volumes can be written, got shape {a.shape}.")
    if a.dtype == bool:
        a = a.astype(np.uint8)
    elif a.dtype == np.float16:
        a = a.astype(np.float32)
    img = sitk.GetImageFromArray(np.ascontiguousarray(a.T))
    lps = RAS_TO_LPS @ vol.ijk_to_ras
    spacing = np.linalg.norm(lps[:3, :3], axis=0)
    img.SetSpacing([float(s) for s in spacing])
    img.SetOrigin([float(v) for v in lps[:3, 3]])
    img.SetDirection([float(v) for v in (lps[:3, :3] / spacing[None, :]).ravel()])
    return img
