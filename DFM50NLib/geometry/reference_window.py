"""The reference cube (METHOD.md §3) from the lesion's box and the cube's 50³ samples only, bit for bit.

Why each shortcut gives upstream's numbers:
- mask: an order-0 zoom samples one input voxel per output index and axis (`nearest_index_maps`), so the
  zoomed binary mask is computed on the box of output indices whose samples can be foreground, grown by
  one voxel (clipped to the zoomed array), where it is background;
- largest component: ``scipy.ndimage.label`` numbers components in raster order of their first voxel, and
  a box keeps raster order, so ``argmax`` of the sizes picks the same component (first of equal sizes);
- ``distance_transform_edt``: the nearest background voxel of a voxel in the box is never further than the
  one-voxel background shell around it (clamping a point outside onto the shell only shortens each
  coordinate difference); where the box meets the array's edge there is nothing beyond in either case;
- ``argmax``: first maximum in raster order, which the box keeps;
- ``center_of_mass``: sums of integer indices are exact in float64, so global index sums (computed here
  in int64) divided by the voxel count give the same doubles;
- CT: `zoom_window.spline_zoom_window` (see there).
"""

from __future__ import annotations

import numpy as np

from DFM50NLib.constants import CUBE_CENTER_INDEX, CUBE_SIZE, REFERENCE_PAD_VALUE
from DFM50NLib.errors import InputError
from DFM50NLib.geometry import zoom_window as zw


def windowed_reference(ct, mask, zoom_ct, zoom_mask, center_method, label):
    """(ct_cube float64, mask_cube uint8, c, center_float, n_components, kept_voxels, zoomed_shape), or None
    where this path does not replicate upstream (label 0: the zoom's zero fill would be foreground)."""
    from DFM50NLib.geometry.reference import crop_pad, empty_mask, shape_mismatch

    if label is not None and float(label) == 0.0:
        return None
    shape_ct, shape_mask = zw.output_shape(ct.shape, zoom_ct), zw.output_shape(mask.shape, zoom_mask)
    if shape_ct != shape_mask:
        raise InputError(shape_mismatch(shape_ct, shape_mask))
    box_lo, box = zoomed_binary_box(mask, zoom_mask, label)
    if box is None:
        raise InputError(empty_mask(label))
    from scipy import ndimage

    labels, n = ndimage.label(box)
    if n == 0:
        raise InputError(empty_mask(label))
    sizes = np.bincount(labels.ravel())[1:]
    keep = labels == (int(np.argmax(sizes)) + 1)
    del labels
    if center_method == "dt_peak":
        dt = ndimage.distance_transform_edt(keep)
        local = np.unravel_index(np.argmax(dt), dt.shape)
        center_float = tuple(float(v + o) for v, o in zip(local, box_lo))
    else:
        count = int(keep.sum())
        idx = np.nonzero(keep)
        center_float = tuple(float(int((i.astype(np.int64) + o).sum())) / count for i, o in zip(idx, box_lo))
    c = tuple(int(v) for v in np.round(center_float))
    mask_cube = crop_pad(keep.astype(np.uint8), tuple(ci - o for ci, o in zip(c, box_lo)), 0)
    ct_cube = ct_window(ct, zoom_ct, shape_ct, c)
    return ct_cube, mask_cube, c, center_float, n, int(sizes.max()), shape_ct


def ct_window(ct, zoom, zoomed_shape, c) -> np.ndarray:
    """The 50³ crop [c - 25, c + 25) of zoom(ct, order=3), REFERENCE_PAD_VALUE outside the zoomed array."""
    out = np.full((CUBE_SIZE,) * 3, REFERENCE_PAD_VALUE, dtype=np.float64)
    dst, window = [], []
    for ci, n in zip(c, zoomed_shape):
        lo = ci - CUBE_CENTER_INDEX
        s0, s1 = max(lo, 0), min(lo + CUBE_SIZE, n)
        if s1 <= s0:
            return out
        window.append((s0, s1))
        dst.append(slice(s0 - lo, s1 - lo))
    if zw.is_identity(zoom):  # scipy returns the input itself
        (a0, b0), (a1, b1), (a2, b2) = window
        out[tuple(dst)] = ct.slab(a2, b2)[a0:b0, a1:b1]
    else:
        out[tuple(dst)] = zw.spline_zoom_window(ct.slab, ct.shape, zoom, window)
    return out


def zoomed_binary_box(mask, zoom, label):
    """(origin, bool array): the binarized order-0 zoom of the mask on the box of its foreground, grown by
    one voxel within the zoomed array; (None, None) when no voxel is foreground."""
    # the binary mask on the input grid and its bounding box, a slab at a time
    nz = mask.shape[2]
    binary = np.zeros(mask.shape, dtype=bool)
    for k0 in range(0, nz, zw.SLAB):
        v = mask.slab(k0, min(k0 + zw.SLAB, nz))
        binary[:, :, k0 : k0 + v.shape[2]] = (v > 0) if label is None else (v == label)
    if not binary.any():
        return None, None
    in_lo, in_hi = [], []
    for ax in range(3):
        hit = np.nonzero(binary.any(axis=tuple(a for a in range(3) if a != ax)))[0]
        in_lo.append(int(hit[0]))
        in_hi.append(int(hit[-1]))
    maps = (
        [np.arange(n) for n in mask.shape] if zw.is_identity(zoom) else zw.nearest_index_maps(mask.shape, zoom)
    )
    origin, idx = [], []
    for m, lo, hi in zip(maps, in_lo, in_hi):
        inside = np.nonzero((m >= lo) & (m <= hi))[0]
        if inside.size == 0:
            return None, None
        o0, o1 = max(int(inside[0]) - 1, 0), min(int(inside[-1]) + 2, m.size)
        origin.append(o0)
        idx.append(m[o0:o1])
    valid = [i >= 0 for i in idx]
    box = binary[np.ix_(*[np.where(v, i, 0) for v, i in zip(valid, idx)])]
    box &= valid[0][:, None, None] & valid[1][None, :, None] & valid[2][None, None, :]
    return tuple(origin), box
