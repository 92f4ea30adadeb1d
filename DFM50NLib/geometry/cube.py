"""The 50 mm cube (METHOD.md §2.3-2.4): 50^3 samples 1 mm apart around the centre, along orientation-code axes.

CT: cubic B-spline on a sub-block of the CT (the cube's footprint plus `SPLINE_MARGIN` voxels, so the
spline prefilter sees enough context: its influence decays as |z1|^n, z1 = sqrt(3) - 2, 0.268^10 ~ 2e-6).
Only that block is read and copied. Where the block would run past the CT's border it is extended by
edge replication (the same as scipy's mode='nearest' on the whole image, to ~1e-5 HU).
Speed (512x512x600 CT): the prefilter along a CT axis that follows one cube axis is folded into a
(50 x L) weight matrix, so axis-aligned CTs (nearly every scanner) are three matrix products and CTs
rotated about one patient axis (gantry tilt, in-plane rotation) one product plus a 2-D spline; only
doubly oblique grids pay for a 3-D prefilter and map_coordinates.

"Outside" (value -1024 HU for the CT, 0 for the mask): a sample whose continuous CT index is below -0.5
or above n - 0.5 on any axis, i.e. outside the union of the CT's voxel cells (the image's extent as
Slicer draws it). A sample inside that extent is always interpolated.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from DFM50NLib.constants import CUBE_CENTER_INDEX, CUBE_SIZE, CUBE_SPACING_MM, OUTSIDE_HU
from DFM50NLib.geometry.volume import Volume

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
    from DFM50NLib.geometry.orientation import axis_matrix

    axes = axis_matrix(orientation) * CUBE_SPACING_MM
    m = np.eye(4)
    m[:3, :3] = axes.T
    m[:3, 3] = np.asarray(center_ras, dtype=float) - CUBE_CENTER_INDEX * axes.sum(axis=0)
    return m


def extract_cube(ct: Volume, pm, center_ras, orientation="LPS") -> Cube:
    """Sample the CT (cubic B-spline, -1024 HU outside) and the prepared mask (nearest, 0 outside)."""
    from DFM50NLib.geometry.orientation import canonical_order, normalise_code

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
    return Cube(
        np.ascontiguousarray(ct_cube),
        np.ascontiguousarray(mask_cube),
        cube_to_ras_matrix(center, code),
        code,
        "physical",
    )


def _sample_ct(ct: Volume, cube_to_ras) -> np.ndarray:
    """CT values at the 50^3 sample points (canonical cube order), -1024 HU outside the CT's extent.

    The work depends on how the CT grid sits relative to the cube (`_lone_axes`): three separable
    axes -> tensor product; one (a rotation about one patient axis: gantry tilt, in-plane rotation)
    -> that axis as a matrix product, the other two as 2-D splines; none -> 3-D map_coordinates.
    All three evaluate the same cubic B-spline of the same block (equal to ~1e-9 HU).
    """
    m = (ct.ras_to_ijk @ cube_to_ras)[:3]  # cube index -> continuous CT index
    lone = _lone_axes(m)
    if len(lone) == 3:
        return _sample_tensor(ct, m, dict(lone))
    if len(lone) == 1:
        return _sample_slabs(ct, m, *lone[0])
    return _sample_general(ct, m)


def _lone_axes(m, tol=1e-6):
    """Pairs (CT axis r, cube axis s) where CT index r depends on cube index s alone, and s moves only r."""
    big = np.abs(m[:, :3]) > tol * np.abs(m[:, :3]).max()
    return [(r, s) for r in range(3) for s in range(3) if big[r, s] and big[r].sum() == 1 and big[:, s].sum() == 1]


def _within(p, n):
    """Inside the CT's extent along an axis of n voxels (continuous index in [-0.5, n - 0.5])."""
    return (p >= -0.5) & (p <= n - 0.5)


def _grid_in_ct(m, ct_shape):
    """Every cube sample's continuous CT index (3 x 50^3, cube_to_ijk `m` applied to the cube grid) and whether
    it lies inside the CT (the samplers' test: outside is OUTSIDE_HU fill)."""
    idx = np.indices((CUBE_SIZE,) * 3, dtype=float).reshape(3, -1)
    ijk = m[:, :3] @ idx + m[:, 3:4]
    return ijk, np.all(_within(ijk, np.asarray(ct_shape[:3])[:, None]), axis=0)


