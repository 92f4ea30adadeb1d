"""The bundled demo case written to disk: the phantom of `geometry.synthetic.demo_case` as two NIfTI files."""

from __future__ import annotations

from pathlib import Path

from DFM50NLib.geometry.synthetic import demo_case
from DFM50NLib.geometry.volume import Volume
from DFM50NLib.io.itk_image import write_volume


def write_demo_case(out_dir):
    """Write the demo phantom (CT + lesion mask, .nii.gz, about 2 MB): returns (ct_path, mask_path).

    0.7 x 0.7 x 2.5 mm voxels, LPS voxel order (like a DICOM-derived NIfTI), a ~2 cm ellipsoidal lesion
    in the lung, 12 mm off the grid centre. Same bytes of voxel data on every run (fixed seed).
    """
    out = Path(out_dir)
    ct, mask = demo_case()
    ct_path = write_volume(Volume(ct.array, ct.ijk_to_ras, "demo_phantom"), out / "demo_phantom.nii.gz")
    mask_path = write_volume(Volume(mask.array, mask.ijk_to_ras, "demo_phantom_mask"), out / "demo_phantom_mask.nii.gz")
    return ct_path, mask_path
