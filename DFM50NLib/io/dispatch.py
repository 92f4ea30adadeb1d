"""The one entry point for reading: which reader a path goes to (CT image, DICOM folder, label map,
``.seg.nrrd``, DICOM-SEG, RTSTRUCT), with the integrity and value checks every path gets.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

import DFM50NLib.io.integrity as integrity
from DFM50NLib.errors import InputError
from DFM50NLib.geometry.volume import Volume
from DFM50NLib.io.dicom_seg import dicom_seg_segments, is_dicom_seg, read_dicom_seg
from DFM50NLib.io.filenames import file_stem
from DFM50NLib.io.itk_image import read_itk, to_volume
from DFM50NLib.io.seg_nrrd import is_seg_nrrd, read_seg_nrrd, read_segment_table
from DFM50NLib.io.values import as_integer_labels, check_finite, check_finite_nifti, check_spacing


def read_volume(path, series_uid: str | None = None) -> Volume:
    """Read a 3-D scalar image (file, or folder holding one DICOM series) as a RAS `Volume`.

    Refuses (InputError): missing/unreadable files, 2-D or 4-D images, vector pixels, NaN/inf voxels, voxel
    sizes outside VOXEL_SPACING_RANGE_MM (and, for NIfTI and DICOM, the header checks of integrity.py).
    A folder with several DICOM series needs `series_uid` (the error lists them).
    """
    vol = _read_fast(path)
    if vol is not None:
        check_spacing(vol, path)
        check_finite(vol.array, path)  # the file's own values: NaN stays NaN on this path
        return vol
    img = read_itk(path, series_uid)
    if img.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(
            f"{path}: has {img.GetNumberOfComponentsPerPixel()} values per voxel (vector/RGB "
            "or multi-layer image); give a single-channel 3-D CT or label map."
        )
    vol = to_volume(img, path)
    check_spacing(vol, path)
    check_finite(vol.array, path)
    if np.issubdtype(vol.array.dtype, np.floating) and str(path).lower().endswith((".nii", ".nii.gz")):
        check_finite_nifti(path)  # ITK's NIfTI reader silently turns NaN into 0: look at the file itself
    return vol


def _read_fast(path):
    """Plain NIfTI with ISA-L: voxels straight from the inflated bytes (fast_nifti.py), else None.

    The header sizes are checked first (integrity.py); inflating the whole stream checks CRC-32 and length."""
    from DFM50NLib.io.fast_nifti import read_nifti_volume

    p = Path(path)
    if not p.name.lower().endswith((".nii", ".nii.gz")) or not p.is_file():
        return None
    integrity.check_image_file(p, decompress=False)  # declared sizes, gzip trailer, FIFOs: before any allocation
    return read_nifti_volume(p, name=file_stem(p))


def read_mask(path, label=None, segment=None, reference=None) -> Volume:
    """Read a lesion mask: any label image, a Slicer ``.seg.nrrd``, a DICOM-SEG or an RTSTRUCT file.

    With `segment`, the result is that segment alone as 0/1 (uint8). Without it, the label map is returned
    as stored (integers); `label` then selects a value later, in `mask.prepare_mask`. A DICOM-SEG (needs
    highdicom) picks its segment by `segment` (SegmentLabel or SegmentDescription) or `label` (segment
    number) and comes back on its own grid; `prepare_mask` resamples it onto the CT in world space.
    An RTSTRUCT (ROI by name or number) is rasterised onto `reference`, the CT Volume (io/rtstruct.py).
    """
    integrity.check_regular(path)  # a FIFO would block the header read below
    if is_seg_nrrd(path):
        return read_seg_nrrd(path, label, segment)
    if is_dicom_seg(path):
        return read_dicom_seg(path, label, segment)
    from DFM50NLib.io.rtstruct import is_rtstruct, read_rtstruct

    if is_rtstruct(path):
        return read_rtstruct(path, reference, label=label, segment=segment)
    if segment is not None:
        raise InputError(
            f"{path}: a segment name ({segment!r}) was given but this is not a Slicer .seg.nrrd "
            "segmentation, a DICOM-SEG or an RT Structure Set; give the lesion's label value instead "
            "(--label N), or the segmentation file."
        )
    vol = read_volume(path)
    return as_integer_labels(vol, path)


def lesion_segments(path, reference=None):
    """Every segment of a Slicer ``.seg.nrrd``, a DICOM-SEG or an RT Structure Set (its ROIs with contours,
    drawn on `reference`, the CT Volume) as ``(name, 0/1 Volume)`` in file order; None for a plain label map.
    For importing an existing segmentation whole (the browser app); each is read as `read_mask` reads it."""

    def binary(vol):
        return vol.with_array((np.asarray(vol.array) > 0).astype(np.uint8))

    if is_seg_nrrd(path):
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
    from DFM50NLib.io.rtstruct import is_rtstruct, rtstruct_rois

    if is_rtstruct(path):
        import pydicom

        rois = [r for r in rtstruct_rois(pydicom.dcmread(str(path))) if r["contours"]]
        return [
            (r["name"] or f"ROI {r['number']}", binary(read_mask(path, label=r["number"], reference=reference)))
            for r in rois
        ]
    return None
