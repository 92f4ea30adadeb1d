"""A folder of DICOM files as one CT series (GDCM through SimpleITK), with the series' integrity checked first."""

from __future__ import annotations

from pathlib import Path

import DFM50NLib.io.integrity as integrity
from DFM50NLib.errors import InputError


def read_dicom_series(folder: Path, series_uid=None):
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
