"""Upstream-parity cube (METHOD.md §3): the published scripts' arithmetic, bit for bit. Never the default.

On the arrays as nibabel returns them (file axes i, j, k, float64 from ``get_fdata()``):
``scipy.ndimage.zoom(data, (1/sx, 1/sy, 1/sz), order=3)`` for the CT, ``order=0`` for the mask (each file's
own header zooms) — *not* 1 mm isotropic; mask > 0 (or == label, our extension); largest component by
``scipy.ndimage.label`` (default structure: face connectivity); centre = first ``argmax`` of
``distance_transform_edt`` (no spacing, no padding) or ``center_of_mass``; ``np.round`` (half to even)
to integers c; cut ``[c - 25, c + 25)`` per axis, padding with 0. The CT cube handed to FCIB is the float32
of those float64 values (FCIB's LoadImaged reads float32). Orientation recorded as ``"file-ijk"``.

Upstream zooms the whole CT (about 10 GB on 512x512x300); `reference_cube` computes only the cube's samples
and the lesion's box (`reference_window`, `zoom_window`) with the same arithmetic, so its cube is
bit-identical; `reference_cube_whole_volume` keeps the whole-volume path (the tests' and benchmark's oracle).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from DFM50NLib.constants import CUBE_CENTER_INDEX, REFERENCE_PAD_VALUE
from DFM50NLib.errors import InputError
from DFM50NLib.geometry.cube import Cube
from DFM50NLib.geometry.reference_window import crop_pad, empty_mask, shape_mismatch, windowed_reference

ORIENTATION = "file-ijk"


@dataclass
class ReferenceCube:
    cube: Cube  # geometry="reference", orientation="file-ijk", axes = the file's i, j, k
    center_ijk: tuple  # rounded centre, index in the zoomed array
    center_float: tuple  # centre before rounding (argmax index or centre of mass)
    center_ras: np.ndarray  # world position of center_ijk (for audit and the result record)
    mask_voxels: int  # voxels of the kept component, on the zoomed grid
    components_dropped: int
    zoomed_shape: tuple
    stats: dict = field(default_factory=dict)  # mask_voxels, mask_volume_mm3, components_dropped, cube_*


def reference_cube(
    ct, mask, ct_zooms, mask_zooms=None, center_method="dt_peak", label=None, affine=None
) -> ReferenceCube:
    """The upstream arithmetic (file-order arrays, or `VoxelSource`s whose float64 values are nibabel's
    ``get_fdata()``), computing only the cube's samples and the lesion's box (see `reference_window`);
    `affine` (nibabel RAS) only places the audit cube."""
    _check_method(center_method)
    mask_zooms = ct_zooms if mask_zooms is None else mask_zooms
    zoom_ct = tuple(1.0 / float(s) for s in ct_zooms)
    zoom_mask = tuple(1.0 / float(s) for s in mask_zooms)
    found = windowed_reference(as_source(ct), as_source(mask), zoom_ct, zoom_mask, center_method, label)
    if found is None:  # a case the windowed path does not replicate (label 0 matches the zero fill)
        return reference_cube_whole_volume(
            as_source(ct).values(), as_source(mask).values(), ct_zooms, mask_zooms, center_method, label, affine
        )
    ct_cube, mask_cube, c, center_float, n, voxels, zoomed_shape = found
    return _assemble(ct_cube, mask_cube, c, center_float, n, voxels, zoomed_shape, ct.shape, affine)


def reference_cube_whole_volume(
    ct, mask, ct_zooms, mask_zooms=None, center_method="dt_peak", label=None, affine=None
) -> ReferenceCube:
    """The upstream arithmetic as upstream runs it: the whole CT zoomed in float64 (about 10 GB on a
    512x512x300 CT). Kept as the oracle the windowed path is checked against and for the benchmark."""
    from scipy import ndimage

    _check_method(center_method)
    mask_zooms = ct_zooms if mask_zooms is None else mask_zooms
    ct = np.asarray(ct, dtype=np.float64)
    mask = np.asarray(mask, dtype=np.float64)
    ct_z = ndimage.zoom(ct, zoom=tuple(1.0 / float(s) for s in ct_zooms), order=3)
    mask_z = ndimage.zoom(mask, zoom=tuple(1.0 / float(s) for s in mask_zooms), order=0)
    if ct_z.shape != mask_z.shape:
        raise InputError(shape_mismatch(ct_z.shape, mask_z.shape))
    binary = (mask_z > 0) if label is None else (mask_z == label)
    labels, n = ndimage.label(binary)
    if n == 0:
        raise InputError(empty_mask(label))
    sizes = np.bincount(labels.ravel())[1:]
    keep = labels == (int(np.argmax(sizes)) + 1)
    if center_method == "dt_peak":
        dt = ndimage.distance_transform_edt(keep)
        center_float = tuple(float(v) for v in np.unravel_index(np.argmax(dt), dt.shape))
    else:
        center_float = tuple(float(v) for v in ndimage.center_of_mass(keep))
    c = tuple(int(v) for v in np.round(center_float))
    ct_cube = crop_pad(ct_z, c, REFERENCE_PAD_VALUE)
    mask_cube = crop_pad(keep.astype(np.uint8), c, 0)
    return _assemble(ct_cube, mask_cube, c, center_float, n, int(sizes.max()), ct_z.shape, ct.shape, affine)


def _check_method(center_method):
    if center_method not in ("dt_peak", "centroid"):
        raise InputError(
            f"Reference geometry knows the centre methods 'dt_peak' and 'centroid' only, not {center_method!r}."
        )


def as_source(a):
    """An array (values as get_fdata would give them) or a VoxelSource, as a VoxelSource."""
    from DFM50NLib.geometry.voxel_source import VoxelSource

    return a if isinstance(a, VoxelSource) else VoxelSource(np.asarray(a))


def _assemble(ct_cube, mask_cube, c, center_float, n, voxels, zoomed_shape, in_shape, affine) -> ReferenceCube:
    scale = np.array([(n_in - 1) / (n_out - 1) if n_out > 1 else 1.0 for n_in, n_out in zip(in_shape, zoomed_shape)])
    zoomed_to_ras = (np.eye(4) if affine is None else np.asarray(affine, float)) @ np.diag([*scale, 1.0])
    start = np.eye(4)
    start[:3, 3] = np.asarray(c) - CUBE_CENTER_INDEX
    cube = Cube(ct_cube.astype(np.float32), mask_cube, zoomed_to_ras @ start, ORIENTATION, "reference")
    voxel_mm3 = abs(float(np.linalg.det(zoomed_to_ras[:3, :3]))) if affine is not None else float("nan")
    faces = (mask_cube[0], mask_cube[-1], mask_cube[:, 0], mask_cube[:, -1], mask_cube[:, :, 0], mask_cube[:, :, -1])
    cube_voxels = int(mask_cube.sum(dtype=np.int64))
    stats = {
        "mask_voxels": voxels,
        "mask_volume_mm3": voxels * voxel_mm3,
        "components_dropped": int(n - 1),
        "cube_mask_voxels": cube_voxels,
        "coverage": cube_voxels / voxels,
        "touches_border": bool(any(f.any() for f in faces)),
    }
    center_ras = (zoomed_to_ras @ [*c, 1.0])[:3]
    return ReferenceCube(cube, c, center_float, center_ras, voxels, int(n - 1), tuple(zoomed_shape), stats)
