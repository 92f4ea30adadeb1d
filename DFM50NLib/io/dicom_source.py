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
    """pydicom datasets (no pixel data) of the CT's slices, element k = slice k of `ct`; [] when not from DICOM.

    The files are the series folder's (``meta["path"]``, as `read_volume` read it) or an explicit list
    (``meta["dicom_files"]``, e.g. from Slicer's DICOM database). Each header is placed by its
    ImagePositionPatient in the volume's own index space, so file order never matters; a header that is
    not on a slice of the volume (another series, a different grid) is a clear error.
    """
    files = list((getattr(ct, "meta", None) or {}).get("dicom_files") or [])
    if not files:
        folder = ct_source_folder(ct)
        if folder is None:
            return []
        files = ct_series_files(folder)
    import numpy as np
    import pydicom

    from DFM50NLib.geometry.volume import RAS_TO_LPS

    by_k = {}
    for f in files:
        try:
            ds = pydicom.dcmread(str(f), stop_before_pixels=True)
        except Exception as exc:
            raise InputError(f"Cannot read the DICOM header of {f}: {exc}") from None
        lps = np.asarray([float(v) for v in getattr(ds, "ImagePositionPatient", [np.nan] * 3)])
        ijk = ct.world_to_ijk((RAS_TO_LPS[:3, :3] @ lps)[None, :])[0]
        k = int(np.round(ijk[2]))
        if not np.all(np.isfinite(ijk)) or np.max(np.abs(ijk - [0, 0, k])) > 0.01 or not 0 <= k < ct.shape[2]:
            raise InputError(
                f"The DICOM file {f} is not a slice of this CT volume (its position maps to voxel index "
                f"{np.round(ijk, 2).tolist()}); the volume and its DICOM files do not match."
            )
        by_k[k] = ds
    if sorted(by_k) != list(range(ct.shape[2])):
        raise InputError(
            f"The CT volume has {ct.shape[2]} slices but its DICOM files give {len(by_k)} distinct slice "
            "positions; cannot tie every slice to its DICOM image. Put the series in a folder of its own."
        )
    return [by_k[k] for k in range(ct.shape[2])]


def ct_frame_of_reference(ct) -> str | None:
    """FrameOfReferenceUID of the CT's DICOM series, or None when the CT did not come from DICOM."""
    files = list((getattr(ct, "meta", None) or {}).get("dicom_files") or [])
    folder = ct_source_folder(ct)
    if not files and folder is None:
        return None
    import pydicom

    first = files[0] if files else ct_series_files(folder)[0]
    ds = pydicom.dcmread(first, stop_before_pixels=True, specific_tags=["FrameOfReferenceUID"])
    uid = str(getattr(ds, "FrameOfReferenceUID", "") or "")
    return uid or None


def dicom_sop_class(path, needs="pip install pydicom") -> str:
    """The SOP Class UID of a single DICOM file, or "" when `path` is not one (one 132-byte read decides).

    Only DICOM files get their header read, up to SOPClassUID, so sniffing a NIfTI or a CT slice is cheap.
    `needs`: what to install when pydicom is missing, for the message.
    """
    p = Path(path)
    if not p.is_file():
        return ""
    try:
        with open(p, "rb") as f:
            head = f.read(132)
    except OSError:
        return ""
    if head[128:132] != b"DICM":
        return ""
    try:
        import pydicom
    except ImportError:
        raise InputError(f"{p}: is a DICOM file; reading it needs pydicom ({needs}).") from None
    try:
        header = pydicom.dcmread(str(p), stop_before_pixels=True, specific_tags=["SOPClassUID"])
    except Exception as exc:
        raise InputError(f"Cannot read the DICOM header of {p}: {exc}") from None
    return str(getattr(header, "SOPClassUID", ""))
