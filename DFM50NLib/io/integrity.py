"""Is an image file complete? Checked before any reader allocates or zero-fills anything.

SimpleITK fills the missing part of a truncated NIfTI / NRRD / MetaImage with zeros and returns it without a
word, so a CT cut to 60 % is scored as if the lesion's neighbourhood were air. Here, from the header alone plus
one streaming pass over compressed data: the declared voxel count is bounded, the voxel data's length is compared
with what the header declares (gzip streams fully decompressed, so their CRC-32 and ISIZE are checked too), and
FIFOs / devices are refused before anything opens them (they would block forever). DICOM series: every slice's
header is read (modality, size, position, orientation): positions along the slice normal must be distinct and
evenly spaced (a missing slice would be silently interpolated away) and must not leave the normal (gantry tilt,
drift). NIfTI: voxel sizes, intensity scaling and the qform / sform pair must be ones every reader agrees on.
"""

from __future__ import annotations

import gzip
import os
import stat
import struct
import zlib
from pathlib import Path

import numpy as np

import DFM50NLib.io.nifti_header as nifti_header
import DFM50NLib.io.nrrd_header as nrrd_header
from DFM50NLib.constants import (
    DICOM_ORIENTATION_TOLERANCE,
    DICOM_SLICE_OFFSET_TOLERANCE_MM,
    NIFTI_QFORM_SFORM_TOLERANCE_MM,
    VOXEL_SPACING_RANGE_MM,
)
from DFM50NLib.errors import InputError

MAX_VOXELS = 2**31  # a 2048 x 2048 x 512 volume; a CT is ~512 x 512 x 600 (1.6e8)
_CHUNK = 1 << 20
_SPACING_TOLERANCE = 0.01  # relative deviation of one slice gap from the median gap
_NIFTI_BYTES = {2: 1, 4: 2, 8: 4, 16: 4, 64: 8, 256: 1, 512: 2, 768: 4, 1024: 8, 1280: 8, 128: 3, 2304: 4, 32: 8}
_NRRD_BYTES = {
    **dict.fromkeys(("signed char", "int8", "int8_t", "uchar", "unsigned char", "uint8", "uint8_t"), 1),
    **dict.fromkeys(("short", "short int", "signed short", "signed short int", "int16", "int16_t"), 2),
    **dict.fromkeys(("ushort", "unsigned short", "unsigned short int", "uint16", "uint16_t"), 2),
    **dict.fromkeys(("int", "signed int", "int32", "int32_t", "uint", "unsigned int", "uint32", "uint32_t"), 4),
    **dict.fromkeys(("longlong", "long long", "long long int", "signed long long", "int64", "int64_t"), 8),
    **dict.fromkeys(("ulonglong", "unsigned long long", "unsigned long long int", "uint64", "uint64_t"), 8),
    "float": 4,
    "double": 8,
    "block": None,
}
_MET_BYTES = {
    "MET_CHAR": 1,
    "MET_UCHAR": 1,
    "MET_SHORT": 2,
    "MET_USHORT": 2,
    "MET_INT": 4,
    "MET_UINT": 4,
    "MET_LONG": 4,
    "MET_ULONG": 4,
    "MET_LONG_LONG": 8,
    "MET_ULONG_LONG": 8,
    "MET_FLOAT": 4,
    "MET_DOUBLE": 8,
}


