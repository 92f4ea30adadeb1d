"""The 50 mm cube (SPEC §2.3-2.4): 50^3 samples 1 mm apart around the centre, along orientation-code axes.

CT: cubic B-spline on a sub-block of the CT (the cube's footprint plus `SPLINE_MARGIN` voxels, so the
spline prefilter sees enough context; the prefilter's influence decays as 0.268^n, 10 voxels ~ 2e-6).
Only that block is read and copied. Where the block would run past the CT's border it is extended by
edge replication (the same as scipy's mode='nearest' on the whole image, to ~1e-5 HU).
Axis-aligned CTs (direction a signed permutation: nearly every scanner) are sampled as a tensor product
of three 50 x L weight matrices (~25 ms for a 512x512x600 CT); oblique ones with map_coordinates.

"Outside" (value -1024 HU for the CT, 0 for the mask): a sample whose continuous CT index is below -0.5
or above n - 0.5 on any axis, i.e. outside the union of the CT's voxel cells (the image's extent as
Slicer draws it). A sample inside that extent is always interpolated.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .constants import CUBE_CENTER_INDEX, CUBE_SIZE, CUBE_SPACING_MM, OUTSIDE_HU
from .volume import Volume

SPLINE_MARGIN = 10  # CT voxels of context around the cube's footprint for the spline prefilter


@dataclass
class Cube:
    ct: np.ndarray  # float32 (50, 50, 50) HU, axes in orientation-code order
    mask: np.ndarray  # uint8 (50, 50, 50)
    cube_to_ras: np.ndarray  # 4x4: cube sample index (a, b, c) -> RAS mm
    orientation: str
    geometry: str = "physical"

    def ct_volume(self) -> Volume:
        return Volume(self.ct, self.cube_to_ras, name="ct_50cube", meta={"orientation": self.orientation})

    def mask_volume(self) -> Volume:
        return Volume(self.mask, self.cube_to_ras, name="mask_50cube", meta={"orientation": self.orientation})


def cube_to_ras_matrix(center_ras, orientation="LPS") -> np.ndarray:
    """RAS(a, b, c) = centre + (a - 25) e0 + (b - 25) e1 + (c - 25) e2, e_n = the code's n-th axis (1 mm)."""
    from .orientation import axis_matrix

    axes = axis_matrix(orientation) * CUBE_SPACING_MM
    m = np.eye(4)
    m[:3, :3] = axes.T
    m[:3, 3] = np.asarray(center_ras, dtype=float) - CUBE_CENTER_INDEX * axes.sum(axis=0)
    return m


def extract_cube(ct: Volume, pm, center_ras, orientation="LPS") -> Cube:
    """Sample the CT (cubic B-spline, -1024 HU outside) and the prepared mask (nearest, 0 outside)."""
    from .orientation import canonical_order, normalise_code

    code = normalise_code(orientation)
    center = np.asarray(center_ras, dtype=float).reshape(3)
    # Sample in the canonical axis order (x, y, z letters) and transpose at the end: codes that are
    # permutations of each other (LPS / SPL) then give exactly transposed cubes, bit for bit.
    perm = canonical_order(code)
    canon = "".join(code[p] for p in perm)
    m = cube_to_ras_matrix(center, canon)
    ct_vals = _sample_ct(ct, m)
    mask_vals = _sample_mask(pm, m)
    to_code = tuple(int(v) for v in np.argsort(perm))  # code axis a = canonical axis to_code[a]
    shape = (CUBE_SIZE,) * 3
    ct_cube = ct_vals.reshape(shape).transpose(to_code).astype(np.float32)
    mask_cube = mask_vals.reshape(shape).transpose(to_code).astype(np.uint8)
    return Cube(np.ascontiguousarray(ct_cube), np.ascontiguousarray(mask_cube), cube_to_ras_matrix(center, code),
                code, "physical")


def _sample_ct(ct: Volume, cube_to_ras) -> np.ndarray:
    """CT values at the 50^3 sample points (canonical cube order), -1024 HU outside the CT's extent."""
    shape = np.asarray(ct.shape[:3])
    m = (ct.ras_to_ijk @ cube_to_ras)[:3]  # cube index -> continuous CT index
    axis_of = _separable_axes(m)
    n = np.arange(CUBE_SIZE, dtype=float)
    if axis_of is not None:  # CT axes parallel to patient axes (nearly every scanner): tensor-product path
        pos = [m[r, axis_of[r]] * n + m[r, 3] for r in range(3)]  # CT index along axis r, per cube index
        ok = [(p >= -0.5) & (p <= shape[r] - 0.5) for r, p in enumerate(pos)]
        if not all(o.any() for o in ok):
            return np.full((CUBE_SIZE,) * 3, OUTSIDE_HU)
        coef, lo = _coefficients(ct, [p[o].min() for p, o in zip(pos, ok)], [p[o].max() for p, o in zip(pos, ok)])
        vals = coef
        for r in range(3):  # contract CT axis r with its 50 x L B-spline weight matrix
            w = _bspline_matrix(np.clip(pos[r], -0.5, shape[r] - 0.5) - lo[r], coef.shape[r])
            vals = np.tensordot(vals, w, axes=([0], [1]))  # consumed axis r, new axis appended
        # vals axes: CT axis 0, 1, 2 (each now 50 cube samples) -> canonical cube axes
        inside = ok[0][:, None, None] & ok[1][None, :, None] & ok[2][None, None, :]
        vals = np.where(inside, vals, OUTSIDE_HU)
        return vals.transpose(np.argsort(axis_of))
    idx = np.indices((CUBE_SIZE,) * 3, dtype=float).reshape(3, -1)
    ijk = m[:, :3] @ idx + m[:, 3:4]
    inside = np.all((ijk >= -0.5) & (ijk <= shape[:, None] - 0.5), axis=0)
    out = np.full(ijk.shape[1], OUTSIDE_HU, dtype=float)
    if inside.any():
        pts = ijk[:, inside]
        coef, lo = _coefficients(ct, pts.min(axis=1), pts.max(axis=1))
        pts = np.clip(pts, -0.5, shape[:, None] - 0.5) - np.asarray(lo, float)[:, None]
        out[inside] = _map_coordinates(coef, pts)
    return out.reshape((CUBE_SIZE,) * 3)


