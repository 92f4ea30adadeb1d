"""The "DFM50N demo chest phantom" of Slicer's Sample Data module: CT + lesion segmentation.

The phantom is DFM50NLib.geometry.synthetic.demo_case (fixed seed: the same voxels on every machine), never
downloaded from the internet. Slicer's Sample Data loads it the way it loads every sample: from URIs, here
`file://` URIs of the two files the module ships in Resources/SampleData (the CT as .nrrd and the lesion as
.seg.nrrd, written by `write_sample_files` with Slicer's own storage nodes). So the button and
`SampleData.SampleDataLogic().downloadSample("DFM50N demo chest phantom")` from code (a customDownloader is
only ever called by the button; from code Sample Data downloads the URIs) give the same two nodes, and
neither needs scipy. Console without Sample Data: `from DFM50NLib.scene.sampledata import load_demo; load_demo()`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import slicer

from DFM50NLib.model.forest_io import sha256_file
from DFM50NLib.scene import mrml

DEMO_NAME = "DFM50N demo chest phantom"
CATEGORY = "DFM50N"
CT_NAME = "DFM50N demo CT"
SEGMENTATION_NAME = "DFM50N demo lesion"
SEGMENT_NAME = "Lesion"
FOLDER = Path(__file__).resolve().parents[2] / "Resources" / "SampleData"
FILES = (  # (file name, node name, Slicer file type)
    ("DFM50N-demo-CT.nrrd", CT_NAME, "VolumeFile"),
    ("DFM50N-demo-lesion.seg.nrrd", SEGMENTATION_NAME, "SegmentationFile"),
)
REGENERATE = (
    'regenerate them under slicer-core: python -c "from DFM50NLib.scene.sampledata import write_sample_files; '
    'write_sample_files()"'
)


def load_demo(scene=None):
    """Add the phantom CT and its lesion segmentation to the scene; returns (CT node, segmentation node,
    segment ID). The segmentation's reference geometry is the CT, as after segmenting it in Slicer."""
    from DFM50NLib.geometry.synthetic import demo_case

    scene = scene or slicer.mrmlScene
    ct, mask = demo_case()
    ct_node = mrml.add_volume_node(ct.with_array(np.asarray(ct.array, dtype=np.int16)), CT_NAME, scene)
    label = mrml.add_volume_node(mask.with_array(np.asarray(mask.array, dtype=np.uint8)), "lesion", scene, True)
    seg = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", scene.GenerateUniqueName(SEGMENTATION_NAME))
    seg.CreateDefaultDisplayNodes()
    seg.SetReferenceImageGeometryParameterFromVolumeNode(ct_node)
    if not slicer.vtkSlicerSegmentationsModuleLogic.ImportLabelmapToSegmentationNode(label, seg):
        raise RuntimeError("The demo lesion could not be turned into a segment.")
    scene.RemoveNode(label)
    segment_id = seg.GetSegmentation().GetNthSegmentID(0)
    seg.GetSegmentation().GetSegment(segment_id).SetName(SEGMENT_NAME)
    return ct_node, seg, segment_id


def write_sample_files(folder=FOLDER):
    """Write the phantom as Slicer writes it (compressed .nrrd + .seg.nrrd) into `folder`; returns the paths.
    Run once when `demo_case` changes: the files in Resources/SampleData are its output."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    scene = slicer.vtkMRMLScene()
    nodes = load_demo(scene)[:2]
    paths = []
    for node, (file_name, _, _) in zip(nodes, FILES):
        storage = node.CreateDefaultStorageNode()
        storage.SetFileName(str(folder / file_name))
        storage.SetUseCompression(1)
        if not storage.WriteData(node):
            raise OSError(f"Could not write {folder / file_name}.")
        paths.append(folder / file_name)
    return paths


def source_arguments(thumbnail, folder=FOLDER) -> dict:
    """Keyword arguments of `SampleDataLogic.registerCustomSampleDataSource` for the phantom: the two files'
    `file://` URIs with their SHA-256 (Sample Data re-copies a cached file whose checksum differs)."""
    paths = [Path(folder) / name for name, _, _ in FILES]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"The demo phantom's files are missing: {', '.join(missing)}; {REGENERATE}.")
    return dict(
        category=CATEGORY,
        sampleName=DEMO_NAME,
        uris=[p.as_uri() for p in paths],
        fileNames=[name for name, _, _ in FILES],
        nodeNames=[node for _, node, _ in FILES],
        loadFileTypes=[kind for _, _, kind in FILES],
        checksums=[f"SHA256:{sha256_file(p)}" for p in paths],
        thumbnailFileName=str(thumbnail),
    )