def check_regular(path) -> None:
    """Refuse FIFOs, sockets and devices before anything opens them (reading one blocks or never ends)."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return  # absence is reported by the reader with its own message
    if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        kind = "a FIFO (named pipe)" if stat.S_ISFIFO(mode) else "not a regular file (a device or socket)"
        raise InputError(f"{path}: is {kind}; give an image file or a DICOM series folder.")


def check_image_file(path, decompress=True) -> None:
    """Raise InputError if `path` declares more voxel data than it holds (or an absurd size). Unknown formats pass.

    decompress=False: compressed streams are not inflated here (a reader that inflates the whole stream itself
    with zlib/gzip checks CRC-32 and length as it goes); only the gzip trailer's ISIZE is compared with the
    header's size; on a mismatch (a cut file, or several gzip members) the stream is inflated after all.
    Inflating costs ~1 s per 100 MB of .nii.gz.
    """
    p = Path(path)
    check_regular(p)
    name = p.name.lower()
    if name.endswith((".nii", ".nii.gz")):
        _check_nifti(p, decompress)
    elif name.endswith((".nrrd", ".nhdr")):
        _check_nrrd(p, decompress)
    elif name.endswith((".mha", ".mhd")):
        _check_metaimage(p, decompress)


# ---------------------------------------------------------------------------------------------------- helpers
def _truncated(path, what, expected, found, hint="") -> InputError:
    return InputError(
        f"{path}: incomplete file: the header declares {expected:,} bytes of {what} but the file holds "
        f"{found:,} ({100 * found / max(expected, 1):.0f} %). The file was cut short (interrupted copy or "
        f"download?); copy or export it again.{hint}"
    )


def _check_count(path, shape, itemsize) -> int:
    shape = [int(s) for s in shape]
    if any(s < 0 for s in shape):
        raise InputError(f"{path}: the header declares a negative size {tuple(shape)}; the file is corrupt.")
    n = int(np.prod(shape, dtype=object)) if shape else 0
    if n > MAX_VOXELS:
        raise InputError(
            f"{path}: the header declares {' x '.join(map(str, shape))} = {n:,} voxels, more than the "
            f"{MAX_VOXELS:,} DFM50N accepts (a chest CT has ~10^8); the header is corrupt or this is not a CT."
        )
    return n * int(itemsize)


def _gzip_length(path, offset=0, expected=None) -> int:
    """Bytes of the whole decompressed gzip stream from `offset`; InputError if cut short or CRC/ISIZE wrong.

    zlib in gzip mode (wbits 16+) checks each member's CRC-32 and ISIZE trailer itself; members are chained.
    """
    n, d, started = 0, zlib.decompressobj(16 + zlib.MAX_WBITS), False
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            while block := f.read(_CHUNK):
                while block:
                    started = True
                    n += len(d.decompress(block))
                    block = d.unused_data if d.eof else b""
                    if d.eof:
                        if not block.strip(b"\0"):
                            break  # trailing zero padding after the last member is tolerated
                        d = zlib.decompressobj(16 + zlib.MAX_WBITS)
    except zlib.error as exc:
        raise InputError(
            f"{path}: corrupt gzip data after {n:,} decompressed bytes ({exc}: CRC-32 or length trailer "
            "wrong); copy or export it again."
        ) from None
    if not started or not d.eof:
        raise InputError(
            f"{path}: incomplete gzip stream: it ends after {n:,} decompressed bytes, before its end marker"
            + (f" (the header declares {expected:,} bytes)" if expected else "")
            + ". The file was cut short (interrupted copy or download?); copy or export it again."
        )
    return n


def _gzip_size(path, offset, expected, decompress) -> int:
    """Decompressed size of the gzip stream at `offset`: inflated and CRC-checked, or read from its ISIZE trailer."""
    if decompress:
        return _gzip_length(path, offset, expected)
    with open(path, "rb") as f:
        f.seek(0, 2)
        if f.tell() - offset < 18:
            return 0
        f.seek(-4, 2)
        isize = int.from_bytes(f.read(4), "little")
    if expected is not None and isize == expected % 2**32:
        return expected  # the trailer agrees (sizes >= 4 GiB are only known modulo 2^32)
    return _gzip_length(path, offset, expected)  # cut, or several gzip members (bgzip): inflate to be sure


def _zlib_length(path, offset) -> int:
    """Decompressed length of a zlib stream (MetaImage CompressedData); InputError if it does not end."""
    d, n = zlib.decompressobj(), 0
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            while block := f.read(_CHUNK):
                n += len(d.decompress(block))
                if d.eof:
                    break
    except zlib.error as exc:
        raise InputError(f"{path}: corrupt compressed data after {n:,} bytes ({exc}); export it again.") from None
    if not d.eof:
        raise InputError(
            f"{path}: incomplete compressed data: the stream stops after {n:,} bytes, before its end. "
            "The file was cut short; copy or export it again."
        )
    return n


# ---------------------------------------------------------------------------------------------------- NIfTI
def _open_head(path, gz):
    if gz:
        try:
            with gzip.open(path, "rb") as f:
                return f.read(540)
        except (EOFError, gzip.BadGzipFile, zlib.error, OSError):
            return b""  # the reader reports an unreadable file with its own message; the length pass below too
    with open(path, "rb") as f:
        return f.read(540)


def _check_nifti(path: Path, decompress=True):
    gz = path.name.lower().endswith(".gz")
    head = _open_head(path, gz)
    if len(head) < 348:
        if gz and decompress:
            _gzip_length(path)  # reports the truncation / corruption precisely
        if len(head) >= 4 and {struct.unpack("<i", head[:4])[0], struct.unpack(">i", head[:4])[0]} & {348, 540}:
            raise InputError(f"{path}: incomplete file: {len(head)} bytes, shorter than its NIfTI header.")
        return  # not a NIfTI file at all: the reader says it cannot read it
    hdr = nifti_header.parse(head)
    if hdr is None:
        return  # not a NIfTI header: the reader says so
    dims, bitpix, offset = hdr.dims, hdr.bitpix, hdr.vox_offset
    if offset == 0:
        return  # .hdr/.img pair: the data are elsewhere
    ndim = int(dims[0])
    if not 1 <= ndim <= 7:
        raise InputError(f"{path}: the NIfTI header declares {ndim} dimensions; the file is corrupt.")
    shape = dims[1 : ndim + 1]
    _check_nifti_geometry(path, hdr, shape)
    itemsize = bitpix / 8 if bitpix > 0 else 0
    data = _check_count(path, shape, 1)
    expected = offset + int(np.ceil(data * itemsize))
    found = _gzip_size(path, 0, expected, decompress) if gz else path.stat().st_size
    if found < expected:
        raise _truncated(path, "header and voxel data", expected, found)


def _check_nifti_geometry(path, hdr, shape):
    """Voxel sizes, intensity scaling and qform / sform that readers interpret differently: refused with the number.

    ITK turns a pixdim of 0 or NaN into 1 mm; ITK applies scl_inter when scl_slope is 0 while the standard
    (and nibabel, the reference mode's reader) applies no scaling; with qform and sform both set, readers
    choose differently. Each would give a confident score from a geometry or HU scale the file does not have.
    """
    low, high = VOXEL_SPACING_RANGE_MM
    for axis in range(min(len(shape), 3)):
        size = float(hdr.pixdim[axis + 1])
        if not (np.isfinite(size) and low <= size <= high):
            raise InputError(
                f"{path}: the NIfTI header gives voxel size pixdim[{axis + 1}] = {size:g} mm along axis "
                f"{'ijk'[axis]}; a CT voxel is between {low:g} and {high:g} mm (a reader would substitute 1 mm "
                "or use the number as it is). The header is damaged: export the image again."
            )
    slope, inter = float(hdr.scl_slope), float(hdr.scl_inter)
    scaled = bool(np.isfinite(slope) and slope != 0.0)  # 0 or NaN: "no scaling" for the standard and nibabel
    if not scaled and np.isfinite(inter) and inter != 0.0:
        raise InputError(
            f"{path}: the NIfTI header has scl_slope = {slope:g} with scl_inter = {inter:g}. The NIfTI standard "
            f"reads such a slope as 'no scaling', but ITK applies the intercept, so readers differ by "
            f"{abs(inter):g} HU. Set scl_slope to 1 (apply the intercept) or scl_inter to 0 (raw values are HU)."
        )
    if scaled and not np.isfinite(inter):
        raise InputError(
            f"{path}: the NIfTI intensity scaling is scl_slope = {slope:g} with scl_inter = {inter:g}, not a "
            "number, so no Hounsfield unit can be computed. Export the image again."
        )
    if hdr.qform_code > 0 and hdr.sform_code > 0 and len(shape) >= 3:
        corners = np.array(
            [[a, b, c, 1.0] for a in (0, shape[0] - 1) for b in (0, shape[1] - 1) for c in (0, shape[2] - 1)]
        )
        apart = float(np.max(np.linalg.norm((corners @ hdr.qform().T - corners @ hdr.sform().T)[:, :3], axis=1)))
        if not apart <= NIFTI_QFORM_SFORM_TOLERANCE_MM:
            raise InputError(
                f"{path}: the NIfTI header's qform (code {hdr.qform_code}) and sform (code {hdr.sform_code}) "
                f"place the image up to {apart:.1f} mm apart (tolerance {NIFTI_QFORM_SFORM_TOLERANCE_MM:g} mm): "
                "readers choose one or the other, so the lesion would land on other voxels. Make them agree "
                "(e.g. nibabel: img.set_qform(img.get_sform())) or export the image again."
            )


# ----------------------------------------------------------------------------------------------------- NRRD
def _check_nrrd(path: Path, decompress=True):
    header = nrrd_header.read(path)
    if header is None or "sizes" not in header.fields:
        return
    fields, header_len = header.fields, header.length
    try:
        shape = [int(s) for s in fields["sizes"].split()]
    except ValueError:
        raise InputError(f"{path}: NRRD 'sizes' field {fields['sizes']!r} is not a list of integers.") from None
    itemsize = _NRRD_BYTES.get(fields.get("type", "").lower())
    if itemsize is None:
        return
    expected = _check_count(path, shape, itemsize)
    encoding = fields.get("encoding", "raw").lower()
    datafile = fields.get("data file", fields.get("datafile"))
    skip = int(fields.get("byte skip", fields.get("byteskip", "0")) or 0)
    if int(fields.get("line skip", fields.get("lineskip", "0")) or 0) or skip < 0:
        return  # rare layouts: the reader handles them
    if datafile:
        if datafile.startswith("LIST") or len(datafile.split()) > 1:
            return  # several data files: not checked here
        src, offset = path.parent / datafile, 0
        check_regular(src)
        if not src.is_file():
            raise InputError(f"{path}: its voxel data file {src} (NRRD 'data file' field) does not exist.")
    else:
        src, offset = path, header_len
    if encoding == "raw":
        found = max(src.stat().st_size - offset - skip, 0)
    elif encoding in ("gzip", "gz"):
        found = max(_gzip_size(src, offset, expected + skip, decompress) - skip, 0)
    else:
        return  # ascii / hex / bzip2: rare; the reader is trusted
    if found < expected:
        raise _truncated(src, f"voxel data ({' x '.join(map(str, shape))}, {itemsize} byte(s) each)", expected, found)


# ------------------------------------------------------------------------------------------------ MetaImage
def _check_metaimage(path: Path, decompress=True):
    fields, n = {}, 0
    with open(path, "rb") as f:
        for raw in f:
            n += len(raw)
            key, sep, value = raw.decode("latin-1").partition("=")
            if not sep:
                return  # not a MetaImage header
            fields[key.strip().lower()] = value.strip()
            if key.strip().lower() == "elementdatafile":
                break
            if n > 65536:
                return
    try:
        shape = [int(s) for s in fields.get("dimsize", "").split()]
        channels = int(fields.get("elementnumberofchannels", "1"))
    except ValueError:
        raise InputError(f"{path}: MetaImage DimSize {fields.get('dimsize')!r} is not a list of integers.") from None
    itemsize = _MET_BYTES.get(fields.get("elementtype", "").upper())
    datafile = fields.get("elementdatafile", "")
    if not shape or itemsize is None or not datafile:
        return
    expected = _check_count(path, shape + [channels], itemsize)
    if datafile.upper() == "LOCAL":
        src, offset = path, n
    elif datafile.upper().startswith("LIST") or "%" in datafile or len(datafile.split()) > 1:
        return
    else:
        src, offset = path.parent / datafile, 0
        check_regular(src)
        if not src.is_file():
            raise InputError(f"{path}: its voxel data file {src} (ElementDataFile) does not exist.")
    if int(fields.get("headersize", "0") or 0) > 0:
        offset += int(fields["headersize"])
    if fields.get("compresseddata", "false").lower() == "true":
        if not decompress:
            return
        found = _zlib_length(src, offset)
    else:
        found = max(src.stat().st_size - offset, 0)
    if found < expected:
        raise _truncated(src, f"voxel data ({' x '.join(map(str, shape))})", expected, found)


# ---------------------------------------------------------------------------------------------------- DICOM
def check_dicom_series(files, folder) -> None:
    """Every slice's header (pydicom, no pixels) against one regular grid, before GDCM builds the volume.

    Refused (InputError with the file and the numbers): a Modality other than CT; a slice without
    ImagePositionPatient / ImageOrientationPatient (ITK would put it at 0 mm with 1 mm spacing); slices of
    another size or orientation; a declared size beyond MAX_VOXELS; duplicate or unevenly spaced positions
    along the slice normal (a missing slice); positions that leave the normal (gantry tilt, in-plane drift)
    by more than DICOM_SLICE_OFFSET_TOLERANCE_MM, because ITK places every slice on one affine built from
    the first slice and the normal, so a tilted slice would land beside its own ImagePositionPatient.
    """
    try:
        import pydicom
    except ImportError:  # pragma: no cover - pydicom comes with highdicom, installed in CI
        return
    tags = ["ImagePositionPatient", "ImageOrientationPatient", "Rows", "Columns", "Modality", "NumberOfFrames"]
    slices = []
    for f in files:
        try:
            ds = pydicom.dcmread(str(f), stop_before_pixels=True, specific_tags=tags)
        except Exception:
            return  # not readable by pydicom: GDCM decides (and reports)
        _check_modality(f, ds)
        if int(getattr(ds, "NumberOfFrames", 1) or 1) > 1:
            return  # a multi-frame (enhanced) image: its geometry is per frame, GDCM decides
        slices.append((f, ds))
    first_file, first = slices[0]
    size = _size(first_file, first)
    _check_count(folder, (*size, len(files)), 1)  # the first slice's size, before GDCM allocates the volume
    ipp, iop = np.empty((len(slices), 3)), np.empty((len(slices), 6))
    for n, (f, ds) in enumerate(slices):
        ipp[n], iop[n] = _position(f, ds), _orientation(f, ds)
        if _size(f, ds) != size:
            raise InputError(
                f"{f}: a slice of {' x '.join(map(str, _size(f, ds)))} pixels in a series whose first slice "
                f"({first_file}) has {size[0]} x {size[1]}: two series mixed in one folder, or a scout image. "
                "Keep only the CT series' slices in the folder."
            )
        turned = float(np.max(np.abs(iop[n] - iop[0])))
        if turned > DICOM_ORIENTATION_TOLERANCE:
            raise InputError(
                f"{f}: its ImageOrientationPatient differs from the first slice's ({first_file}) by up to "
                f"{turned:.4f} in a direction cosine ({_angle(iop[0], iop[n]):.2f} degrees): the slices are not one "
                "regular grid. Keep only one series' slices in the folder."
            )
    if len(slices) < 2:
        return
    normal = np.cross(iop[0, :3], iop[0, 3:])
    along = ipp @ normal
    order = np.argsort(along, kind="stable")
    z = along[order]
    _check_spacing(z, folder, len(files))
    _check_stacking(ipp[order], normal, z, [slices[i][0] for i in order], folder)


def _check_modality(path, ds):
    modality = str(getattr(ds, "Modality", "") or "").strip().upper()
    if modality != "CT":
        what = f"Modality {modality!r}" if modality else "no Modality (0008,0060)"
        raise InputError(
            f"{path}: this DICOM image has {what}, not 'CT'. DFM50N scores CT in Hounsfield units only; "
            "give the CT series of the study."
        )


def _size(path, ds) -> tuple:
    why = "the slice's size is unknown; the file is damaged."
    return int(_numbers(path, ds, "Columns", None, why)[0]), int(_numbers(path, ds, "Rows", None, why)[0])


def _position(path, ds):
    return _numbers(
        path,
        ds,
        "ImagePositionPatient",
        3,
        "without it the slice cannot be placed in the patient (a reader would put it at 0 mm with 1 mm slice "
        "spacing). Export the series again from the scanner or PACS with its geometry.",
    )


def _orientation(path, ds):
    why = "two orthogonal unit vectors are needed to know the slice's orientation. Export the series again."
    c = _numbers(path, ds, "ImageOrientationPatient", 6, why)
    if abs(np.linalg.norm(np.cross(c[:3], c[3:])) - 1) > 0.01:
        raise InputError(f"{path}: its ImageOrientationPatient {c.tolist()} is not usable: {why}")
    return c


def _numbers(path, ds, keyword, count, why) -> np.ndarray:
    """`count` finite numbers from a header attribute (None: one single value), else InputError naming the file
    and what was found."""
    value = getattr(ds, keyword, None)
    try:
        v = np.array([float(x) for x in (value if count else [value])], float)
    except (TypeError, ValueError):
        v = np.array([])
    if v.shape != (count or 1,) or not np.all(np.isfinite(v)):
        raise InputError(f"{path}: has no usable {keyword} (found {value!r}); {why}")
    return v


def _angle(a, b) -> float:
    """Largest angle in degrees between the row (and the column) cosines of two ImageOrientationPatient values."""
    cos = [
        float(np.clip(np.dot(a[s], b[s]) / np.linalg.norm(a[s]) / np.linalg.norm(b[s]), -1, 1))
        for s in (slice(0, 3), slice(3, 6))
    ]
    return float(np.degrees(np.arccos(min(cos))))


def _check_spacing(z, folder, count):
    gaps = np.diff(z)
    dup = int(np.sum(gaps < 1e-3))
    if dup:
        raise InputError(
            f"DICOM series in {folder}: {dup} slice position(s) occur twice among {count} files (e.g. at "
            f"{z[1:][gaps < 1e-3][0]:.3f} mm along the slice normal): two series or duplicate files mixed in one "
            "folder. Keep one copy of each slice."
        )
    med = float(np.median(gaps))
    bad = np.flatnonzero(np.abs(gaps - med) > _SPACING_TOLERANCE * med + 1e-3)
    if bad.size:
        i = int(bad[0])
        missing = int(round(float(np.sum(gaps[bad]) / med - bad.size)))
        raise InputError(
            f"DICOM series in {folder}: uneven slice spacing: {bad.size} gap(s) differ from the usual "
            f"{med:.3f} mm, e.g. {gaps[i]:.3f} mm between {z[i]:.3f} and {z[i + 1]:.3f} mm along the slice "
            f"normal ({count} slices; about {max(missing, 0)} slice(s) missing?). A missing slice would be "
            "interpolated away silently: copy the complete series again."
        )


def _check_stacking(ipp, normal, z, files, folder):
    """Slice positions (sorted along the normal) against the one affine ITK builds: first slice + k * gap * normal.

    The in-plane offset of each slice from that affine is its drift; a straight-line fit of the offsets
    against the position along the normal gives the tilt angle (a gantry tilt is a constant sideways step).
    """
    offset = (ipp - ipp[0]) - np.outer(z - z[0], normal)  # in-plane part of each slice's displacement
    drift = np.linalg.norm(offset, axis=1)
    worst = int(np.argmax(drift))
    if drift[worst] <= DICOM_SLICE_OFFSET_TOLERANCE_MM:
        return
    span = z - z[0]
    slope = np.linalg.lstsq(np.column_stack([span, np.ones_like(span)]), offset, rcond=None)[0][0]
    tilt = float(np.degrees(np.arctan(np.linalg.norm(slope))))
    what = f"tilted by {tilt:.1f} degrees from it (gantry tilt?)" if tilt >= 0.1 else "drifting in-plane"
    raise InputError(
        f"DICOM series in {folder}: the slices do not stack along their normal: {what}; {files[worst]} lies "
        f"{drift[worst]:.1f} mm beside the position one "
        f"regular grid gives it (tolerance {DICOM_SLICE_OFFSET_TOLERANCE_MM} mm; {len(files)} slices). Read as "
        "one volume, its voxels and a lesion drawn in patient coordinates would not meet. Resample the series "
        "onto a regular grid first (dcm2niix corrects gantry tilt; so does Slicer's DICOM import with "
        "'Acquisition geometry regularization'), then give that volume."
    )
