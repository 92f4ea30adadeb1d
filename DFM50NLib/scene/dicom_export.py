"""Slicer side of DICOM SR out: a scored segment on a CT loaded from Slicer's DICOM database -> SR + SEG.

Slicer's DICOM scalar-volume plugin records the slices' SOP Instance UIDs in the volume node attribute
``DICOM.instanceUIDs``; the files come from the DICOM database. A CT loaded from NIfTI/NRRD has no such
attribute, and gets a clear refusal (a DICOM SR must reference DICOM images).
"""

from __future__ import annotations

from DFM50NLib.errors import InputError
from DFM50NLib.scene import mrml


def dicom_instance_uids(volumeNode) -> list:
    """SOP Instance UIDs of the CT's slices as Slicer's DICOM module loaded them ([] when not from DICOM)."""
    return (volumeNode.GetAttribute("DICOM.instanceUIDs") or "").split() if volumeNode is not None else []


def can_write_dicom_sr(volumeNode) -> bool:
    """For the panel: enable the "Save as DICOM SR" button only for a CT loaded from DICOM."""
    return bool(dicom_instance_uids(volumeNode))


def write_dicom_sr_for_segment(result, volumeNode, segmentationNode, segmentId, outDir, fileForInstance=None) -> dict:
    """Write ``<case>.dfm50n.sr.dcm`` + ``<case>.dfm50n.seg.dcm`` for a scored segment; returns their paths.

    `fileForInstance`: UID -> file path (default: ``slicer.dicomDatabase.fileForInstance``).
    """
    uids = dicom_instance_uids(volumeNode)
    if not uids:
        raise InputError(
            f"Volume '{volumeNode.GetName() if volumeNode else ''}' was not loaded from DICOM (Slicer's DICOM "
            "module), so a DICOM SR cannot reference its images. Import the CT series into the DICOM "
            "database, load it from there, score again and save the SR."
        )
    if volumeNode.GetParentTransformNode() is not None:
        raise InputError(
            f"Volume '{volumeNode.GetName()}' is under a transform: its DICOM images are not where the "
            "volume is shown. Remove the transform (or save the SR from the untransformed CT)."
        )
    if result.geometry != "physical":
        raise InputError("A DICOM SR is written for physical-geometry scores only; score with physical geometry.")
    if fileForInstance is None:
        import slicer

        fileForInstance = slicer.dicomDatabase.fileForInstance
    files = [fileForInstance(u) for u in uids]
    missing = [u for u, f in zip(uids, files) if not f]
    if missing:
        raise InputError(
            f"{len(missing)} of the CT's {len(uids)} DICOM images are not in Slicer's DICOM database "
            f"(first: {missing[0]}); re-import the series."
        )
    from DFM50NLib.report.dicom_sr import write_dicom_sr
    from DFM50NLib.scoring.pipeline import prepare_as_scored

    ct = mrml.volume_from_node(volumeNode)
    ct.meta["dicom_files"] = files
    prep = prepare_as_scored(ct, mrml.segment_mask(volumeNode, segmentationNode, segmentId), result)
    return write_dicom_sr(result, prep.ct, prep.prepared_mask, outDir)
