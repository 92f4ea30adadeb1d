"""The pictures of a report as numbers: patient-aligned planes sampled in a window, cube slices.

Pure numpy/scipy (no matplotlib) so the geometry can be tested on its own. Planes are sampled
with map_coordinates from a crop of the CT around the window only: the whole CT is never copied.
Display convention is radiological: patient Right on the image left, Anterior / Superior up.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from DFM50NLib.constants import CUBE_SIZE, OUTSIDE_HU

# plane -> (normal RAS axis, image column direction, image row (downward) direction, edge letters L/R/T/B)
PLANES = {
    "axial": (2, (-1.0, 0.0, 0.0), (0.0, -1.0, 0.0), ("R", "L", "A", "P")),
    "coronal": (1, (-1.0, 0.0, 0.0), (0.0, 0.0, -1.0), ("R", "L", "S", "I")),
    "sagittal": (0, (0.0, -1.0, 0.0), (0.0, 0.0, -1.0), ("A", "P", "S", "I")),
}
PLANE_BY_NORMAL = {PLANES[p][0]: p for p in PLANES}


@dataclass
class PlaneView:
    """One 2D picture: HU image, overlays and how its pixels map to mm."""

    name: str  # "axial" | "coronal" | "sagittal"
    title: str
    image: Optional[np.ndarray]  # HU (rows, cols) or None when no CT is available
    pixel_mm: tuple  # (row, col) pixel size in mm
    letters: tuple  # patient direction at the left, right, top, bottom edges
    lesion: Optional[np.ndarray] = None  # bool (rows, cols)
    cube: Optional[np.ndarray] = None  # bool (rows, cols): inside the 50 mm cube
    center_rc: Optional[tuple] = None  # (row, col) in pixels (continuous) of the cube centre
    lines: list = field(default_factory=list)  # [(label, (r0, c0), (r1, c1))] in pixels

    @property
    def shape(self):
        ref = self.image if self.image is not None else self.lesion
        return ref.shape


def plane_grid(center_ras, plane, fov_mm=120.0, pixel_mm=0.5):
    """RAS mm of every pixel centre of a `plane` window centred on `center_ras`: (rows, cols, 3)."""
    _, col_dir, row_dir, _ = PLANES[plane]
    n = int(round(fov_mm / pixel_mm))
    offs = (np.arange(n) - (n - 1) / 2.0) * pixel_mm
    rr, cc = np.meshgrid(offs, offs, indexing="ij")
    c = np.asarray(center_ras, float)
    return c + rr[..., None] * np.asarray(row_dir) + cc[..., None] * np.asarray(col_dir)


def sample(array, ijk_to_ras, ras_points, order, cval):
    """Values of `array` at RAS points, reading only the bounding box of the needed voxels."""
    from scipy.ndimage import map_coordinates

    shape = ras_points.shape[:-1]
    inv = np.linalg.inv(np.asarray(ijk_to_ras, float))
    ijk = ras_points.reshape(-1, 3) @ inv[:3, :3].T + inv[:3, 3]
    dims = np.array(array.shape[:3])
    lo = np.clip(np.floor(ijk.min(axis=0)).astype(int) - 2, 0, dims)
    hi = np.clip(np.ceil(ijk.max(axis=0)).astype(int) + 3, 0, dims)
    if np.any(hi <= lo):
        return np.full(shape, cval, dtype=np.float32)
    crop = np.ascontiguousarray(array[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]], dtype=np.float32)
    local = (ijk - lo).T
    # points outside the crop are outside the image too (the crop spans all in-image points)
    out = map_coordinates(crop, local, order=order, mode="constant", cval=cval, prefilter=False)
    outside = np.any((ijk < -0.5) | (ijk > dims - 0.5), axis=1)
    out[outside] = cval
    return out.reshape(shape).astype(np.float32)


def inside_cube(cube_to_ras, ras_points):
    """True where a RAS point falls inside the cube's sample cells (index -0.5 .. 49.5)."""
    inv = np.linalg.inv(np.asarray(cube_to_ras, float))
    idx = ras_points @ inv[:3, :3].T + inv[:3, 3]
    return np.all((idx >= -0.5) & (idx <= CUBE_SIZE - 0.5), axis=-1)


def cube_center_ras(cube_to_ras):
    m = np.asarray(cube_to_ras, float)
    c = CUBE_SIZE // 2
    return m[:3, :3] @ np.array([c, c, c], float) + m[:3, 3]


def ct_planes(center_ras, ct=None, mask_vol=None, cube_to_ras=None, cube_mask=None, fov_mm=120.0, pixel_mm=0.5) -> list:
    """Axial, coronal, sagittal windows through `center_ras` with lesion contour and cube outline.

    `mask_vol`: the prepared mask (a Volume on the CT grid, cropped); without it the cube's own
    mask is used, so the contour is drawn wherever any mask is known.
    """
    views = []
    n = int(round(fov_mm / pixel_mm))
    centre_px = ((n - 1) / 2.0, (n - 1) / 2.0)
    for plane in ("axial", "coronal", "sagittal"):
        pts = plane_grid(center_ras, plane, fov_mm, pixel_mm)
        image = None if ct is None else sample(ct.array, ct.ijk_to_ras, pts, 1, OUTSIDE_HU)
        lesion = None
        if mask_vol is not None:
            lesion = sample(mask_vol.array, mask_vol.ijk_to_ras, pts, 0, 0.0) > 0.5
        elif cube_mask is not None and cube_to_ras is not None:
            lesion = sample(cube_mask, cube_to_ras, pts, 0, 0.0) > 0.5
        cube = None if cube_to_ras is None else inside_cube(cube_to_ras, pts)
        views.append(
            PlaneView(
                plane,
                f"{plane.capitalize()} through the cube centre",
                image,
                (pixel_mm, pixel_mm),
                PLANES[plane][3],
                lesion,
                cube,
                centre_px,
            )
        )
    return views


