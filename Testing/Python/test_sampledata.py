"""The Sample Data entry "DFM50N demo chest phantom": generated (never downloaded), CT + lesion segment
exactly as `demo_case` defines them, and scorable from the panel in one go."""

from __future__ import annotations

import numpy as np
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


def test_sample_data_entry_has_no_uri_and_a_generator():
    calls = []
    args = sampledata.source_arguments("/x/DFM50N.png", calls.append)
    assert args["sampleName"] == "DFM50N demo chest phantom" and args["uris"] == [] and args["fileNames"] == []
    args["customDownloader"]("source")
    assert calls == ["source"]
