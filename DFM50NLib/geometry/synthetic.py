"""Analytic phantoms on any grid (oblique, flipped, anisotropic) and the small bundled demo case.

The lesion is an ellipsoid known exactly in world space, so tests can compare centres and volumes with
analytic values. The CT is chest-like: air outside an elliptic body cylinder (0 HU soft tissue), a lung
(-850 HU) around the lesion, the lesion at +40 HU with a 1 mm partial-volume edge, plus smooth seeded
texture. Values are defined in world space, so the same phantom written in two voxel orders is the same.
"""

from __future__ import annotations

import numpy as np

from DFM50NLib.geometry.volume import Volume

LESION_HU, LUNG_HU, BODY_HU, AIR_HU = 40.0, -850.0, 0.0, -1000.0


def make_grid(shape, spacing, origin_ras=None, direction_ras=None, center_ras=None) -> Volume:
    """An empty (uint8 zeros) volume on the given grid.

    `direction_ras`: 3x3, columns = RAS unit vectors of the i, j, k axes (default identity).
    Without `origin_ras`, the grid is placed so that its middle sits on `center_ras` (default 0).
    """
    shape = tuple(int(n) for n in shape)
    d = np.eye(3) if direction_ras is None else np.asarray(direction_ras, dtype=float)
    sp = np.asarray(spacing, dtype=float)
    if origin_ras is None:
        mid = (np.asarray(shape, dtype=float) - 1) / 2
        origin_ras = np.asarray(center_ras if center_ras is not None else (0, 0, 0), dtype=float) - (d * sp) @ mid
    return Volume.from_geometry(np.zeros(shape, np.uint8), sp, origin_ras, d)


def grid_world(vol: Volume) -> np.ndarray:
    """RAS mm of every voxel centre, shape (*vol.shape, 3)."""
    ijk = np.indices(vol.shape[:3], dtype=float)
    m = vol.ijk_to_ras
    return np.stack([m[r, 0] * ijk[0] + m[r, 1] * ijk[1] + m[r, 2] * ijk[2] + m[r, 3] for r in range(3)], axis=-1)


def ellipsoid_volume(semi_axes_mm) -> float:
    a, b, c = (float(v) for v in semi_axes_mm)
    return 4.0 / 3.0 * np.pi * a * b * c


def ellipsoid_case(
    center_ras,
    semi_axes_mm,
    rotation=None,
    *,
    shape=(64, 64, 32),
    spacing=(0.7, 0.7, 2.5),
    origin_ras=None,
    direction_ras=None,
    grid_center_ras=None,
    seed=0,
    texture_hu=15.0,
    noise_hu=5.0,
):
    """(CT int16 HU, mask uint8) of an ellipsoidal lesion on the given grid.

    `rotation`: 3x3 whose columns are the RAS directions of the ellipsoid's semi-axes (default identity).
    Mask voxel = voxel centre inside the ellipsoid. The grid is centred on the lesion unless
    `origin_ras` or `grid_center_ras` say otherwise.
    """
    c = np.asarray(center_ras, dtype=float)
    grid = make_grid(shape, spacing, origin_ras, direction_ras, c if grid_center_ras is None else grid_center_ras)
    world = grid_world(grid)
    rot = np.eye(3) if rotation is None else np.asarray(rotation, dtype=float)
    local = (world - c) @ rot  # coordinates along the ellipsoid's axes
    axes = np.asarray(semi_axes_mm, dtype=float)
    q = np.sqrt(np.sum((local / axes) ** 2, axis=-1))
    mask = (q <= 1.0).astype(np.uint8)
    # approximate signed distance to the surface (mm) for a 1 mm partial-volume edge in the CT
    sd = (q - 1.0) * (3.0 / np.sum(1.0 / axes))
    lesion = np.clip(0.5 - sd, 0.0, 1.0)
    ct = _background(world, c) * (1 - lesion) + LESION_HU * lesion
    ct += _texture(grid.shape, seed, texture_hu, noise_hu)
    ct_vol = grid.with_array(np.round(np.clip(ct, -1024, 3071)).astype(np.int16), name="phantom_ct")
    return ct_vol, grid.with_array(mask, name="phantom_mask")


def sphere_case(center_ras=(0.0, 0.0, 0.0), radius_mm=8.0, **grid):
    """`ellipsoid_case` with three equal semi-axes."""
    return ellipsoid_case(center_ras, (radius_mm,) * 3, None, **grid)


def _background(world, lesion_center):
    """Air outside an elliptic body cylinder, soft tissue inside it, a lung ellipsoid around the lesion."""
    rel = world - lesion_center
    body = ((rel[..., 0] + 70.0) / 165.0) ** 2 + ((rel[..., 1] - 10.0) / 115.0) ** 2 <= 1.0
    lung = np.sum((rel - (-10.0, 10.0, 0.0)) ** 2 / np.array([55.0, 75.0, 120.0]) ** 2, axis=-1) <= 1.0
    return np.where(lung, LUNG_HU, np.where(body, BODY_HU, AIR_HU))


def _texture(shape, seed, texture_hu, noise_hu):
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    smooth = ndimage.gaussian_filter(rng.standard_normal(shape), sigma=2.0, mode="wrap")
    smooth *= texture_hu / max(float(smooth.std()), 1e-12)
    return smooth + noise_hu * rng.standard_normal(shape)


def demo_case():
    """The demo phantom in memory: (CT Volume, lesion mask Volume) - what `write_demo_case` writes and
    what Slicer's Sample Data entry "DFM50N demo chest phantom" loads (generated, never downloaded)."""
    rot = _rotation_z(25.0)
    return ellipsoid_case(
        (-60.0, 20.0, -110.0),
        (11.0, 9.0, 8.5),
        rot,
        shape=(160, 160, 40),
        spacing=(0.7, 0.7, 2.5),
        direction_ras=np.diag([-1.0, -1.0, 1.0]),
        grid_center_ras=(-48.0, 20.0, -110.0),
        seed=2024,
    )


def _rotation_z(degrees):
    t = np.deg2rad(degrees)
    return np.array([[np.cos(t), -np.sin(t), 0.0], [np.sin(t), np.cos(t), 0.0], [0.0, 0.0, 1.0]])