def cube_views(cube_ct, cube_mask, cube_to_ras) -> list:
    """The middle slice of the cube along each array axis, shown radiologically when the axes allow.

    These are exactly the samples the model sees (no resampling): only transposes and flips.
    """
    m = np.asarray(cube_to_ras, float)
    spacing = np.linalg.norm(m[:3, :3], axis=0)
    dirs = m[:3, :3] / spacing[None, :]
    mid = CUBE_SIZE // 2
    views = []
    used = set()
    for a in range(3):
        normal = int(np.argmax(np.abs(dirs[:, a])))
        plane = PLANE_BY_NORMAL[normal] if normal not in used else None
        used.add(normal)
        rest = [b for b in range(3) if b != a]
        ct2 = np.take(np.asarray(cube_ct), mid, axis=a)
        mk2 = None if cube_mask is None else np.take(np.asarray(cube_mask), mid, axis=a) > 0
        if plane is not None:
            _, col_dir, row_dir, letters = PLANES[plane]
            dots_col = [float(dirs[:, b] @ col_dir) for b in rest]
            col_pos = int(np.argmax(np.abs(dots_col)))
            row_pos = 1 - col_pos
            order = (row_pos, col_pos)  # slice axes are in `rest` order
            ct2 = np.transpose(ct2, order)
            mk2 = None if mk2 is None else np.transpose(mk2, order)
            row_ax, col_ax = rest[row_pos], rest[col_pos]
            if dirs[:, col_ax] @ col_dir < 0:
                ct2, mk2 = ct2[:, ::-1], None if mk2 is None else mk2[:, ::-1]
            if dirs[:, row_ax] @ row_dir < 0:
                ct2, mk2 = ct2[::-1, :], None if mk2 is None else mk2[::-1, :]
            centre = (
                mid if dirs[:, row_ax] @ row_dir >= 0 else CUBE_SIZE - 1 - mid,
                mid if dirs[:, col_ax] @ col_dir >= 0 else CUBE_SIZE - 1 - mid,
            )
            title = f"Cube {plane} (array axis {a}, index {mid})"
            pix = (spacing[row_ax], spacing[col_ax])
        else:  # degenerate/oblique axes: raw array view
            letters = ("", "", "", "")
            centre = (mid, mid)
            title = f"Cube array axis {a}, index {mid}"
            pix = (spacing[rest[0]], spacing[rest[1]])
            plane = f"axis{a}"
        views.append(
            PlaneView(
                plane,
                title,
                np.ascontiguousarray(ct2),
                tuple(float(p) for p in pix),
                letters,
                None if mk2 is None else np.ascontiguousarray(mk2),
                None,
                centre,
            )
        )
    rank = {"axial": 0, "coronal": 1, "sagittal": 2}  # same order as the CT panels
    return sorted(views, key=lambda v: rank.get(v.name, 3))


def measurement_view(diam, ct=None, mask_vol=None, pixel_mm=0.25) -> PlaneView:
    """The axial slice the diameters were measured on, with both measurement lines."""
    p, q = (np.asarray(x, float) for x in diam.long_endpoints_ras)
    s1, s2 = (np.asarray(x, float) for x in diam.short_endpoints_ras)
    centre = (p + q) / 2.0
    fov = float(max(40.0, 1.6 * diam.long_mm))
    pixel_mm = max(pixel_mm, fov / 400.0)
    pts = plane_grid(centre, "axial", fov, pixel_mm)
    image = None if ct is None else sample(ct.array, ct.ijk_to_ras, pts, 1, OUTSIDE_HU)
    lesion = None if mask_vol is None else sample(mask_vol.array, mask_vol.ijk_to_ras, pts, 0, 0.0) > 0.5
    n = pts.shape[0]

    def to_px(x):  # RAS -> (row, col) continuous pixel
        _, col_dir, row_dir, _ = PLANES["axial"]
        d = x - centre
        return (
            float(d @ np.asarray(row_dir)) / pixel_mm + (n - 1) / 2.0,
            float(d @ np.asarray(col_dir)) / pixel_mm + (n - 1) / 2.0,
        )

    lines = [
        (f"long {diam.long_mm:.1f} mm", to_px(p), to_px(q)),
        (f"short {diam.short_mm:.1f} mm", to_px(s1), to_px(s2)),
    ]
    return PlaneView(
        "axial",
        f"Diameters, axial S = {diam.slice_s_mm:.1f} mm",
        image,
        (pixel_mm, pixel_mm),
        PLANES["axial"][3],
        lesion,
        None,
        None,
        lines,
    )
