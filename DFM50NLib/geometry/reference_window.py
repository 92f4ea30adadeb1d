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
        out[tuple(dst)] = zw.spline_zoom_window(ct.native_slab, ct.shape, zoom, window)
    return out


def zoomed_binary_box(mask, zoom, label):
    """(origin, bool array): the binarized order-0 zoom of the mask on the box of its foreground, grown by
    one voxel within the zoomed array; (None, None) when no voxel is foreground."""

    # the bounding box of the binary mask on the input grid, a slab at a time
    def binarize(v):
        return (v > 0) if label is None else (np.asarray(v, dtype=np.float64) == label)

    nz = mask.shape[2]
    plane = np.zeros(mask.shape[:2], dtype=bool)
    k_hit = np.zeros(nz, dtype=bool)
    for k0 in range(0, nz, zw.SLAB):
        b = binarize(mask.native_slab(k0, min(k0 + zw.SLAB, nz)))
        k_hit[k0 : k0 + b.shape[2]] = b.any(axis=(0, 1))
        plane |= b.any(axis=2)
    if not k_hit.any():
        return None, None
    hits = (np.nonzero(plane.any(axis=1))[0], np.nonzero(plane.any(axis=0))[0], np.nonzero(k_hit)[0])
    in_lo, in_hi = [int(h[0]) for h in hits], [int(h[-1]) for h in hits]
    (i0, j0, k0), (i1, j1, k1) = in_lo, in_hi
    binary = binarize(mask.native_slab(k0, k1 + 1)[i0 : i1 + 1, j0 : j1 + 1])
    maps = [np.arange(n) for n in mask.shape] if zw.is_identity(zoom) else zw.nearest_index_maps(mask.shape, zoom)
    origin, idx = [], []
    for m, lo, hi in zip(maps, in_lo, in_hi):
        inside = np.nonzero((m >= lo) & (m <= hi))[0]
        if inside.size == 0:
            return None, None
        o0, o1 = max(int(inside[0]) - 1, 0), min(int(inside[-1]) + 2, m.size)
        origin.append(o0)
        idx.append(m[o0:o1])
    # an output sample is foreground only if its input voxel lies in the input box
    valid = [(i >= lo) & (i <= hi) for i, lo, hi in zip(idx, in_lo, in_hi)]
    box = binary[np.ix_(*[np.where(v, i - lo, 0) for v, i, lo in zip(valid, idx, in_lo)])]
    box &= valid[0][:, None, None] & valid[1][None, :, None] & valid[2][None, None, :]
    return tuple(origin), box


def shape_mismatch(ct_shape, mask_shape) -> str:
    return (
        f"After the upstream resampling the CT ({tuple(ct_shape)}) and the mask ({tuple(mask_shape)}) "
        "differ in shape: their header voxel sizes disagree. Fix the mask's header."
    )


def empty_mask(label) -> str:
    what = "mask is empty after resampling" if label is None else f"mask has no voxel with label {label}"
    return f"Reference geometry: the {what}; check the mask file (and --label)."


def crop_pad(a, c, pad_value) -> np.ndarray:
    """a[c0-25:c0+25, c1-25:c1+25, c2-25:c2+25] with `pad_value` wherever that runs off the array."""
    out = np.full((CUBE_SIZE,) * 3, pad_value, dtype=a.dtype)
    src, dst = [], []
    for ci, n in zip(c, a.shape):
        lo, hi = ci - CUBE_CENTER_INDEX, ci - CUBE_CENTER_INDEX + CUBE_SIZE
        s0, s1 = max(lo, 0), min(hi, n)
        if s1 <= s0:
            return out
        src.append(slice(s0, s1))
        dst.append(slice(s0 - lo, s1 - lo))
    out[tuple(dst)] = a[tuple(src)]
    return out
