"""What the voxels of a file may hold: finite numbers, whole-number labels, plausible CT Hounsfield units.

Checked by every reader after the file is read, so a NaN, a probability map or an unrescaled export is refused
(or warned about) whatever the format.
"""

from __future__ import annotations

import numpy as np

from DFM50NLib.constants import VOXEL_SPACING_RANGE_MM
from DFM50NLib.errors import InputError
from DFM50NLib.geometry.volume import Volume

FINITE_CHECK_SLAB = 16  # slices per chunk when looking for NaN/inf (bounded temporary memory)


def check_ct_intensities(vol: Volume) -> list:
    """Warnings (not errors) when the values do not look like CT Hounsfield units, e.g. an MR or raw counts."""
    a = vol.array
    return hu_range_warnings(float(np.min(a)), float(np.max(a)))


def hu_range_warnings(lo, hi) -> list:
    """The range check of `check_ct_intensities` on a known value range (reference mode computes it itself)."""
    # CT HU: air/lung well below -200 in any chest CT, nothing denser than lung below -500 is implausible,
    # and values above ~4000 are beyond the HU scale (raw detector counts, an unrescaled export)
    if lo > -200 or hi < -500 or hi > 4000:
        return [
            f"The image values range from {lo:g} to {hi:g}, which does not look like a CT in Hounsfield "
            "units (air about -1000, soft tissue 0-100). Check that it is a CT with rescale "
            "slope/intercept applied; the score is only meaningful for CT HU."
        ]
    return []


def check_spacing(vol: Volume, path):
    """Every format: a voxel edge of 0, NaN or an absurd size is a broken header, never a CT (refused with it)."""
    low, high = VOXEL_SPACING_RANGE_MM
    spacing = vol.spacing
    for axis, size in enumerate(spacing):
        if not (np.isfinite(size) and low <= size <= high):
            raise InputError(
                f"{path}: its voxel size along axis {'ijk'[axis]} is {size:g} mm; a CT voxel is between {low:g} "
                f"and {high:g} mm. The file's geometry is damaged: export the image again."
            )


def check_finite(array, path):
    if not np.issubdtype(array.dtype, np.floating):
        return
    for k0 in range(0, array.shape[2], FINITE_CHECK_SLAB):
        slab = array[:, :, k0 : k0 + FINITE_CHECK_SLAB]
        if not np.isfinite(slab).all():
            bad = np.argwhere(~np.isfinite(slab))[0] + (0, 0, k0)
            raise InputError(
                f"{path}: contains NaN or infinite voxel values (first at ijk {tuple(int(v) for v in bad)}"
                "). Re-export the image without NaN (e.g. fill with -1024 HU outside the scan)."
            )


def check_finite_nifti(path):
    import nibabel as nib

    data = np.asanyarray(nib.load(str(path)).dataobj)
    if data.ndim >= 3 and np.issubdtype(data.dtype, np.floating):
        check_finite(data.reshape(data.shape[:3]) if data.size == np.prod(data.shape[:3]) else data[..., 0], path)


def as_integer_labels(vol: Volume, path) -> Volume:
    a = vol.array
    if np.issubdtype(a.dtype, np.floating):
        # float label maps (e.g. from some converters) must still hold whole numbers
        for k0 in range(0, a.shape[2], FINITE_CHECK_SLAB):
            slab = a[:, :, k0 : k0 + FINITE_CHECK_SLAB]
            if np.any(slab != np.round(slab)):
                raise InputError(
                    f"{path}: the mask holds fractional values (a probability map?); give a label "
                    "map with integer values (threshold it first, e.g. at 0.5)."
                )
        a = a.astype(np.int32)
        return vol.with_array(a)
    if a.dtype == bool:
        return vol.with_array(a.astype(np.uint8))
    return vol
