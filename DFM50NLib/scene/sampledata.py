"""The "DFM50N demo chest phantom" of Slicer's Sample Data module: CT + lesion segmentation, one click.

The phantom is generated (DFM50NLib.geometry.synthetic.demo_case, fixed seed: the same voxels on every
machine), never downloaded: the Sample Data entry has no URI and a `customDownloader` that calls
`load_demo`. Console: `from DFM50NLib.scene.sampledata import load_demo; load_demo()`.
"""

from __future__ import annotations

import numpy as np
import slicer

from DFM50NLib.scene import mrml

DEMO_NAME = "DFM50N demo chest phantom"
CATEGORY = "DFM50N"
CT_NAME = "DFM50N demo CT"
SEGMENTATION_NAME = "DFM50N demo lesion"
SEGMENT_NAME = "Lesion"


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


def source_arguments(thumbnail, downloader) -> dict:
    """Keyword arguments of `SampleDataLogic.registerCustomSampleDataSource` for the phantom (no URI:
    Sample Data's button calls `downloader(source)`, which generates and loads it)."""
    return dict(
        category=CATEGORY,
        sampleName=DEMO_NAME,
        uris=[],
        fileNames=[],
        nodeNames=[],
        customDownloader=downloader,
        thumbnailFileName=str(thumbnail),
    )
