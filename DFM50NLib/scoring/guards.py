"""Cheap checks on a prepared case for inputs the tool would otherwise score without understanding them
(METHOD.md §2.11): a CT too thin for a 50 mm cube is refused; a cube that is mostly fill, a lesion on air, a
lesion cut by the scan's edge or outside the CT, and a lesion of a few voxels are scored with a warning.

Each check is a few array operations on what `prepare_case` already holds (no second read of the CT).
"""

from __future__ import annotations

import numpy as np

from DFM50NLib.constants import (
    CT_MIN_EXTENT_MM,
    CT_MIN_VOXELS_PER_AXIS,
    CUBE_FILL_WARN_SHARE,
    CUBE_SIZE,
    LESION_MEAN_HU_WARN,
    LESION_MIN_VOLUME_MM3,
    OUTSIDE_HU,
)
from DFM50NLib.errors import InputError


def check_ct_extent(shape, spacing, name, fill=OUTSIDE_HU) -> None:
    """Refuse a "CT" that is a few slices thick: most of any cube around a lesion would be fill."""
    for axis, (n, s) in enumerate(zip(shape[:3], spacing[:3])):
        extent = float(n) * float(s)
        if n < CT_MIN_VOXELS_PER_AXIS or extent < CT_MIN_EXTENT_MM:
            raise InputError(
                f"{name}: the CT has {n} voxel(s) of {float(s):g} mm along axis {'ijk'[axis]} ({extent:g} mm); "
                f"a 50 mm cube needs a CT of at least {CT_MIN_VOXELS_PER_AXIS} voxels and {CT_MIN_EXTENT_MM:g} mm "
                f"along every axis (here about {_fill_share_of(extent):.0%} of the cube would be "
                f"{fill:g} HU fill). Give the whole CT series, not a single slice or a thin slab."
            )


def _fill_share_of(extent_mm) -> float:
    return max(0.0, 1.0 - float(extent_mm) / CUBE_SIZE)


def fill_warning(share, padded_with=OUTSIDE_HU) -> list:
    if share <= CUBE_FILL_WARN_SHARE:
        return []
    return [
        f"The 50 mm cube runs off the scan: {share:.1%} of its samples lie outside the CT and are {padded_with:g} "
        f"HU fill (warned above {CUBE_FILL_WARN_SHARE:.0%}). The network sees an artificial edge; the lesion is "
        "near the end of the scanned range or the edge of the field of view."
    ]


def lesion_warnings(name, volume_mm3, voxels, mean_hu) -> list:
    """A lesion of a few voxels, or one whose voxels are mostly air, is not what the model was built on."""
    notes = []
    if volume_mm3 < LESION_MIN_VOLUME_MM3:
        notes.append(
            f"The lesion {name} is tiny: {voxels} voxel(s), {volume_mm3:.1f} mm3, less than a 5 mm sphere "
            f"({LESION_MIN_VOLUME_MM3:g} mm3). A stray click or a wrong label? DFM50N was developed on "
            "cT1-2 lung cancers; its score is not meaningful for a lesion this small."
        )
    if mean_hu is not None and mean_hu < LESION_MEAN_HU_WARN:
        notes.append(
            f"The mean CT value under the lesion {name} is {mean_hu:.0f} HU (below {LESION_MEAN_HU_WARN:g} HU): "
            "the mask lies mostly on air or lung, not on a solid tumour. Check that the mask belongs to this CT "
            "and is placed correctly."
        )
    return notes


def physical_warnings(ct, pm, fill_share, name) -> list:
    """Warnings of the physical geometry: cube fill, the lesion cut by the scan or outside it, tiny, on air."""
    lo = np.asarray(pm.offset_ijk)
    box = pm.volume.array.astype(bool)
    hi = lo + np.asarray(box.shape)
    values = np.asarray(ct.array[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]])[box]
    notes = fill_warning(fill_share)
    notes += lesion_warnings(name, pm.volume_mm3, pm.voxels, float(values.mean()) if values.size else None)
    notes += edge_warning(name, lo, hi, ct.shape[:3])
    if pm.outside_share > 0:
        notes.append(
            f"{pm.outside_share:.1%} of the lesion {name} lies outside the CT's field of view and was cut off; "
            "the coverage counts that part as not seen. Check that the mask belongs to this CT."
        )
    return notes


def edge_warning(name, lo, hi, shape) -> list:
    """The lesion's index box [lo, hi) reaches a face of the scan's voxel array: it may continue beyond it."""
    edges = [f"{'ijk'[a]} = {0 if lo[a] == 0 else n - 1}" for a, n in enumerate(shape) if lo[a] == 0 or hi[a] == n]
    if not edges:
        return []
    return [
        f"The lesion {name} reaches the edge of the scan (voxel index {', '.join(edges)} of a "
        f"{' x '.join(map(str, shape))} CT): it may continue beyond the scanned range, so its volume, centre "
        "and diameters may be wrong."
    ]


def reference_fill_share(center_ijk, shape, half=CUBE_SIZE // 2) -> float:
    """Share of the upstream crop [c - 25, c + 25) that runs off the zoomed array (padded, METHOD.md §3)."""
    inside = 1.0
    for c, n in zip(center_ijk, shape):
        inside *= max(0, min(c + half, n) - max(c - half, 0)) / (2 * half)
    return 1.0 - inside
