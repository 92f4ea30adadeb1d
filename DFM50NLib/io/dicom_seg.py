"""DICOM-SEG lesions (highdicom): one segment on the SEG's own grid, placed by its frames' world positions."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from DFM50NLib.errors import InputError
from DFM50NLib.geometry.volume import RAS_TO_LPS, Volume

DICOM_SEG_SOP_CLASSES = ("1.2.840.10008.5.1.4.1.1.66.4", "1.2.840.10008.5.1.4.1.1.66.7")


def is_dicom_seg(path) -> bool:
    """A single DICOM file whose SOP Class is a Segmentation. Reads the 132-byte preamble and, for DICOM
    files only, the header up to SOPClassUID; so a NIfTI or a CT slice costs one small read.

    Checked before SimpleITK sees the file: GDCM would read a multi-frame SEG as a plain image and
    invent its geometry (one frame per slice, in file order), silently misplacing the lesion.
    """
    from DFM50NLib.io.dicom_source import dicom_sop_class

    needs = "pip install highdicom, or export the mask as NIfTI/NRRD"
    return dicom_sop_class(path, needs=needs) in DICOM_SEG_SOP_CLASSES


def read_dicom_seg(path, label, segment) -> Volume:
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
    number = choose_dicom_segment(path, table, label, segment)
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


def choose_dicom_segment(path, table, label, segment) -> int:
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
