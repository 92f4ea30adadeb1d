"""The Sample Data entry "DFM50N demo chest phantom": generated (never downloaded), CT + lesion segment
exactly as `demo_case` defines them, and scorable from the panel in one go."""

from __future__ import annotations

import numpy as np
import pytest
from slicer_harness import fresh_scene, slicer

from DFM50NLib.geometry.synthetic import demo_case
from DFM50NLib.scene import sampledata
from DFM50NLib.scene.logic import WEIGHTS_SETTING, DFM50NLogic
from DFM50NLib.scene.presenter import MemorySettings, PanelPresenter


def test_demo_phantom_loads_the_generated_ct_and_lesion(random_weights):
    scene = fresh_scene()
    ct_node, seg, segment_id = sampledata.load_demo(scene)
    ct, mask = demo_case()
    np.testing.assert_array_equal(slicer.util.arrayFromVolume(ct_node).T, ct.array.astype(np.int16))
    from DFM50NLib.scene import mrml

    np.testing.assert_allclose(mrml.ijk_to_ras(ct_node), ct.ijk_to_ras, atol=1e-9)
    assert seg.GetSegmentation().GetNumberOfSegments() == 1
    assert seg.GetSegmentation().GetSegment(segment_id).GetName() == "Lesion"
    on_ct = slicer.util.arrayFromSegmentBinaryLabelmap(seg, segment_id, ct_node)
    np.testing.assert_array_equal(on_ct.T != 0, mask.array != 0)
    assert scene.GetNumberOfNodesByClass("vtkMRMLLabelMapVolumeNode") == 0  # the temporary labelmap is gone
    # one click later: Score on the demo gives a table row for the lesion
    presenter = PanelPresenter(DFM50NLogic(scene), settings=MemorySettings({WEIGHTS_SETTING: str(random_weights)}))
    presenter.params.inputVolume = ct_node
    presenter.selectSegment(seg, segment_id)
    presenter.setParameter("device", "cpu")
    presenter.apply()
    view = presenter.wait(300)
    assert view.status == "Scored 1 segment." and view.result_lines[0].segment == "Lesion"
    centre = np.array(presenter.scored[0].result.center_ras)
    assert np.linalg.norm(centre - [-60.0, 20.0, -110.0]) < 3.0  # the ellipsoid's centre


def download_sample(args, cache):
    """What `SampleDataLogic().downloadSample(name)` does with a registered source (Sample Data needs Qt, so its
    steps are taken here): each URI is copied into the cache with urlretrieve, its checksum checked, and the
    file loaded by the logic behind Slicer's reader of its file type; the first loaded node is returned."""
    import hashlib
    import urllib.request

    nodes = []
    for uri, name, node_name, kind, checksum in zip(
        args["uris"], args["fileNames"], args["nodeNames"], args["loadFileTypes"], args["checksums"]
    ):
        path = cache / name
        urllib.request.urlretrieve(uri, path)
        algo, digest = checksum.split(":")
        assert hashlib.new(algo.lower(), path.read_bytes()).hexdigest() == digest
        if kind == "VolumeFile":  # qSlicerVolumesReader
            nodes.append(slicer.modules.volumes.logic().AddArchetypeVolume(str(path), node_name))
        elif kind == "SegmentationFile":  # qSlicerSegmentationsReader
            nodes.append(slicer.modules.segmentations.logic().LoadSegmentationFromFile(str(path), True, node_name))
    return nodes[0]


def test_download_sample_from_code_loads_the_phantom_and_it_scores(random_weights, tmp_path):
    scene = fresh_scene()
    args = sampledata.source_arguments("/x/DFM50N.png")
    assert args["sampleName"] == "DFM50N demo chest phantom" and "customDownloader" not in args
    assert len(args["uris"]) == len(args["fileNames"]) == len(args["nodeNames"]) == len(args["checksums"]) == 2
    ct_node = download_sample(args, tmp_path)
    assert ct_node.GetName() == "DFM50N demo CT" and ct_node.IsA("vtkMRMLScalarVolumeNode")
    seg = scene.GetFirstNodeByName("DFM50N demo lesion")
    [segment_id] = [seg.GetSegmentation().GetNthSegmentID(0)]
    assert seg.GetSegmentation().GetNumberOfSegments() == 1
    assert seg.GetSegmentation().GetSegment(segment_id).GetName() == "Lesion"
    ct, mask = demo_case()  # the files hold exactly the generated phantom
    np.testing.assert_array_equal(slicer.util.arrayFromVolume(ct_node).T, ct.array.astype(np.int16))
    from DFM50NLib.scene import mrml

    np.testing.assert_allclose(mrml.ijk_to_ras(ct_node), ct.ijk_to_ras, atol=1e-9)
    on_ct = slicer.util.arrayFromSegmentBinaryLabelmap(seg, segment_id, ct_node)
    np.testing.assert_array_equal(on_ct.T != 0, mask.array != 0)
    presenter = PanelPresenter(DFM50NLogic(scene), settings=MemorySettings({WEIGHTS_SETTING: str(random_weights)}))
    presenter.params.inputVolume = ct_node
    presenter.selectSegment(seg, segment_id)
    presenter.setParameter("device", "cpu")
    presenter.apply()
    assert presenter.wait(300).status == "Scored 1 segment."
    assert np.linalg.norm(np.array(presenter.scored[0].result.center_ras) - [-60.0, 20.0, -110.0]) < 3.0


def test_the_shipped_files_are_what_the_generator_writes(tmp_path):
    """Resources/SampleData is `write_sample_files()`'s output for today's `demo_case`."""
    fresh_scene()
    fresh = sampledata.write_sample_files(tmp_path)
    shipped = [sampledata.FOLDER / name for name, _, _ in sampledata.FILES]
    volumes = slicer.modules.volumes.logic()
    a, b = (volumes.AddArchetypeVolume(str(p[0]), "ct") for p in (fresh, shipped))
    assert np.array_equal(slicer.util.arrayFromVolume(a), slicer.util.arrayFromVolume(b)), sampledata.REGENERATE
    np.testing.assert_allclose(sampledata.mrml.ijk_to_ras(a), sampledata.mrml.ijk_to_ras(b), atol=1e-9)
    load = slicer.modules.segmentations.logic().LoadSegmentationFromFile
    segs = [load(str(p[1]), True, "s") for p in (fresh, shipped)]
    arrays = [slicer.util.arrayFromSegmentBinaryLabelmap(s, s.GetSegmentation().GetNthSegmentID(0), a) for s in segs]
    assert np.array_equal(arrays[0], arrays[1]) and arrays[0].sum() > 1000, sampledata.REGENERATE
    with pytest.raises(FileNotFoundError, match="regenerate them"):
        sampledata.source_arguments("/x/DFM50N.png", folder=tmp_path / "nowhere")
