"""The default case id, and the guard that keeps one --out folder from replacing another input's result.

Per-case folders usually hold files with the same name (``p001/ct.nii.gz``, ``p002/ct.nii.gz``) or DICOM folders
named ``CT``: the file name alone made every case ``ct`` and the second score replaced the first one's files.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from DFM50NLib.errors import InputError


def default_case_id(image) -> str:
    """DICOM folder: PatientID + series number + a hash of the SeriesInstanceUID; a file: parent folder + stem."""
    from DFM50NLib.geometry.volume import Volume
    from DFM50NLib.io.filenames import file_stem

    if isinstance(image, Volume):
        return image.name or "case"
    path = Path(str(image)).absolute()
    if path.is_dir():
        return _dicom_series_id(path) or _joined(path.parent.name, path.name)
    return _joined(path.parent.name, file_stem(path) or "case")


def _joined(parent, name) -> str:
    return f"{parent}_{name}" if parent and parent != name else name


def _dicom_series_id(folder: Path):
    """From the first readable DICOM header in the folder (no pixel data); None when there is none."""
    try:
        import pydicom
    except ImportError:
        return None
    for entry in sorted(os.scandir(folder), key=lambda e: e.name):
        if not entry.is_file():
            continue
        try:
            ds = pydicom.dcmread(entry.path, stop_before_pixels=True, specific_tags=_TAGS)
        except Exception:
            continue
        uid = str(getattr(ds, "SeriesInstanceUID", "") or "")
        if not uid:
            continue
        patient = str(getattr(ds, "PatientID", "") or "").strip() or folder.name
        number = str(getattr(ds, "SeriesNumber", "") or "").strip()
        digest = hashlib.sha256(uid.encode("ascii", "replace")).hexdigest()[:6]
        return "_".join(p for p in (patient, f"s{number}" if number else "", digest) if p)
    return None


_TAGS = ["PatientID", "SeriesInstanceUID", "SeriesNumber"]


def refuse_replacing_another_input(json_path, image, mask) -> None:
    """InputError when `json_path` holds the result of another CT or mask (a case id used twice in one --out)."""
    from DFM50NLib.scoring.result import read_json

    json_path = Path(json_path)
    try:
        earlier = read_json(json_path)
    except (OSError, ValueError, TypeError):
        return  # nothing there (or not a result): nothing of another input to lose
    changed = [
        f"{what} {was}"
        for what, was, now in (("CT", earlier.image_path, image), ("mask", earlier.mask_path, mask))
        if was and _same_file(was, now) is False
    ]
    if changed:
        raise InputError(
            f"{json_path} holds the result of case '{earlier.case_id}' scored from another input "
            f"({'; '.join(changed)}). Give this case its own --case-id, another --out folder, or --overwrite "
            "to replace that result."
        )


def _same_file(a, b):
    try:
        return Path(str(a)).resolve() == Path(str(b)).resolve()
    except OSError:
        return None
