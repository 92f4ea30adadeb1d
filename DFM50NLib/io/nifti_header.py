"""The few NIfTI-1/2 header fields DFM50N needs (dims, type, data offset, scaling, voxel sizes, qform and sform),
read with `struct`.

Why: nibabel costs 0.3 s to import (it pulls in pydicom), more than a third of what reading a CT takes;
the integrity check and the fast reader need only these fields. The volume's geometry still comes from ITK's
own header read (fast_nifti.py); qform and sform are read here only to refuse a file where they disagree
(integrity.py), so ITK's choice between them never matters.
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
    pixdim: tuple = ()  # pixdim[0..7] as stored (pixdim[0] = qfac)
    qform_code: int = 0
    sform_code: int = 0
    quatern: tuple = ()  # b, c, d, qoffset_x, qoffset_y, qoffset_z
    srow: tuple = ()  # srow_x, srow_y, srow_z (12 values)

    @property
    def shape(self) -> tuple:
        return tuple(int(d) for d in self.dims[1 : int(self.dims[0]) + 1])

    @property
    def dtype(self):
        """The stored numpy dtype (with the file's byte order), or None for types ITK should handle."""
        import numpy as np

        name = DATATYPES.get(self.datatype)
        return None if name is None else np.dtype(name).newbyteorder(self.endian)

    def qform(self):
        """The qform's voxel -> scanner (RAS mm) 4x4, as the NIfTI standard builds it from the quaternion."""
        import numpy as np

        b, c, d, *offset = (float(v) for v in self.quatern)
        a = float(np.sqrt(max(0.0, 1.0 - (b * b + c * c + d * d))))
        r = np.array(
            [
                [a * a + b * b - c * c - d * d, 2 * (b * c - a * d), 2 * (b * d + a * c)],
                [2 * (b * c + a * d), a * a + c * c - b * b - d * d, 2 * (c * d - a * b)],
                [2 * (b * d - a * c), 2 * (c * d + a * b), a * a + d * d - c * c - b * b],
            ]
        )
        qfac = -1.0 if self.pixdim[0] < 0 else 1.0  # the standard: any value but -1 counts as 1
        m = np.eye(4)
        m[:3, :3] = r * np.array([self.pixdim[1], self.pixdim[2], qfac * self.pixdim[3]], float)
        m[:3, 3] = offset
        return m

    def sform(self):
        """The sform's voxel -> (RAS mm) 4x4 (srow_x, srow_y, srow_z)."""
        import numpy as np

        m = np.eye(4)
        m[:3] = np.asarray(self.srow, float).reshape(3, 4)
        return m

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
                pixdim=struct.unpack(endian + "8f", head[76:108]),
                qform_code=struct.unpack(endian + "h", head[252:254])[0],
                sform_code=struct.unpack(endian + "h", head[254:256])[0],
                quatern=struct.unpack(endian + "6f", head[256:280]),
                srow=struct.unpack(endian + "12f", head[280:328]),
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
                pixdim=struct.unpack(endian + "8d", head[104:168]),
                qform_code=struct.unpack(endian + "i", head[344:348])[0],
                sform_code=struct.unpack(endian + "i", head[348:352])[0],
                quatern=struct.unpack(endian + "6d", head[352:400]),
                srow=struct.unpack(endian + "12d", head[400:496]),
            )
    return None
