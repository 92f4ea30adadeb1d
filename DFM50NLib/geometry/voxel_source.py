"""NIfTI voxels as nibabel's ``get_fdata()`` would give them, handed out slab by slab (the reference geometry's input).

Why: the upstream scripts call ``get_fdata()`` (float64: 630 MB for a 512x512x300 CT); the reference
geometry needs each value once, so it keeps the file's own dtype (int16: 150 MB) and converts a slab at a
time with nibabel's own scaling arithmetic (``ArrayProxy._get_scaled``: slope and intercept cast to
float64, ``apply_read_scaling``), which is element-wise, so slabs give the same numbers as the whole.
The file is read by `io.nifti_source`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class VoxelSource:
    raw: np.ndarray  # as stored (file order i, j, k)
    slope: object = None  # nibabel proxy scaling; None = values are raw
    inter: object = None
    zooms: tuple = ()
    affine: np.ndarray | None = None

    @property
    def shape(self) -> tuple:
        return tuple(self.raw.shape)

    def slab(self, k0: int, k1: int) -> np.ndarray:
        """float64 values of [:, :, k0:k1], equal to get_fdata()[:, :, k0:k1]."""
        return self._fdata(self.raw[:, :, k0:k1])

    def native_slab(self, k0: int, k1: int) -> np.ndarray:
        """[:, :, k0:k1] in a dtype whose float64 conversion is get_fdata's: the stored values when unscaled
        (no copy; integer and float32 values convert to float64 exactly), else the scaled float64 slab."""
        if self.slope is None and self.inter is None and self.raw.dtype.kind in "iuf" and self.raw.itemsize <= 4:
            return self.raw[:, :, k0:k1]
        return self.slab(k0, k1)

    def value_range(self) -> tuple:
        """(min, max) of the float64 values, from the stored extremes (the scaling is linear): for the HU check."""
        ends = self._fdata(np.array([np.min(self.raw), np.max(self.raw)], dtype=self.raw.dtype))
        return float(np.min(ends)), float(np.max(ends))

    def values(self) -> np.ndarray:
        return self._fdata(self.raw)

    def _fdata(self, raw) -> np.ndarray:
        if self.slope is None and self.inter is None:
            return np.asarray(raw, dtype=np.float64)
        from nibabel.volumeutils import apply_read_scaling

        slope, inter = np.asanyarray(self.slope), np.asanyarray(self.inter)
        if np.can_cast(slope, np.float64):
            slope = slope.astype(np.float64)
        if np.can_cast(inter, np.float64):
            inter = inter.astype(np.float64)
        scaled = apply_read_scaling(np.asarray(raw), slope, inter)
        return scaled.astype(np.promote_types(scaled.dtype, np.float64), copy=False)
