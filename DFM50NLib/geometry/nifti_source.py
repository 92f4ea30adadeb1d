"""NIfTI voxels as nibabel's ``get_fdata()`` would give them, handed out slab by slab.

Why: the upstream scripts call ``get_fdata()`` (float64: 630 MB for a 512x512x300 CT); the reference
geometry needs each value once, so it keeps the file's own dtype (int16: 150 MB) and converts a slab at a
time with nibabel's own scaling arithmetic (``ArrayProxy._get_scaled``: slope and intercept cast to
float64, ``apply_read_scaling``), which is element-wise, so slabs give the same numbers as the whole.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from DFM50NLib.errors import InputError


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


def read_nifti_source(path, other=None) -> VoxelSource:
    """Header with nibabel, voxels straight from the (ISA-L) gunzipped bytes; anything else via nib.load."""
    import nibabel as nib

    from DFM50NLib.geometry.fast_gzip import read_maybe_gzip

    try:
        buf = read_maybe_gzip(path)
        img = _single_file_image(buf)
        if img is None:
            img = nib.load(str(path))
            raw = np.asanyarray(img.dataobj.get_unscaled())
        else:
            count = int(np.prod(img.shape))
            raw = np.frombuffer(buf, dtype=img.dataobj.dtype, count=count, offset=int(img.dataobj.offset))
            raw = raw.reshape(img.shape, order="F")
    except FileNotFoundError as exc:
        raise InputError(f"File not found: {exc.filename}.") from None
    except InputError:
        raise
    except Exception as exc:  # nibabel raises several types for files it cannot parse
        pair = f"{path} / {other}" if other is not None else str(path)
        raise InputError(
            f"Reference geometry reads NIfTI with nibabel, as the upstream scripts do; cannot read "
            f"{pair}: {exc}. Convert the images to NIfTI first."
        ) from None
    proxy = img.dataobj
    slope, inter = getattr(proxy, "slope", None), getattr(proxy, "inter", None)
    if slope is not None and inter is not None and float(slope) == 1.0 and float(inter) == 0.0:
        slope = inter = None  # apply_read_scaling returns the raw array unchanged: plain float64 cast
    return VoxelSource(raw, slope, inter, tuple(img.header.get_zooms()[:3]), img.affine)


def _single_file_image(buf: bytes):
    """A nibabel NIfTI-1/2 single-file image over `buf` (data not read), or None for other formats."""
    import nibabel as nib

    if len(buf) < 4:
        return None
    size = int.from_bytes(buf[:4], "little")
    size_be = int.from_bytes(buf[:4], "big")
    if 348 in (size, size_be) and buf[344:348] == b"n+1\x00":
        return nib.Nifti1Image.from_bytes(buf)
    if 540 in (size, size_be) and buf[4:8] == b"n+2\x00":
        return nib.Nifti2Image.from_bytes(buf)
    return None
