"""A window of ``scipy.ndimage.zoom(data, z, order, mode="constant")``, bit for bit, without zooming everything.

Why: the reference geometry (METHOD.md §3) needs 50³ samples of a zoom that upstream computes for the whole
CT in float64 (10 GB on a 512×512×300 CT). What scipy (≥ 1.6, ``grid_mode=False``) does, and what is
replicated here operation for operation:

- output shape ``int(round(n * z))``; per-axis step ``(n_in - 1) / (n_out - 1)`` (1.0 when n_out == 1);
  the input coordinate of output index k is ``float(k) * step``;
- ``mode="constant"``: a coordinate below 0 or above n_in - 1 gives cval (0); spline taps that run off the
  array are mirrored (``_get_spline_boundary_mode``: constant → mirror);
- order 3: the coefficients are ``spline_filter1d`` along axis 0, then 1, then 2 (float64, whole lines, so
  each coefficient depends on its whole line along the axis being filtered; taking full lines along each
  axis restricted to the other axes' needed range gives the same numbers); taps start at
  ``floor(cc) - 1``; weights from ``ni_splines.c``; the 64 products ``coeff * w0 * w1 * w2`` are summed in
  C order (last axis fastest), starting from 0.0;
- order 0: the sample at ``floor(cc + 0.5)``;
- all zoom factors exactly 1: scipy returns the input unchanged (gh-20999 early exit).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SLAB = 16  # slices along the last axis per prefilter pass over the input (memory: 2 × n0 × n1 × SLAB × 8 bytes)


def output_shape(shape, zoom) -> tuple:
    return tuple(int(round(n * z)) for n, z in zip(shape, zoom))


def is_identity(zoom) -> bool:
    """scipy.ndimage.zoom returns its input as is when every factor is exactly 1."""
    return all(z == 1 for z in zoom)


def steps(shape, zoom) -> np.ndarray:
    """Per-axis input step per output index, exactly as scipy computes it (grid_mode=False)."""
    out = np.array(output_shape(shape, zoom)) - 1
    nominal = np.array(shape) - 1
    return np.divide(nominal, out, out=np.ones_like(shape, dtype=np.float64), where=out != 0)


def _mirror(idx: int, n: int) -> int:
    """ni_interpolation.c map_coordinate, NI_EXTEND_MIRROR, on an integer tap index."""
    if n <= 1:
        return 0
    s2 = 2 * n - 2
    if idx < 0:
        idx = s2 * int(-idx / s2) + idx
        return idx + s2 if idx <= 1 - n else -idx
    if idx > n - 1:
        idx -= s2 * int(idx / s2)
        if idx >= n:
            idx = s2 - idx
    return idx


@dataclass
class AxisTaps:
    """For output indices k0..k1 on one axis: which are cval, the input taps and their weights."""

    zero: np.ndarray  # bool (m,)
    taps: np.ndarray  # int (m, order + 1), mirrored into [0, n_in)
    weights: np.ndarray | None  # float64 (m, 4) for order 3, None for order 0


def axis_taps(k0: int, k1: int, n_in: int, step: float, order: int) -> AxisTaps:
    cc = np.arange(k0, k1, dtype=np.float64) * step
    zero = (cc < 0) | (cc > n_in - 1)
    if order == 0:
        start = np.floor(cc + 0.5).astype(np.int64)
        taps = np.array([[_mirror(int(s), n_in)] for s in start], dtype=np.int64).reshape(-1, 1)
        weights = None
    elif order == 3:
        start = np.floor(cc).astype(np.int64) - 1
        taps = np.array([[_mirror(int(s) + h, n_in) for h in range(4)] for s in start], dtype=np.int64)
        taps = taps.reshape(-1, 4)
        x = cc - np.floor(cc)
        y, z = x, 1.0 - x
        w1 = (y * y * (y - 2.0) * 3.0 + 4.0) / 6.0
        w2 = (z * z * (z - 2.0) * 3.0 + 4.0) / 6.0
        w0 = z * z * z / 6.0
        w3 = 1.0 - w0
        w3 = w3 - w1
        w3 = w3 - w2
        weights = np.stack([w0, w1, w2, w3], axis=1)
    else:
        raise ValueError(f"order {order} is not replicated (0 and 3 only)")
    if zero.any() and (~zero).any():
        taps[zero] = taps[~zero].min()  # never read: keeps the gather in bounds
    elif zero.all():
        taps[:] = 0
    return AxisTaps(zero, taps, weights)


def spline_zoom_window(slabs, shape, zoom, window) -> np.ndarray:
    """Order-3 zoom values at output indices window = ((k0, k1), ...) per axis, float64, bit-identical to
    ``scipy.ndimage.zoom(data, zoom, order=3)[k0:k1, ...]`` where ``slabs(a, b)`` returns ``data[:, :, a:b]``
    (float64, or a dtype that converts to those float64 values exactly). Reads the input once, slab by slab."""
    from scipy.ndimage import spline_filter1d

    st = steps(shape, zoom)
    axes = [axis_taps(k0, k1, n, float(s), 3) for (k0, k1), n, s in zip(window, shape, st)]
    out = np.zeros(tuple(k1 - k0 for k0, k1 in window), dtype=np.float64)
    if out.size == 0 or any(a.zero.all() for a in axes):
        return out
    need = [(int(a.taps[~a.zero].min()), int(a.taps[~a.zero].max()) + 1) for a in axes]
    (a0, b0), (a1, b1), (a2, b2) = need
    # axis 0: every line along axis 0, kept where the axis-0 index is needed (all of axes 1, 2); each slab
    # is transposed so its axis-0 lines are contiguous (the per-line arithmetic does not change), slabs in
    # parallel threads (spline_filter1d releases the GIL)
    f0 = np.empty((b0 - a0, shape[1], shape[2]), dtype=np.float64)

    def filter_slab(s0):
        s1 = min(s0 + SLAB, shape[2])
        lines = np.ascontiguousarray(np.moveaxis(slabs(s0, s1), 0, -1))
        filtered = spline_filter1d(lines, 3, 2, output=np.float64, mode="constant")
        f0[:, :, s0:s1] = np.moveaxis(filtered[:, :, a0:b0], -1, 0)

    run_parallel(filter_slab, range(0, shape[2], SLAB))
    # axis 1: full lines along axis 1 for the needed axis-0 range; axis 2 likewise for the needed 0, 1 ranges
    f1 = spline_filter1d(f0, 3, 1, output=np.float64, mode="constant")[:, a1:b1]
    f0 = None  # free it (the closure above holds the name)
    coeff = spline_filter1d(np.ascontiguousarray(f1), 3, 2, output=np.float64, mode="constant")[:, :, a2:b2]
    del f1
    t0, t1, t2 = (a.taps - lo for a, (lo, _) in zip(axes, need))
    w0, w1, w2 = (a.weights for a in axes)
    for i in range(4):
        for j in range(4):
            for k in range(4):
                c = coeff[np.ix_(t0[:, i], t1[:, j], t2[:, k])]
                out += c * w0[:, i, None, None] * w1[None, :, j, None] * w2[None, None, :, k]
    out[axes[0].zero] = 0.0
    out[:, axes[1].zero] = 0.0
    out[:, :, axes[2].zero] = 0.0
    return out


def run_parallel(fn, items):
    """fn over items in up to 4 threads (the work is numpy/scipy C code that releases the GIL)."""
    import os
    from concurrent.futures import ThreadPoolExecutor

    workers = max(1, min(4, os.cpu_count() or 1))
    if workers == 1:
        for item in items:
            fn(item)
        return
    with ThreadPoolExecutor(workers) as pool:
        for _ in pool.map(fn, items):
            pass


def nearest_index_maps(shape, zoom) -> list:
    """Order-0 zoom as per-axis index maps: output k on an axis samples input index map[k], or cval where -1."""
    maps = []
    for n, s, n_out in zip(shape, steps(shape, zoom), output_shape(shape, zoom)):
        a = axis_taps(0, n_out, n, float(s), 0)
        m = a.taps[:, 0].copy()
        m[a.zero] = -1
        maps.append(m)
    return maps
