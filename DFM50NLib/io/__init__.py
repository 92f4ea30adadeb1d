"""Reading and writing files: one module per format, one dispatcher (`dispatch`), the integrity checks beside them.

Builds `geometry.volume.Volume`s and may import `geometry`; `geometry` never imports `io`. Here live every
reader a score depends on (NIfTI, NRRD, MetaImage, DICOM series, Slicer .seg.nrrd, DICOM-SEG, RTSTRUCT), so
"where is format X read" is one step. Never torch, never Slicer.
"""

from DFM50NLib.io.dicom_seg import is_dicom_seg
from DFM50NLib.io.dispatch import lesion_segments, read_mask, read_volume
from DFM50NLib.io.filenames import IMAGE_SUFFIXES, WRITE_SUFFIXES, file_stem
from DFM50NLib.io.itk_image import to_sitk, to_volume, write_volume
from DFM50NLib.io.values import check_ct_intensities

__all__ = [
    "IMAGE_SUFFIXES",
    "WRITE_SUFFIXES",
    "check_ct_intensities",
    "file_stem",
    "is_dicom_seg",
    "lesion_segments",
    "read_mask",
    "read_volume",
    "to_sitk",
    "to_volume",
    "write_volume",
]
