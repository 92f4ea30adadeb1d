"""Slicer Logic -> DICOM SR: a CT volume node loaded "from DICOM" (DICOM.instanceUIDs attribute, files from
the database) and a segment: the SR reads back to the Logic's score; a CT without DICOM is refused."""

from __future__ import annotations

import highdicom as hd
import numpy as np
import pytest
from slicer_harness import add_segmentation, add_volume, fresh_scene
from test_rtstruct import ct_datasets, lesion_with_hole_and_satellite

from DFM50NLib import io
from DFM50NLib.errors import InputError
from DFM50NLib.scene.logic import DFM50NLogic


def test_logic_writes_an_sr_for_a_dicom_ct_and_refuses_otherwise(tmp_path, random_weights):
    fresh_scene()
    ct, mask = lesion_with_hole_and_satellite((40, 40, 12))
    files = {}
    for k, ds in enumerate(ct_datasets(ct)):
        files[ds.SOPInstanceUID] = str(tmp_path / f"ct{k:03d}.dcm")
        ds.save_as(files[ds.SOPInstanceUID], enforce_file_format=True)
    ct_back = io.read_volume(tmp_path)  # the CT as stored (int16), as Slicer's DICOM plugin would load it
    node = add_volume(ct_back)
    seg, ids = add_segmentation({"Tumor": mask})
    logic = DFM50NLogic()
    result = logic.scoreSegment(node, seg, ids["Tumor"], checkDependencies=False, weights=str(random_weights))
    with pytest.raises(InputError, match="was not loaded from DICOM"):
        logic.writeDicomSR(result, node, seg, ids["Tumor"], tmp_path / "sr")
    uids = list(files)[::-1]  # attribute order need not be slice order: headers are placed by position
    node.SetAttribute("DICOM.instanceUIDs", " ".join(uids))
    from DFM50NLib.scene.dicom_export import can_write_dicom_sr, write_dicom_sr_for_segment

    assert can_write_dicom_sr(node)
    paths = write_dicom_sr_for_segment(result, node, seg, ids["Tumor"], tmp_path / "sr", fileForInstance=files.get)
    sr = hd.sr.srread(str(paths["sr"]))
    (group,) = sr.content.get_volumetric_roi_measurement_groups()
    got = {m.name.meaning: m.value for m in group.get_measurements()}
    assert got["DFM50N probability of occult lymph node metastasis"] == pytest.approx(result.score, abs=1e-9)
    assert group.tracking_uid == paths["tracking_uid"]
    seg_back = io.read_mask(paths["seg"])
    assert int(np.asarray(seg_back.array).sum()) == result.mask_voxels


def test_presenter_offers_and_writes_the_sr_only_for_a_dicom_ct(tmp_path, random_weights):
    """The panel's "Save DICOM SR…" button: enabled by the presenter only when the scored CT came from DICOM,
    and the SR it writes reads back to the presenter's own result."""
    from DFM50NLib.scene.logic import WEIGHTS_SETTING
    from DFM50NLib.scene.presenter import MemorySettings, PanelPresenter

    scene = fresh_scene()
    ct, mask = lesion_with_hole_and_satellite((40, 40, 12))
    files = {}
    for k, ds in enumerate(ct_datasets(ct)):
        files[ds.SOPInstanceUID] = str(tmp_path / f"ct{k:03d}.dcm")
        ds.save_as(files[ds.SOPInstanceUID], enforce_file_format=True)
    node = add_volume(io.read_volume(tmp_path))
    seg, ids = add_segmentation({"Tumor": mask})
    presenter = PanelPresenter(
        DFM50NLogic(scene), settings=MemorySettings({WEIGHTS_SETTING: str(random_weights)}), checkDependencies=False
    )
    presenter.setParameter("device", "cpu")
    presenter.params.inputVolume = node
    presenter.selectSegment(seg, ids["Tumor"])
    presenter.apply()
    view = presenter.wait(120)
    assert view.state == "idle" and presenter.scored, view.error
    assert view.open_report_enabled and not view.dicom_sr_enabled  # not loaded from DICOM
    node.SetAttribute("DICOM.instanceUIDs", " ".join(files))
    assert presenter.view().dicom_sr_enabled
    paths = presenter.writeDicomSR(tmp_path / "sr", fileForInstance=files.get)
    (group,) = hd.sr.srread(str(paths["sr"])).content.get_volumetric_roi_measurement_groups()
    got = {m.name.meaning: m.value for m in group.get_measurements()}
    score = presenter.current().result.score
    assert got["DFM50N probability of occult lymph node metastasis"] == pytest.approx(score, abs=1e-9)