def _sample_tensor(ct, m, axis_of):
    """CT axis r depends on cube axis axis_of[r] only: three (50 x L) weight-matrix products."""
    shape = ct.shape[:3]
    n = np.arange(CUBE_SIZE, dtype=float)
    pos = [m[r, axis_of[r]] * n + m[r, 3] for r in range(3)]  # CT index along axis r, per cube index
    ok = [_within(p, shape[r]) for r, p in enumerate(pos)]
    if not all(o.any() for o in ok):
        return np.full((CUBE_SIZE,) * 3, OUTSIDE_HU)
    pmin, pmax = [p[o].min() for p, o in zip(pos, ok)], [p[o].max() for p, o in zip(pos, ok)]
    vals, lo = _block(ct, pmin, pmax)
    for r in range(3):  # contract CT axis r (always the leading one), its cube axis appended at the end
        w = _weights(np.clip(pos[r], pmin[r], pmax[r]) - lo[r], vals.shape[0])
        vals = np.tensordot(vals, w, axes=([0], [1]))
    inside = ok[0][:, None, None] & ok[1][None, :, None] & ok[2][None, None, :]
    vals = np.where(inside, vals, OUTSIDE_HU)
    return vals.transpose(np.argsort([axis_of[r] for r in range(3)]))  # CT axis order -> cube axis order


def _sample_slabs(ct, m, r, s):
    """CT axis r depends on cube axis s only; CT axes p, q mix the other two cube axes (s1, s2).

    Contract r with a (50 x L) matrix (prefilter folded in), then evaluate the 2-D spline in (p, q) at
    the 50 x 50 points, which are the same for every slice along s: 16 taps instead of 64, and a 2-D
    instead of a 3-D prefilter on half as many values.
    """
    from scipy import ndimage

    shape = ct.shape[:3]
    p, q = [a for a in range(3) if a != r]
    s1, s2 = [a for a in range(3) if a != s]
    n = np.arange(CUBE_SIZE, dtype=float)
    pos_r = m[r, s] * n + m[r, 3]
    n1, n2 = np.meshgrid(n, n, indexing="ij")
    pos_pq = [(m[a, s1] * n1 + m[a, s2] * n2 + m[a, 3]).ravel() for a in (p, q)]
    ok_r = _within(pos_r, shape[r])
    ok_pq = _within(pos_pq[0], shape[p]) & _within(pos_pq[1], shape[q])
    if not (ok_r.any() and ok_pq.any()):
        return np.full((CUBE_SIZE,) * 3, OUTSIDE_HU)
    pmin, pmax = np.empty(3), np.empty(3)
    pmin[r], pmax[r] = pos_r[ok_r].min(), pos_r[ok_r].max()
    for a, x in zip((p, q), pos_pq):
        pmin[a], pmax[a] = x[ok_pq].min(), x[ok_pq].max()
    block, lo = _block(ct, pmin, pmax)
    w = _weights(np.clip(pos_r, pmin[r], pmax[r]) - lo[r], block.shape[r])
    g = np.tensordot(block, w, axes=([r], [1]))  # axes p, q, s
    for axis in (0, 1):
        g = ndimage.spline_filter1d(g, 3, axis=axis, mode="mirror")
    x, y = [np.clip(v, pmin[a], pmax[a]) - lo[a] for a, v in zip((p, q), pos_pq)]
    vals = _spline_2d_matrix(x, y, g.shape[:2]) @ g.reshape(-1, CUBE_SIZE)  # (2500, 50)
    vals = vals.reshape((CUBE_SIZE,) * 3)  # cube axes s1, s2, s
    inside = ok_pq.reshape(CUBE_SIZE, CUBE_SIZE)[:, :, None] & ok_r[None, None, :]
    return np.where(inside, vals, OUTSIDE_HU).transpose(np.argsort((s1, s2, s)))


def _spline_2d_matrix(x, y, shape):
    """Sparse (len(x), shape[0] * shape[1]) matrix: row n = the 16 bicubic B-spline taps at (x[n], y[n])."""
    from scipy import sparse

    ix, iy = np.floor(x).astype(int), np.floor(y).astype(int)
    wx, wy = _bspline_weights(x - ix), _bspline_weights(y - iy)
    taps = np.arange(-1, 3)
    cols = (ix[:, None, None] + taps[None, :, None]) * shape[1] + iy[:, None, None] + taps[None, None, :]
    data = wx[:, :, None] * wy[:, None, :]
    rows = np.arange(0, 16 * len(x) + 1, 16)
    return sparse.csr_matrix((data.ravel(), cols.ravel(), rows), shape=(len(x), shape[0] * shape[1]))


