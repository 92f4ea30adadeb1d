"""Read and write images as `Volume`s: NIfTI, NRRD, MetaImage, DICOM series, Slicer ``.seg.nrrd`` and DICOM-SEG.

SimpleITK does the reading; its LPS geometry is converted to RAS here, once. The voxel array is a
read-only view of SimpleITK's buffer (``[k, j, i]`` transposed to ``[i, j, k]``), not a copy: a
512x512x600 CT costs its file size once. The view keeps its SimpleITK image alive by itself.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from DFM50NLib import atomic
from DFM50NLib.errors import InputError
from DFM50NLib.geometry import integrity
from DFM50NLib.geometry.volume import RAS_TO_LPS, Volume

IMAGE_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")
WRITE_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".mha")  # single-file formats, so the write can be atomic
_FINITE_CHECK_SLAB = 16  # slices per chunk when looking for NaN/inf (bounded temporary memory)


# ----------------------------------------------------------------------------------------------- reading
def read_volume(path, series_uid: str | None = None) -> Volume:
    """Read a 3-D scalar image (file, or folder holding one DICOM series) as a RAS `Volume`.

    Refuses (InputError): missing/unreadable files, 2-D or 4-D images, vector pixels, NaN/inf voxels.
    A folder with several DICOM series needs `series_uid` (the error lists them).
    """
    vol = _read_fast(path)
    if vol is not None:
        _check_finite(vol.array, path)  # the file's own values: NaN stays NaN on this path
        return vol
    img = _read_sitk(path, series_uid)
    if img.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(
            f"{path}: has {img.GetNumberOfComponentsPerPixel()} values per voxel (vector/RGB "
            "or multi-layer image); give a single-channel 3-D CT or label map."
        )
    vol = _to_volume(img, path)
    _check_finite(vol.array, path)
    if np.issubdtype(vol.array.dtype, np.floating) and str(path).lower().endswith((".nii", ".nii.gz")):
        _check_finite_nifti(path)  # ITK's NIfTI reader silently turns NaN into 0: look at the file itself
    return vol


def _read_fast(path):
    """Plain NIfTI with ISA-L: voxels straight from the inflated bytes (fast_nifti.py), else None.

    The header sizes are checked first (integrity.py); inflating the whole stream checks CRC-32 and length."""
    from DFM50NLib.geometry.fast_nifti import read_nifti_volume

    p = Path(path)
    if not p.name.lower().endswith((".nii", ".nii.gz")) or not p.is_file():
        return None
    integrity.check_image_file(p, decompress=False)  # declared sizes, gzip trailer, FIFOs: before any allocation
    return read_nifti_volume(p, name=file_stem(p))


def check_ct_intensities(vol: Volume) -> list:
    """Warnings (not errors) when the values do not look like CT Hounsfield units, e.g. an MR or raw counts."""
    a = vol.array
    lo, hi = float(np.min(a)), float(np.max(a))
    notes = []
    # CT HU: air/lung well below -200 in any chest CT, nothing denser than lung below -500 is implausible,
    # and values above ~4000 are beyond the HU scale (raw detector counts, an unrescaled export)
    if lo > -200 or hi < -500 or hi > 4000:
        notes.append(
            f"The image values range from {lo:g} to {hi:g}, which does not look like a CT in Hounsfield "
            "units (air about -1000, soft tissue 0-100). Check that it is a CT with rescale "
            "slope/intercept applied; the score is only meaningful for CT HU."
        )
    return notes


def read_mask(path, label=None, segment=None, reference=None) -> Volume:
    """Read a lesion mask: any label image, a Slicer ``.seg.nrrd``, a DICOM-SEG or an RTSTRUCT file.

    With `segment`, the result is that segment alone as 0/1 (uint8). Without it, the label map is returned
    as stored (integers); `label` then selects a value later, in `mask.prepare_mask`. A DICOM-SEG (needs
    highdicom) picks its segment by `segment` (SegmentLabel or SegmentDescription) or `label` (segment
    number) and comes back on its own grid; `prepare_mask` resamples it onto the CT in world space.
    An RTSTRUCT (ROI by name or number) is rasterised onto `reference`, the CT Volume (geometry/rtstruct.py).
    """
    integrity.check_regular(path)  # a FIFO would block the header read below
    if _is_seg_nrrd(path):
        return _read_segmentation(path, label, segment)
    if is_dicom_seg(path):
        return _read_dicom_seg(path, label, segment)
    from DFM50NLib.geometry.rtstruct import is_rtstruct, read_rtstruct

    if is_rtstruct(path):
        return read_rtstruct(path, reference, label=label, segment=segment)
    if segment is not None:
        raise InputError(
            f"{path}: a segment name ({segment!r}) was given but this is not a Slicer .seg.nrrd "
            "segmentation, a DICOM-SEG or an RT Structure Set; give the lesion's label value instead "
            "(--label N), or the segmentation file."
        )
    vol = read_volume(path)
    return _as_integer_labels(vol, path)


def lesion_segments(path, reference=None):
    """Every segment of a Slicer ``.seg.nrrd``, a DICOM-SEG or an RT Structure Set (its ROIs with contours,
    drawn on `reference`, the CT Volume) as ``(name, 0/1 Volume)`` in file order; None for a plain label map.
    For importing an existing segmentation whole (the browser app); each is read as `read_mask` reads it."""

    def binary(vol):
        return vol.with_array((np.asarray(vol.array) > 0).astype(np.uint8))

    if _is_seg_nrrd(path):
        names = [s["name"] for s in read_segment_table(path)]
        if len(set(names)) != len(names):
            raise InputError(
                f"{path}: segment names repeat ({', '.join(names)}); give each a name of its own in Slicer."
            )
        return [(name, read_mask(path, segment=name)) for name in names]
    if is_dicom_seg(path):
        import highdicom as hd

        table = dicom_seg_segments(hd.seg.segread(str(path)))
        return [(s["label"] or f"Segment {s['number']}", binary(read_mask(path, label=s["number"]))) for s in table]
    from DFM50NLib.geometry.rtstruct import is_rtstruct, rtstruct_rois

    if is_rtstruct(path):
        import pydicom

        rois = [r for r in rtstruct_rois(pydicom.dcmread(str(path))) if r["contours"]]
        return [
            (r["name"] or f"ROI {r['number']}", binary(read_mask(path, label=r["number"], reference=reference)))
            for r in rois
        ]
    return None


def _read_sitk(path, series_uid=None):
    import SimpleITK as sitk

    p = Path(path)
    if not p.exists():
        raise InputError(f"File not found: {p}. Check the path (and the working folder for relative paths).")
    if p.is_dir():
        return _read_dicom_series(p, series_uid)
    integrity.check_image_file(p)  # ITK zero-fills what is missing: inflate and check the whole stream first
    try:
        return sitk.ReadImage(str(p))
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[-1] if str(exc).strip() else ""
        raise InputError(
            f"Cannot read {p} as an image ({first}). Supported: NIfTI (.nii, .nii.gz), NRRD "
            "(.nrrd, .nhdr), MetaImage (.mha, .mhd) and folders holding a DICOM series."
        ) from None


def _read_dicom_series(folder: Path, series_uid=None):
    import SimpleITK as sitk

    uids = list(sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder)) or ())
    if not uids:
        raise InputError(
            f"No DICOM series found in folder {folder}. Give the folder that directly holds the "
            "CT's .dcm files, or an image file (NIfTI, NRRD, MetaImage)."
        )
    if series_uid is None and len(uids) > 1:
        listed = "; ".join(
            f"{u} ({len(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), u))} files)" for u in uids
        )
        raise InputError(
            f"Folder {folder} holds {len(uids)} DICOM series: {listed}. Put the CT series in a "
            "folder of its own, or choose one with series_uid=."
        )
    uid = series_uid if series_uid is not None else uids[0]
    if uid not in uids:
        raise InputError(f"DICOM series {uid} is not in {folder}; present: {', '.join(uids)}.")
    reader = sitk.ImageSeriesReader()
    files = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), uid)
    integrity.check_dicom_series(files, folder)  # missing / duplicate slices
    reader.SetFileNames(files)
    try:
        return reader.Execute()
    except RuntimeError as exc:
        raise InputError(
            f"Cannot read the DICOM series {uid} in {folder}: {str(exc).strip().splitlines()[-1]}"
        ) from None


class _KeepAlive:
    """Array-interface wrapper whose only job is to hold the SimpleITK image the view points into."""

    def __init__(self, view, owner):
        self.__array_interface__ = view.__array_interface__
        self._view, self._owner = view, owner


def _to_volume(img, path) -> Volume:
    """SimpleITK image (LPS, [k, j, i]) -> Volume (RAS, [i, j, k]) without copying the voxels."""
    import SimpleITK as sitk

    dim = img.GetDimension()
    size = tuple(img.GetSize())
    if dim == 4 and size[3] == 1:  # a 3-D image stored with a trailing time axis of length 1
        img = img[:, :, :, 0]
        dim, size = 3, size[:3]
    if dim != 3 or min(size) < 1:
        what = "2-D" if dim == 2 else f"{dim}-D"
        raise InputError(
            f"{path}: is a {what} image of size {size}; DFM50N needs one 3-D volume "
            "(a CT series or a lesion mask with at least one voxel along each axis)."
        )
    view = sitk.GetArrayViewFromImage(img)
    array = np.asarray(_KeepAlive(view, img)).T  # [i, j, k], read-only, shares the image buffer
    m = np.eye(4)
    m[:3, :3] = np.asarray(img.GetDirection(), dtype=float).reshape(3, 3) * np.asarray(img.GetSpacing())[None, :]
    m[:3, 3] = img.GetOrigin()
    return Volume(array, RAS_TO_LPS @ m, name=file_stem(path), meta={"path": str(path)})


def _check_finite(array, path):
    if not np.issubdtype(array.dtype, np.floating):
        return
    for k0 in range(0, array.shape[2], _FINITE_CHECK_SLAB):
        slab = array[:, :, k0 : k0 + _FINITE_CHECK_SLAB]
        if not np.isfinite(slab).all():
            bad = np.argwhere(~np.isfinite(slab))[0] + (0, 0, k0)
            raise InputError(
                f"{path}: contains NaN or infinite voxel values (first at ijk {tuple(int(v) for v in bad)}"
                "). Re-export the image without NaN (e.g. fill with -1024 HU outside the scan)."
            )


def _check_finite_nifti(path):
    import nibabel as nib

    data = np.asanyarray(nib.load(str(path)).dataobj)
    if data.ndim >= 3 and np.issubdtype(data.dtype, np.floating):
        _check_finite(data.reshape(data.shape[:3]) if data.size == np.prod(data.shape[:3]) else data[..., 0], path)


def _as_integer_labels(vol: Volume, path) -> Volume:
    a = vol.array
    if np.issubdtype(a.dtype, np.floating):
        # float label maps (e.g. from some converters) must still hold whole numbers
        for k0 in range(0, a.shape[2], _FINITE_CHECK_SLAB):
            slab = a[:, :, k0 : k0 + _FINITE_CHECK_SLAB]
            if np.any(slab != np.round(slab)):
                raise InputError(
                    f"{path}: the mask holds fractional values (a probability map?); give a label "
                    "map with integer values (threshold it first, e.g. at 0.5)."
                )
        a = a.astype(np.int32)
        return vol.with_array(a)
    if a.dtype == bool:
        return vol.with_array(a.astype(np.uint8))
    return vol


def file_stem(path, extensions=(".seg.nrrd",) + IMAGE_SUFFIXES) -> str:
    """File name without its (possibly double) image extension: ``ct01.nii.gz`` -> ``ct01``."""
    name = Path(str(path)).name
    for ext in extensions:
        if name.lower().endswith(ext):
            return name[: -len(ext)]
    return name


# ---------------------------------------------------------------------------------- Slicer segmentations
def _is_seg_nrrd(path) -> bool:
    return str(path).lower().endswith(".seg.nrrd")


def read_segment_table(path) -> list:
    """Segments of a ``.seg.nrrd`` from its header: dicts with index, id, name, label_value, layer."""
    header = _nrrd_header(path)
    n_layers = _nrrd_layers(header.fields)
    segs = {}
    for key, value in header.keyvalues.items():
        m = re.fullmatch(r"Segment(\d+)_(\w+)", key)
        if m:
            segs.setdefault(int(m.group(1)), {})[m.group(2)] = value
    table = []
    for idx in sorted(segs):
        s = segs[idx]
        # files from before Slicer 4.11 have no LabelValue/Layer: one layer per segment, value 1
        layer = int(s.get("Layer", idx if n_layers > 1 else 0))
        table.append(
            {
                "index": idx,
                "id": s.get("ID", f"Segment_{idx}"),
                "name": s.get("Name", s.get("ID", "")),
                "label_value": int(s.get("LabelValue", 1)),
                "layer": layer,
            }
        )
    return table


def _nrrd_header(path):
    """The NRRD header (geometry/nrrd_header.py); InputError when the file is not NRRD or cannot be read."""
    from DFM50NLib.geometry import nrrd_header

    try:
        header = nrrd_header.read(path)
    except OSError as exc:
        raise InputError(f"Cannot read {path}: {exc.strerror}.") from None
    if header is None:
        raise InputError(
            f"{path}: is not a NRRD file (no NRRD magic line); export the segmentation from Slicer as .seg.nrrd."
        )
    return header


def _nrrd_layers(fields) -> int:
    sizes = fields.get("sizes", "").split()
    return int(sizes[0]) if fields.get("dimension") == "4" and len(sizes) == 4 else 1


def _read_segmentation(path, label, segment) -> Volume:
    import SimpleITK as sitk

    table = read_segment_table(path)
    described = ", ".join(f"{s['name']!r} (label {s['label_value']}, layer {s['layer']})" for s in table) or "none"
    if segment is not None:
        chosen = [s for s in table if s["name"] == segment] or [s for s in table if s["id"] == segment]
        if not chosen:
            raise InputError(f"{path}: has no segment named {segment!r}. Segments: {described}.")
    elif label is not None:
        chosen = [s for s in table if s["label_value"] == int(label)]
        layers = {s["layer"] for s in table}
        if len(layers) > 1 and len(chosen) != 1:
            raise InputError(
                f"{path}: label {label} does not name exactly one segment in this multi-layer "
                f"segmentation. Choose by name (--segment NAME). Segments: {described}."
            )
        if not chosen and table:
            raise InputError(f"{path}: no segment has label value {label}. Segments: {described}.")
    else:
        if len(table) > 1:
            raise InputError(
                f"{path}: holds {len(table)} segments; say which one is the lesion with "
                f"--segment NAME (or --label N). Segments: {described}."
            )
        chosen = table
    img = _read_sitk(path)
    ncomp = img.GetNumberOfComponentsPerPixel()
    layer = chosen[0]["layer"] if chosen else 0
    if layer >= ncomp:
        raise InputError(
            f"{path}: segment layer {layer} is missing (the file has {ncomp} layer(s)); "
            "re-save the segmentation from Slicer."
        )
    if ncomp > 1:
        img = sitk.VectorIndexSelectionCast(img, layer)
    vol = _to_volume(img, path)
    vol.meta.update(segments=table, segment=chosen[0]["name"] if chosen else None, layer=layer)
    if segment is not None or (chosen and ncomp > 1 and label is None):
        value = chosen[0]["label_value"]
        out = vol.with_array((vol.array == value).astype(np.uint8))
        out.meta["label_value"] = value
        return out
    return _as_integer_labels(vol, path)


# ------------------------------------------------------------------------------------------------ DICOM-SEG
# Segmentation Storage, and Label Map Segmentation Storage (DICOM 2024b, also read by highdicom >= 0.23)
DICOM_SEG_SOP_CLASSES = ("1.2.840.10008.5.1.4.1.1.66.4", "1.2.840.10008.5.1.4.1.1.66.7")


def is_dicom_seg(path) -> bool:
    """A single DICOM file whose SOP Class is a Segmentation. Reads the 132-byte preamble and, for DICOM
    files only, the header up to SOPClassUID; so a NIfTI or a CT slice costs one small read.

    Checked before SimpleITK sees the file: GDCM would read a multi-frame SEG as a plain image and
    invent its geometry (one frame per slice, in file order), silently misplacing the lesion.
    """
    from DFM50NLib.geometry.dicom_source import dicom_sop_class

    needs = "pip install highdicom, or export the mask as NIfTI/NRRD"
    return dicom_sop_class(path, needs=needs) in DICOM_SEG_SOP_CLASSES


def _read_dicom_seg(path, label, segment) -> Volume:
    """One segment of a DICOM-SEG as a label Volume on the SEG's own grid (world positions from its frames).

    highdicom places every stored frame by its ImagePositionPatient, whatever the frame order and
    however sparse (empty slices are usually omitted; absent positions are filled with 0), and gives
    the index->LPS affine; that is converted to RAS here. Chosen by `segment` the result is 0/1; chosen
    by `label` (segment number) the voxels hold that number, so `prepare_mask(label=N)` finds them.
    """
    try:
        import highdicom as hd
    except ImportError:
        raise InputError(
            f"{path}: is a DICOM-SEG; reading it needs highdicom (pip install highdicom), "
            "or convert the mask to NIfTI/NRRD (e.g. with dcmqi's segimage2itkimage)."
        ) from None
    try:
        seg = hd.seg.segread(str(path))
    except Exception as exc:
        raise InputError(f"Cannot read DICOM-SEG {path}: {type(exc).__name__}: {exc}") from None
    table = dicom_seg_segments(seg)
    number = _choose_dicom_segment(path, table, label, segment)
    try:
        hvol = seg.get_volume(segment_numbers=[number], combine_segments=False)
    except Exception as exc:
        raise InputError(
            f"{path}: the frames of DICOM-SEG segment {number} do not form a regular 3-D grid "
            f"({type(exc).__name__}: {exc}). Convert it to NIfTI/NRRD against its CT (e.g. "
            "dcmqi's segimage2itkimage or Slicer) and give that file."
        ) from None
    if hvol is None:
        raise InputError(
            f"{path}: DICOM-SEG segment {number} has no 3-D geometry (no frame of reference); "
            "convert it to NIfTI/NRRD against its CT and give that file."
        )
    arr = np.asarray(hvol.array)
    arr = arr.reshape(arr.shape[:3])  # one segment: drop the channel axis
    if np.issubdtype(arr.dtype, np.floating) and np.any((arr != 0) & (arr != 1)):
        raise InputError(
            f"{path}: segment {number} is a FRACTIONAL (probability) segmentation; give a "
            "binary mask (threshold it first, e.g. at 0.5)."
        )
    inside = arr > 0
    if segment is None and label is not None:
        values = inside.astype(np.uint8 if number < 256 else np.uint16) * number
    else:
        values = inside.astype(np.uint8)
    chosen = next(s for s in table if s["number"] == number)
    meta = {
        "path": str(path),
        "format": "DICOM-SEG",
        "segments": table,
        "segment": chosen["label"],
        "segment_number": number,
        "label_value": int(values.max(initial=0)) or 1,
        "referenced_series": _referenced_series(seg),
    }
    return Volume(values, RAS_TO_LPS @ np.asarray(hvol.affine, dtype=float), name=Path(str(path)).stem, meta=meta)


def dicom_seg_segments(seg) -> list:
    """Segments of a DICOM-SEG dataset: dicts with number, label (SegmentLabel), description."""
    background = getattr(seg, "PixelPaddingValue", None)  # LABELMAP SEGs may list the background
    return [
        {
            "number": int(d.SegmentNumber),
            "label": str(getattr(d, "SegmentLabel", "")),
            "description": str(getattr(d, "SegmentDescription", "")),
        }
        for d in seg.SegmentSequence
        if background is None or int(d.SegmentNumber) != int(background)
    ]


def _choose_dicom_segment(path, table, label, segment) -> int:
    described = (
        ", ".join(
            f"{s['number']}: {s['label']!r}" + (f" ({s['description']})" if s["description"] else "") for s in table
        )
        or "none"
    )
    if segment is not None:
        found = [s for s in table if s["label"] == segment] or [s for s in table if s["description"] == segment]
        if len(found) != 1:
            what = "no segment" if not found else f"{len(found)} segments"
            raise InputError(
                f"{path}: DICOM-SEG has {what} labelled {segment!r}; choose by segment number "
                f"(--label N). Segments: {described}."
            )
        return found[0]["number"]
    if label is not None:
        if int(label) not in {s["number"] for s in table}:
            raise InputError(f"{path}: DICOM-SEG has no segment number {label}. Segments: {described}.")
        return int(label)
    if len(table) != 1:
        raise InputError(
            f"{path}: DICOM-SEG holds {len(table)} segments; say which one is the lesion with "
            f"--segment NAME (or --label NUMBER). Segments: {described}."
        )
    return table[0]["number"]


def _referenced_series(seg) -> str:
    """SeriesInstanceUID of the CT the SEG was drawn on (provenance only: the mask is placed by world position)."""
    refs = getattr(seg, "ReferencedSeriesSequence", None) or []
    return str(getattr(refs[0], "SeriesInstanceUID", "")) if len(refs) else ""


# ----------------------------------------------------------------------------------------------- writing
def write_volume(vol: Volume, path) -> Path:
    """Write `vol` atomically (format from the suffix: .nii.gz, .nii, .nrrd, .mha) with its RAS geometry.

    The file's geometry is the volume's own, so audit cubes overlay the CT in Slicer / ITK-SNAP.
    """
    import SimpleITK as sitk

    path = Path(path)
    if not str(path).lower().endswith(WRITE_SUFFIXES):
        raise InputError(f"Cannot write {path}: use one of {', '.join(WRITE_SUFFIXES)}.")
    img = to_sitk(vol)
    with atomic.atomic_path(path) as tmp:
        sitk.WriteImage(img, str(tmp), useCompression=not str(path).lower().endswith(".nii"))
    return path


def to_sitk(vol: Volume):
    """`Volume` -> SimpleITK image with LPS origin/spacing/direction (copies the voxels once)."""
    import SimpleITK as sitk

    a = np.asarray(vol.array)
    if a.ndim != 3:
        raise InputError(f"Only 3-D volumes can be written, got shape {a.shape}.")
    if a.dtype == bool:
        a = a.astype(np.uint8)
    elif a.dtype == np.float16:
        a = a.astype(np.float32)
    img = sitk.GetImageFromArray(np.ascontiguousarray(a.T))
    lps = RAS_TO_LPS @ vol.ijk_to_ras
    spacing = np.linalg.norm(lps[:3, :3], axis=0)
    img.SetSpacing([float(s) for s in spacing])
    img.SetOrigin([float(v) for v in lps[:3, 3]])
    img.SetDirection([float(v) for v in (lps[:3, :3] / spacing[None, :]).ravel()])
    return img
