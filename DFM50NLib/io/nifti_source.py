"""Reading a NIfTI pair for the reference (upstream) geometry: header with nibabel, voxels as stored.

The voxels stay in the file's dtype inside a `geometry.voxel_source.VoxelSource`, which scales them slab by
slab exactly as nibabel's ``get_fdata()`` would (float64 of a whole CT would cost 630 MB).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from DFM50NLib.errors import InputError
from DFM50NLib.geometry.voxel_source import VoxelSource

if TYPE_CHECKING:
    from DFM50NLib.geometry.reference import ReferenceCube


def read_nifti_source(path, other=None) -> VoxelSource:
    """Header with nibabel, voxels straight from the (ISA-L) gunzipped bytes; anything else via nib.load."""
    import nibabel as nib

    from DFM50NLib.io.fast_gzip import read_maybe_gzip

    try:
        buf = read_maybe_gzip(path)
        img = _single_file_image(buf)
        if img is None:
            img = nib.load(str(path))
            raw = np.asanyarray(img.dataobj.get_unscaled())
        else:
            count = int(np.prod(img.shape))
            raw = np.frombuffer(buf, dtype=img.dataobj.dtype, count=count, offset=int(img.dataobj.offset))
            raw = raw.reshape(img.shape, order="F")
    except FileNotFoundError as exc:
        raise InputError(f"File not found: {exc.filename}.") from None
    except InputError:
        raise
    except Exception as exc:  # nibabel raises several types for files it cannot parse
        pair = f"{path} / {other}" if other is not None else str(path)
        raise InputError(
            f"Reference geometry reads NIfTI with nibabel, as the upstream scripts do; cannot read "
            f"{pair}: {exc}. Convert the images to NIfTI first."
        ) from None
    proxy = img.dataobj
    slope, inter = getattr(proxy, "slope", None), getattr(proxy, "inter", None)
    if slope is not None and inter is not None and float(slope) == 1.0 and float(inter) == 0.0:
        slope = inter = None  # apply_read_scaling returns the raw array unchanged: plain float64 cast
    return VoxelSource(raw, slope, inter, tuple(img.header.get_zooms()[:3]), img.affine)


def _single_file_image(buf: bytes):
    """A nibabel NIfTI-1/2 single-file image over `buf` (data not read), or None for other formats."""
    import nibabel as nib

    if len(buf) < 4:
        return None
    size = int.from_bytes(buf[:4], "little")
    size_be = int.from_bytes(buf[:4], "big")
    if 348 in (size, size_be) and buf[344:348] == b"n+1\x00":
        return nib.Nifti1Image.from_bytes(buf)
    if 540 in (size, size_be) and buf[4:8] == b"n+2\x00":
        return nib.Nifti2Image.from_bytes(buf)
    return None


def reference_cube_from_files(
    image_path, mask_path, center_method="dt_peak", label=None, check_ct=None
) -> ReferenceCube:
    """Read both NIfTI files with nibabel and cut the upstream cube (METHOD.md §3). `check_ct(source)` runs on
    the CT as read, before any arithmetic (the caller's guards)."""
    from DFM50NLib.geometry.reference import reference_cube

    ct = read_nifti_source(image_path, mask_path)
    if check_ct is not None:
        check_ct(ct)
    mask = read_nifti_source(mask_path, image_path)
    if len(ct.shape) != 3 or len(mask.shape) != 3:
        raise InputError(f"Reference geometry needs 3-D NIfTI files; got shapes {ct.shape} and {mask.shape}.")
    if ct.shape != mask.shape:
        raise InputError(
            f"Reference geometry needs the mask on the CT's voxel grid (the upstream scripts "
            f"assume it); CT shape {ct.shape}, mask shape {mask.shape}. Resample the mask onto "
            "the CT first, or use the default physical geometry."
        )
    ref = reference_cube(ct, mask, ct.zooms, mask.zooms, center_method, label, affine=ct.affine)
    ref.stats.update(
        ct_range=ct.value_range(),
        ct_shape=ct.shape,
        mask_box=lesion_box(mask, label),
    )
    return ref


def lesion_box(mask: VoxelSource, label=None) -> tuple:
    """Index box [lo, hi) of the mask's lesion voxels (> 0, or == label) on the file's grid, one slab at a time."""
    lo, hi = np.array(mask.shape, int), np.zeros(3, int)
    for k0 in range(0, mask.shape[2], 16):
        slab = mask.native_slab(k0, min(k0 + 16, mask.shape[2]))
        hit = np.argwhere(slab > 0 if label is None else slab == label)
        if len(hit):
            lo, hi = np.minimum(lo, hit.min(axis=0) + (0, 0, k0)), np.maximum(hi, hit.max(axis=0) + (1, 1, k0 + 1))
    return tuple(int(v) for v in lo), tuple(int(v) for v in hi)
