"""Lesion centre in RAS mm (METHOD.md §2.2): distance-transform peak, physical centroid, or a given point.

dt_peak tie-break (documented, deterministic, independent of how the file orders its voxels): among the
voxels whose distance to the background equals the maximum (to 1e-9 relative, so that summation order
cannot split a tie), take the one whose centre is nearest (in mm) to the mask's centroid (1e-6 mm); if
still tied, the one with the smallest world coordinate R, then A, then S.
"""

from __future__ import annotations

import warnings

import numpy as np

from DFM50NLib.constants import CUBE_CENTER_INDEX, CUBE_SPACING_MM
from DFM50NLib.errors import DFM50NWarning, InputError


def find_center(pm, method: str = "dt_peak", point_ras=None) -> np.ndarray:
    """Centre of the prepared mask `pm` as a RAS point (3,), by `method` (dt_peak | centroid | point)."""
    if method == "dt_peak":
        return _dt_peak(pm)
    if method == "centroid":
        return centroid(pm)
    if method == "point":
        return _check_point(pm, point_ras)
    raise InputError(f"Unknown centre method {method!r}: use dt_peak, centroid or point.")


def centroid(pm) -> np.ndarray:
    """Mean of the mask voxel centres, in physical space (the affine map commutes with the mean)."""
    ijk = np.argwhere(pm.volume.array)
    return pm.volume.ijk_to_world(ijk.mean(axis=0))


def _dt_peak(pm) -> np.ndarray:
    from scipy import ndimage

    a = pm.volume.array
    padded = np.pad(a != 0, 1)  # background all round: a lesion cut by the crop/CT border still has an edge
    dt = ndimage.distance_transform_edt(padded, sampling=pm.volume.spacing)
    peaks = np.argwhere(dt >= dt.max() * (1 - 1e-9)) - 1  # back to crop indices
    world = pm.volume.ijk_to_world(peaks.astype(float))
    if len(peaks) > 1:
        d = np.linalg.norm(world - centroid(pm), axis=1)
        world = world[d <= d.min() + 1e-6]
        key = np.round(world, 6)
        world = world[np.lexsort((key[:, 2], key[:, 1], key[:, 0]))]
    return world[0]


def _check_point(pm, point_ras) -> np.ndarray:
    if point_ras is None:
        raise InputError("Centre method 'point' needs a point: give R A S in mm.")
    p = np.asarray(point_ras, dtype=float).reshape(-1)
    if p.shape != (3,) or not np.all(np.isfinite(p)):
        raise InputError(f"The centre point must be 3 finite RAS coordinates in mm, got {point_ras!r}.")
    ijk = np.argwhere(pm.volume.array)
    world = pm.volume.ijk_to_world(ijk)
    # Chebyshev distance along the patient axes: the cube spans -25..+24 mm on each of them
    cheb = np.abs(world - p).max(axis=1).min()
    half = CUBE_CENTER_INDEX * CUBE_SPACING_MM
    if cheb > half:
        raise InputError(
            f"The given centre point {p.round(2).tolist()} (RAS mm) is {cheb:.1f} mm from the nearest "
            f"lesion voxel along some axis: the {2 * half:.0f} mm cube around it would not contain the "
            "lesion. Check the point's coordinates (RAS, not LPS?)."
        )
    inside = np.round(pm.volume.world_to_ijk(p)).astype(int)
    a = pm.volume.array
    if not (np.all(inside >= 0) and np.all(inside < a.shape) and a[tuple(inside)]):
        dist = float(np.linalg.norm(world - p, axis=1).min())
        warnings.warn(
            f"The given centre point lies outside the lesion mask ({dist:.1f} mm from the nearest lesion voxel).",
            DFM50NWarning,
            stacklevel=3,
        )
    return p
