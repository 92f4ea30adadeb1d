"""The few NIfTI-1/2 header fields DFM50N needs (dims, type, data offset, scaling), read with `struct`.

Why: nibabel costs 0.3 s to import (it pulls in pydicom), more than a third of what reading a CT takes;
the integrity check and the fast reader need only these fields. Geometry is not read here: it comes from
ITK's own header read (fast_nifti.py), so qform/sform choices stay ITK's.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

# NIfTI datatype code -> numpy type name (the plain scalar types; anything else goes to ITK)
DATATYPES = {
    2: "uint8",
    4: "int16",
    8: "int32",
    16: "float32",
    64: "float64",
    256: "int8",
    512: "uint16",
    768: "uint32",
    1024: "int64",
    1280: "uint64",
}


@dataclass(frozen=True)
class NiftiHeader:
    version: int  # 1 or 2
    endian: str  # "<" or ">"
    dims: tuple  # dim[0..7] as stored
    datatype: int
    bitpix: int
    vox_offset: int  # 0 for a .hdr/.img pair (data in the other file)
    scl_slope: float
    scl_inter: float

    @property
    def shape(self) -> tuple:
        return tuple(int(d) for d in self.dims[1 : int(self.dims[0]) + 1])

    @property
    def dtype(self):
        """The stored numpy dtype (with the file's byte order), or None for types ITK should handle."""
        import numpy as np

        name = DATATYPES.get(self.datatype)
        return None if name is None else np.dtype(name).newbyteorder(self.endian)

    @property
    def unscaled(self) -> bool:
        """True when readers apply no intensity scaling: slope 0 (unset) or 1 with intercept 0."""
        return self.scl_slope in (0.0, 1.0) and self.scl_inter == 0.0


def parse(head: bytes):
    """The header at the start of `head` (at least 348 bytes for NIfTI-1, 540 for NIfTI-2), or None."""
    if len(head) < 348:
        return None
    for endian in "<>":
        (size,) = struct.unpack(endian + "i", head[:4])
        if size == 348:
            single = head[344:347] == b"n+1"
            return NiftiHeader(
                version=1,
                endian=endian,
                dims=struct.unpack(endian + "8h", head[40:56]),
                datatype=struct.unpack(endian + "h", head[70:72])[0],
                bitpix=struct.unpack(endian + "h", head[72:74])[0],
                vox_offset=max(int(struct.unpack(endian + "f", head[108:112])[0]), 352) if single else 0,
                scl_slope=struct.unpack(endian + "f", head[112:116])[0],
                scl_inter=struct.unpack(endian + "f", head[116:120])[0],
            )
        if size == 540 and len(head) >= 540:
            return NiftiHeader(
                version=2,
                endian=endian,
                dims=struct.unpack(endian + "8q", head[16:80]),
                datatype=struct.unpack(endian + "h", head[12:14])[0],
                bitpix=struct.unpack(endian + "h", head[14:16])[0],
                vox_offset=int(struct.unpack(endian + "q", head[168:176])[0]) if head[4:7] == b"n+2" else 0,
                scl_slope=struct.unpack(endian + "d", head[176:184])[0],
                scl_inter=struct.unpack(endian + "d", head[184:192])[0],
            )
    return None
