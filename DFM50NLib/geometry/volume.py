"""`Volume`: a voxel array plus its IJK->RAS matrix, the one image type of the pure layer.

Convention (as nibabel and Slicer's IJK): ``array[i, j, k]``, i fastest in the file.
SimpleITK and ``slicer.util.arrayFromVolume`` give ``[k, j, i]``; their ``.T`` is a free view,
so wrapping a 512x512x600 CT never copies it. World coordinates are RAS millimetres
(Slicer's convention); LPS = RAS with the first two axes negated.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])  # its own inverse


@dataclass(frozen=True, eq=False)
class Volume:
    array: np.ndarray  # indexed [i, j, k]
    ijk_to_ras: np.ndarray  # 4x4 homogeneous matrix
    name: str = ""
    meta: dict = field(default_factory=dict)

    def __post_init__(self):
        m = np.asarray(self.ijk_to_ras, dtype=float)
        if m.shape != (4, 4):
            raise ValueError(f"ijk_to_ras must be a 4x4 matrix, got shape {m.shape}")
        object.__setattr__(self, "ijk_to_ras", m)

    @classmethod
    def from_geometry(cls, array, spacing, origin_ras=(0, 0, 0), direction_ras=None, name="", meta=None):
        """Build from spacing, origin and a 3x3 direction (columns = unit i, j, k axes in RAS)."""
        d = np.eye(3) if direction_ras is None else np.asarray(direction_ras, dtype=float)
        m = np.eye(4)
        m[:3, :3] = d * np.asarray(spacing, dtype=float)[None, :]
        m[:3, 3] = origin_ras
        return cls(np.asarray(array), m, name, dict(meta or {}))

    @property
    def shape(self):
        return self.array.shape

    @property
    def spacing(self) -> np.ndarray:
        return np.linalg.norm(self.ijk_to_ras[:3, :3], axis=0)

    @property
    def direction_ras(self) -> np.ndarray:
        return self.ijk_to_ras[:3, :3] / self.spacing[None, :]

    @property
    def origin_ras(self) -> np.ndarray:
        return self.ijk_to_ras[:3, 3].copy()

    @property
    def ras_to_ijk(self) -> np.ndarray:
        return np.linalg.inv(self.ijk_to_ras)

    @property
    def ijk_to_lps(self) -> np.ndarray:
        return RAS_TO_LPS @ self.ijk_to_ras

    def ijk_to_world(self, ijk) -> np.ndarray:
        """Continuous voxel indices (..., 3) -> RAS mm (..., 3)."""
        ijk = np.asarray(ijk, dtype=float)
        return ijk @ self.ijk_to_ras[:3, :3].T + self.ijk_to_ras[:3, 3]

    def world_to_ijk(self, ras) -> np.ndarray:
        """RAS mm (..., 3) -> continuous voxel indices (..., 3)."""
        inv = self.ras_to_ijk
        ras = np.asarray(ras, dtype=float)
        return ras @ inv[:3, :3].T + inv[:3, 3]

    def with_array(self, array, name=None) -> Volume:
        """Same grid, other voxels (e.g. a mask resampled onto this CT)."""
        return Volume(array, self.ijk_to_ras, self.name if name is None else name, dict(self.meta))

    def same_grid(self, other: Volume, tol=1e-4) -> bool:
        return self.shape[:3] == other.shape[:3] and np.allclose(self.ijk_to_ras, other.ijk_to_ras, atol=tol)


def ras_to_lps(point) -> np.ndarray:
    p = np.asarray(point, dtype=float)
    return p * np.array([-1.0, -1.0, 1.0])


lps_to_ras = ras_to_lps