def _sample_general(ct, m):
    """Any affine grid: prefilter the whole block, then map_coordinates (64 taps a sample)."""
    from scipy import ndimage

    ijk, inside = _grid_in_ct(m, ct.shape)
    out = np.full(ijk.shape[1], OUTSIDE_HU, dtype=float)
    if inside.any():
        pts = ijk[:, inside]
        block, lo = _block(ct, pts.min(axis=1), pts.max(axis=1))
        coef = ndimage.spline_filter(block, order=3, mode="mirror")
        pts -= np.asarray(lo, float)[:, None]
        out[inside] = ndimage.map_coordinates(coef, pts, order=3, prefilter=False, mode="mirror")
    return out.reshape((CUBE_SIZE,) * 3)


def _block(ct: Volume, pmin, pmax):
    """The CT block (float64) around [pmin, pmax] (continuous CT indices), and its start index.

    The block reaches SPLINE_MARGIN voxels beyond the samples, so that its B-spline coefficients near
    the samples are those of the whole image; beyond the CT's border it is filled by edge replication.
    Only this block is copied from the CT.
    """
    shape = np.asarray(ct.shape[:3])
    want_lo = np.floor(np.asarray(pmin)).astype(int) - SPLINE_MARGIN
    want_hi = np.floor(np.asarray(pmax)).astype(int) + SPLINE_MARGIN + 2
    lo, hi = np.maximum(want_lo, 0), np.minimum(want_hi, shape)
    block = np.asarray(ct.array[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]], dtype=float)
    pad = [(int(a), int(b)) for a, b in zip(lo - want_lo, want_hi - hi)]
    if any(a or b for a, b in pad):
        block = np.pad(block, pad, mode="edge")
    return block, want_lo


@functools.lru_cache(maxsize=32)
def _prefilter_matrix(length) -> np.ndarray:
    """(length, length) matrix of the cubic B-spline prefilter along one axis, mirror boundaries.

    Exactly what `ndimage.spline_filter1d` does to a line (column j = the filtered unit vector j), so
    it can be folded into a sampling weight matrix instead of filtering the whole block.
    """
    from scipy import ndimage

    mat = ndimage.spline_filter1d(np.eye(length), 3, axis=0, mode="mirror")
    mat.setflags(write=False)
    return mat


def _weights(x, length) -> np.ndarray:
    """(len(x), length) matrix taking raw block values along one axis to spline values at positions x."""
    return _bspline_matrix(x, length) @ _prefilter_matrix(length)


def _bspline_weights(t) -> np.ndarray:
    """(len(t), 4) cubic B-spline weights of the knots floor - 1 ... floor + 2, for fractions t in [0, 1)."""
    return np.stack([(1 - t) ** 3, 3 * t**3 - 6 * t**2 + 4, -3 * t**3 + 3 * t**2 + 3 * t + 1, t**3], axis=1) / 6.0


def _bspline_matrix(x, length) -> np.ndarray:
    """(len(x), length) matrix of cubic B-spline weights: row n interpolates at position x[n]."""
    base = np.floor(x).astype(int)
    w = _bspline_weights(x - base)
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


def fill_fraction(ct: Volume, cube_to_ras) -> float:
    """Share of the cube's samples outside the CT's extent, i.e. OUTSIDE_HU fill (the samplers' own test)."""
    _, inside = _grid_in_ct((ct.ras_to_ijk @ cube_to_ras)[:3], ct.shape)
    return 1.0 - float(inside.mean())


def cube_stats(cube: Cube, pm) -> dict:
    """Mask samples in the cube; share of the lesion inside it; whether the mask reaches a cube face.

    coverage = CT-grid lesion voxels whose centres lie inside the cube's extent (continuous cube index in
    [-0.5, 49.5] on every axis) / all lesion voxels. Exact on the CT grid: 1.0 for a lesion fully inside.
    The part of the lesion that lay outside the CT (`pm.outside_share`, cut off on the way to the CT grid)
    counts as not seen: coverage = that ratio x (1 - outside_share).
    """
    ijk = np.argwhere(pm.volume.array)
    world = pm.volume.ijk_to_world(ijk)
    inv = np.linalg.inv(cube.cube_to_ras)
    c = world @ inv[:3, :3].T + inv[:3, 3]
    inside = np.all((c >= -0.5) & (c <= CUBE_SIZE - 0.5), axis=1)
    coverage = float(inside.sum()) / max(len(ijk), 1) * (1.0 - float(pm.outside_share))
    m = cube.mask
    faces = (m[0], m[-1], m[:, 0], m[:, -1], m[:, :, 0], m[:, :, -1])
    return {
        "cube_mask_voxels": int(m.sum(dtype=np.int64)),
        "coverage": coverage,
        "touches_border": bool(any(f.any() for f in faces)),
    }
