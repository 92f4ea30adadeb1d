"""DICOM-SEG masks: a SEG made by highdicom on a pydicom CT series reads back at the same world positions.

The CT grid is oblique, left-handed and anisotropic; the SEG stores only the non-empty frames (sparse)
and is built from the source slices in shuffled order, so the reader must place frames by position.
"""

from __future__ import annotations

import sys

import highdicom as hd
import numpy as np
import pytest
from test_mask_center import rotation

from DFM50NLib import io
from DFM50NLib.errors import InputError
from DFM50NLib.geometry.synthetic import sphere_case
from DFM50NLib.geometry.volume import RAS_TO_LPS, Volume

UID_ROOT = "1.2.826.0.1.3680043.8.498."
DIRECTION = rotation((1, 2, 3), 25) @ np.diag([-1.0, 1.0, 1.0])  # oblique and left-handed
CENTER_RAS = (5.0, -12.0, 40.0)


def ct_datasets(ct: Volume) -> list:
    """One pydicom CT dataset per k-slice, geometry from the volume (IPP/IOP in LPS, PixelSpacing rows\\cols)."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    lps = RAS_TO_LPS @ ct.ijk_to_ras
    sp = ct.spacing
    study, series, frame = generate_uid(UID_ROOT), generate_uid(UID_ROOT), generate_uid(UID_ROOT)
    out = []
    for k in range(ct.shape[2]):
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
        uid = generate_uid(UID_ROOT)
        ds.file_meta.MediaStorageSOPInstanceUID = uid
        ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, uid
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
        ds.PatientID, ds.PatientName, ds.PatientBirthDate, ds.PatientSex = "P1", "Test^Phantom", "", "O"
        ds.StudyDate, ds.StudyTime, ds.StudyID, ds.AccessionNumber, ds.ReferringPhysicianName = (
            "20240101",
            "120000",
            "1",
            "",
            "",
        )
        ds.Modality, ds.SeriesNumber, ds.InstanceNumber, ds.Manufacturer = "CT", 1, k + 1, "test"
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.ImageOrientationPatient = [float(v) for v in np.concatenate([lps[:3, 0] / sp[0], lps[:3, 1] / sp[1]])]
        ds.ImagePositionPatient = [float(v) for v in lps[:3, :3] @ [0, 0, k] + lps[:3, 3]]
        ds.PixelSpacing = [float(sp[1]), float(sp[0])]  # between rows (j), between columns (i)
        ds.SliceThickness = float(sp[2])
        ds.Rows, ds.Columns = ct.shape[1], ct.shape[0]
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleIntercept, ds.RescaleSlope = 0, 1
        ds.PixelData = np.ascontiguousarray(np.asarray(ct.array[:, :, k], np.int16).T).tobytes()
        out.append(ds)
    return out


def make_seg(sources, masks: dict, path, order):
    """A BINARY DICOM-SEG, one segment per (label -> (i,j,k) array) of `masks`, sources given in `order`."""
    from pydicom.sr.codedict import codes

    srcs = [sources[k] for k in order]
    pixels = np.stack([np.stack([np.asarray(m[:, :, k]).T for k in order]) for m in masks.values()], axis=-1)
    descs = [
        hd.seg.SegmentDescription(
            segment_number=n + 1,
            segment_label=name,
            segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
            segmented_property_type=codes.SCT.Neoplasm,
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL,
        )
        for n, name in enumerate(masks)
    ]
    descs[0].SegmentDescription = "primary tumour"
    seg = hd.seg.Segmentation(
        source_images=srcs,
        pixel_array=pixels.astype(np.uint8),
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descs,
        series_instance_uid=hd.UID(),
        series_number=2,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="test",
        manufacturer_model_name="test",
        software_versions="0",
        device_serial_number="0",
        omit_empty_frames=True,
    )
    seg.save_as(str(path))
    return seg


def world_of(vol: Volume, value=None) -> np.ndarray:
    ijk = np.argwhere(np.asarray(vol.array) > 0 if value is None else np.asarray(vol.array) == value)
    w = vol.ijk_to_world(ijk)
    return w[np.lexsort(np.round(w, 3).T[::-1])]


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    d = tmp_path_factory.mktemp("dicomseg")
    ct, mask = sphere_case(
        CENTER_RAS, 6.0, shape=(40, 36, 14), spacing=(0.7, 0.8, 2.5), direction_ras=DIRECTION, seed=7
    )
    other = np.zeros(mask.shape, np.uint8)
    other[2:6, 3:8, 1:3] = 1  # a second, small segment in a corner
    sources = ct_datasets(ct)
    rng = np.random.default_rng(3)
    order = [int(k) for k in rng.permutation(ct.shape[2])]
    path = d / "lesion_seg.dcm"
    seg = make_seg(sources, {"lesion": np.asarray(mask.array), "vessel": other}, path, order)
    (d / "ct").mkdir()
    for k, ds in enumerate(sources):
        ds.save_as(str(d / "ct" / f"ct{k:03d}.dcm"), enforce_file_format=True)
    return d, ct, mask, other, path, seg


def test_lesion_segments_gives_each_segment_by_label_as_0_1(case):
    """io.lesion_segments (the browser app's "add an existing lesion"): every segment, named by SegmentLabel,
    at the world positions its frames give."""
    _, ct, mask, other, path, _ = case
    got = io.lesion_segments(path)
    assert [name for name, _ in got] == ["lesion", "vessel"]
    for (_, vol), want in zip(got, (mask.array, other)):
        assert set(np.unique(vol.array)) == {0, 1}
        np.testing.assert_allclose(world_of(vol), world_of(Volume(want, ct.ijk_to_ras)), atol=1e-4)


def test_seg_is_sparse_and_unordered(case):
    _, ct, mask, other, _, seg = case
    n_nonempty = sum(int(np.asarray(m)[:, :, k].any()) for m in (mask.array, other) for k in range(ct.shape[2]))
    assert seg.NumberOfFrames == n_nonempty < 2 * ct.shape[2]  # empty frames omitted
    lps = RAS_TO_LPS @ ct.ijk_to_ras
    normal = np.cross(lps[:3, 0], lps[:3, 1])
    depth = [
        float(np.dot(f.PlanePositionSequence[0].ImagePositionPatient, normal))
        for f in seg.PerFrameFunctionalGroupsSequence
    ]
    assert np.any(np.diff(depth) > 0) and np.any(np.diff(depth) < 0)  # frames stored out of slice order


def test_segment_by_name_lands_at_the_source_world_positions(case):
    _, ct, mask, _, path, _ = case
    assert io.is_dicom_seg(path) and not io.is_dicom_seg(path.parent / "ct" / "ct000.dcm")
    vol = io.read_mask(path, segment="lesion")
    assert vol.array.dtype == np.uint8 and set(np.unique(vol.array)) == {0, 1}
    got, want = world_of(vol), world_of(mask)
    assert len(got) == len(want) == int(np.asarray(mask.array).sum()) > 100
    np.testing.assert_allclose(got.mean(axis=0), want.mean(axis=0), atol=0.1)
    np.testing.assert_allclose(got, want, atol=1e-3)  # voxel for voxel, not only on average
    np.testing.assert_allclose(vol.spacing[np.argsort(vol.spacing)], sorted(ct.spacing), atol=1e-4)
    assert vol.meta["segment_number"] == 1 and vol.meta["format"] == "DICOM-SEG"
    # the description also names the segment
    np.testing.assert_allclose(world_of(io.read_mask(path, segment="primary tumour")), want, atol=1e-3)


def test_segment_by_number_keeps_the_number_for_prepare_mask(case):
    from DFM50NLib.geometry.mask import prepare_mask

    _, ct, mask, other, path, _ = case
    vol = io.read_mask(path, label=2)
    assert set(np.unique(vol.array)) == {0, 2}
    np.testing.assert_allclose(world_of(vol), world_of(Volume(other, ct.ijk_to_ras)), atol=1e-3)
    pm = prepare_mask(io.read_mask(path, label=1), ct, label=1)  # resampled onto the CT grid
    assert pm.voxels == int(np.asarray(mask.array).sum())


def test_pipeline_with_dicom_ct_and_dicom_seg(case):
    """A DICOM CT folder + the SEG through prepare_case: the mask on the CT grid equals the source mask."""
    from DFM50NLib.scoring.pipeline import prepare_case

    d, ct, mask, _, path, _ = case
    back = io.read_volume(d / "ct")  # the source series itself, same voxels at the same world positions
    ijk = np.rint(ct.world_to_ijk(back.ijk_to_world(np.indices(back.shape).reshape(3, -1).T))).astype(int)
    np.testing.assert_array_equal(np.asarray(ct.array)[tuple(ijk.T)], np.asarray(back.array).reshape(-1))
    prep = prepare_case(d / "ct", path, segment="lesion", center="centroid")
    assert prep.stats["mask_voxels"] == int(np.asarray(mask.array).sum())
    np.testing.assert_allclose(prep.center_ras, world_of(mask).mean(axis=0), atol=0.1)


def test_refusals_name_the_segments(case, monkeypatch):
    _, _, _, _, path, _ = case
    with pytest.raises(InputError, match=r"2 segments.*1: 'lesion' \(primary tumour\), 2: 'vessel'"):
        io.read_mask(path)
    with pytest.raises(InputError, match=r"no segment labelled 'tumor'.*'lesion'"):
        io.read_mask(path, segment="tumor")
    with pytest.raises(InputError, match="no segment number 7"):
        io.read_mask(path, label=7)
    monkeypatch.setitem(sys.modules, "highdicom", None)  # as if not installed
    with pytest.raises(InputError, match="pip install highdicom"):
        io.read_mask(path, segment="lesion")
