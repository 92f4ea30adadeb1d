"""Closed polygons on one CT slice -> voxel masks, and where outlines cross (RTSTRUCT contours, rtstruct.py).

The even-odd fill is what DICOM's CLOSED_PLANAR contours mean for simple outlines, holes included. It is
wrong for an outline that crosses itself (a bow-tie: the nonzero-winding fill, what the hand drew, keeps
both lobes; even-odd can empty them) and for two parts of one ROI that overlap on a slice (their overlap
becomes a hole). `misfilled` counts the voxels those cases change, so the reader can refuse or warn.
"""

from __future__ import annotations

import numpy as np


def fill_even_odd(polygons_ij, lo, hi) -> np.ndarray:
    """Pixel centres (i, j) in [lo, hi) inside an odd number of polygon edges crossings -> uint8 [i, j] slab.

    Crossing number along each row j: an edge counts when it spans j half-open (y0 <= j < y1 or the
    reverse), so a vertex on the row is counted once; a centre is inside when an odd number of the
    crossings lie to its right. Summing crossings of all polygons is the even-odd union (holes).
    """
    return _fill(polygons_ij, lo, hi, nonzero=False)


def fill_nonzero(polygons_ij, lo, hi) -> np.ndarray:
    """As `fill_even_odd`, but a centre is inside when the signed crossings to its right do not cancel
    (nonzero winding): a self-crossing outline is filled as drawn."""
    return _fill(polygons_ij, lo, hi, nonzero=True)


def _fill(polygons_ij, lo, hi, nonzero) -> np.ndarray:
    e = _edges(polygons_ij)  # (m, 4): x0, y0, x1, y1
    x0, y0, x1, y1 = e.T
    rows = np.arange(lo[1], hi[1], dtype=float)
    cols = np.arange(lo[0], hi[0], dtype=float)
    out = np.zeros((len(cols), len(rows)), np.uint8)
    spans = (y0[None, :] <= rows[:, None]) != (y1[None, :] <= rows[:, None])  # (rows, edges)
    for r, j in enumerate(rows):
        sel = spans[r]
        if not sel.any():
            continue
        xs = x0[sel] + (j - y0[sel]) * (x1[sel] - x0[sel]) / (y1[sel] - y0[sel])
        order = np.argsort(xs, kind="stable")
        xs = xs[order]
        first_right = np.searchsorted(xs, cols, side="right")  # crossings strictly right of the centre
        if nonzero:
            up = np.where(y1[sel] > y0[sel], 1, -1)[order]
            winding = np.concatenate([np.cumsum(up[::-1])[::-1], [0]])
            out[:, r] = (winding[first_right] != 0).astype(np.uint8)
        else:
            out[:, r] = ((len(xs) - first_right) % 2).astype(np.uint8)
    return out


def _edges(polygons_ij) -> np.ndarray:
    return np.concatenate([np.concatenate([p, np.roll(p, -1, axis=0)], axis=1) for p in polygons_ij])


def crossings(polygons_ij, chunk=256) -> list:
    """(a, b, point) for every pair of outlines whose edges properly cross (a == b: an outline crosses itself).

    Proper crossing: the two edges' end points lie strictly on opposite sides of each other, so outlines
    that only touch at a vertex, and neighbouring edges of one outline, do not count. One entry per pair.
    """
    if not polygons_ij:
        return []
    e = _edges(polygons_ij)
    owner = np.concatenate([np.full(len(p), n) for n, p in enumerate(polygons_ij)])
    a, b = e[:, :2], e[:, 2:]
    found = {}
    for i0 in range(0, len(e), chunk):
        pa, pb = a[i0 : i0 + chunk, None], b[i0 : i0 + chunk, None]
        d1, d2 = _side(pa, pb, a[None]), _side(pa, pb, b[None])
        d3, d4 = _side(a[None], b[None], pa), _side(a[None], b[None], pb)
        hit = (d1 * d2 < 0) & (d3 * d4 < 0)
        hit &= np.arange(i0, i0 + len(pa))[:, None] < np.arange(len(e))[None, :]  # each pair of edges once
        for i, j in np.argwhere(hit):
            key = tuple(sorted((int(owner[i0 + i]), int(owner[j]))))
            if key not in found:
                found[key] = _intersection(a[i0 + i], b[i0 + i], a[j], b[j])
    return [(p, q, point) for (p, q), point in found.items()]


def _intersection(p, q, r, s) -> np.ndarray:
    """Where segment p-q meets segment r-s (they are known to cross)."""
    d, e = q - p, s - r
    t = ((r[0] - p[0]) * e[1] - (r[1] - p[1]) * e[0]) / (d[0] * e[1] - d[1] * e[0])
    return p + t * d


def _side(p, q, r, eps=1e-9):
    """Sign (with tolerance) of the cross product (q - p) x (r - p): which side of line p-q the point r is on."""
    v = (q[..., 0] - p[..., 0]) * (r[..., 1] - p[..., 1]) - (q[..., 1] - p[..., 1]) * (r[..., 0] - p[..., 0])
    return np.where(np.abs(v) < eps, 0.0, np.sign(v))


def misfilled(polygons_ij, pairs, lo, hi) -> int:
    """Voxels (in [lo, hi)) that the even-odd fill gets wrong because of the crossing `pairs`: a self-crossing
    outline's difference to its nonzero-winding fill, plus the overlap of two crossing outlines (a false hole)."""
    wrong = 0
    for a, b, _ in pairs:
        if a == b:
            wrong += int(np.sum(fill_even_odd([polygons_ij[a]], lo, hi) != fill_nonzero([polygons_ij[a]], lo, hi)))
        else:
            both = fill_nonzero([polygons_ij[a]], lo, hi) & fill_nonzero([polygons_ij[b]], lo, hi)
            wrong += int(both.sum())
    return wrong
