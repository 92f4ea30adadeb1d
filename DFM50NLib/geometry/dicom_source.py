"""The DICOM files behind a CT `Volume` read from a series folder: headers only, for provenance.

RTSTRUCT reading needs the CT's Frame of Reference, and DICOM SR / SEG writing needs the CT's study,
series and SOP instances to reference. `read_volume` keeps only the folder path in ``meta["path"]``;
the headers are read here, on demand, with pydicom (no pixel data).
"""

from __future__ import annotations

from pathlib import Path

from DFM50NLib.errors import InputError


def ct_source_folder(ct) -> Path | None:
    """The DICOM series folder a CT `Volume` was read from, or None (NIfTI/NRRD file, Slicer node, array)."""
    meta = getattr(ct, "meta", None) or {}
    path = meta.get("dicom_folder") or meta.get("path")
    if not path:
        return None
    p = Path(str(path))
    return p if p.is_dir() else None


def ct_series_files(folder) -> list:
    """The series' files, as GDCM orders them (the same list `read_volume` reads)."""
    import SimpleITK as sitk

    uids = list(sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder)) or ())
    if not uids:
        raise InputError(f"No DICOM series found in folder {folder}.")
    return list(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), uids[0]))


def ct_headers(ct) -> list:
    """pydicom datasets (no pixel data) of every slice of the CT's series; [] when it did not come from DICOM."""
    folder = ct_source_folder(ct)
    if folder is None:
        return []
    import pydicom

    out = []
    for f in ct_series_files(folder):
        try:
            out.append(pydicom.dcmread(f, stop_before_pixels=True))
        except Exception as exc:
            raise InputError(f"Cannot read the DICOM header of {f}: {exc}") from None
    return out


def ct_frame_of_reference(ct) -> str | None:
    """FrameOfReferenceUID of the CT's DICOM series, or None when the CT did not come from DICOM."""
    folder = ct_source_folder(ct)
    if folder is None:
        return None
    import pydicom

    first = ct_series_files(folder)[0]
    ds = pydicom.dcmread(first, stop_before_pixels=True, specific_tags=["FrameOfReferenceUID"])
    uid = str(getattr(ds, "FrameOfReferenceUID", "") or "")
    return uid or None