def _map_coordinates(coef, pts):
    from scipy import ndimage

    return ndimage.map_coordinates(coef, pts, order=3, prefilter=False, mode="mirror")


def _separable_axes(m, tol=1e-6):
    """For each CT axis r, the one cube axis it depends on; None if the CT grid is oblique to the cube."""
    a = np.abs(m[:, :3])
    big = a > tol * a.max()
    if not (np.all(big.sum(axis=1) == 1) and np.all(big.sum(axis=0) == 1)):
        return None
    return tuple(int(np.flatnonzero(big[r])[0]) for r in range(3))


def _coefficients(ct: Volume, pmin, pmax):
    """B-spline coefficients of the CT block around [pmin, pmax] (continuous CT indices), and its start.

    The block reaches SPLINE_MARGIN voxels beyond the samples; beyond the CT's border it is filled by
    edge replication. Only this block is copied from the CT.
    """
    from scipy import ndimage

    shape = np.asarray(ct.shape[:3])
    want_lo = np.floor(np.asarray(pmin)).astype(int) - SPLINE_MARGIN
    want_hi = np.floor(np.asarray(pmax)).astype(int) + SPLINE_MARGIN + 2
    lo, hi = np.maximum(want_lo, 0), np.minimum(want_hi, shape)
    block = np.asarray(ct.array[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]], dtype=float)
    pad = [(int(a), int(b)) for a, b in zip(lo - want_lo, want_hi - hi)]
    if any(a or b for a, b in pad):
        block = np.pad(block, pad, mode="edge")
    return ndimage.spline_filter(block, order=3, mode="mirror"), want_lo


def _bspline_matrix(x, length) -> np.ndarray:
    """(len(x), length) matrix of cubic B-spline weights: row n interpolates at position x[n]."""
    base = np.floor(x).astype(int)
    t = x - base
    w = np.stack([(1 - t) ** 3, 3 * t**3 - 6 * t**2 + 4, -3 * t**3 + 3 * t**2 + 3 * t + 1, t**3], axis=1) / 6.0
    mat = np.zeros((len(x), length))
    rows = np.arange(len(x))
    for k in range(4):
        mat[rows, base - 1 + k] = w[:, k]
    return mat


def _sample_mask(pm, cube_to_ras) -> np.ndarray:
    a = pm.volume.array
    p = (pm.volume.ras_to_ijk @ cube_to_ras)[:3]
    idx = np.indices((CUBE_SIZE,) * 3, dtype=float).reshape(3, -1)
    ijk = np.floor(p[:, :3] @ idx + p[:, 3:4] + 0.5).astype(np.int64)  # nearest; halves round up
    ok = np.all((ijk >= 0) & (ijk < np.asarray(a.shape)[:, None]), axis=0)
    out = np.zeros(ijk.shape[1], dtype=np.uint8)
    out[ok] = a[ijk[0, ok], ijk[1, ok], ijk[2, ok]]
    return out


def cube_stats(cube: Cube, pm) -> dict:
    """Mask samples in the cube; share of the lesion inside it; whether the mask reaches a cube face.

    coverage = CT-grid lesion voxels whose centres lie inside the cube's extent (continuous cube index in
    [-0.5, 49.5] on every axis) / all lesion voxels. Exact on the CT grid: 1.0 for a lesion fully inside.
    """
    ijk = np.argwhere(pm.volume.array)
    world = pm.volume.ijk_to_world(ijk)
    inv = np.linalg.inv(cube.cube_to_ras)
    c = world @ inv[:3, :3].T + inv[:3, 3]
    inside = np.all((c >= -0.5) & (c <= CUBE_SIZE - 0.5), axis=1)
    coverage = float(inside.sum()) / max(len(ijk), 1)
    m = cube.mask
    faces = (m[0], m[-1], m[:, 0], m[:, -1], m[:, :, 0], m[:, :, -1])
    return {"cube_mask_voxels": int(m.sum(dtype=np.int64)), "coverage": coverage,
            "touches_border": bool(any(f.any() for f in faces))}
