"""RTSTRUCT lesions: mask -> contours (contourpy) -> RT Structure Set (pydicom) -> mask, voxel for voxel.

The contours are traced by contourpy (matplotlib's contouring library) at level 0.5 on each slice, so
they pass through the midpoints between inside and outside voxel centres: a pixel-centre rasteriser must
give the source mask back exactly, holes and several contours per slice included. The structure set is
written with plain pydicom, independently of the reader.
"""

from __future__ import annotations

import contourpy
import numpy as np
import pytest
from test_dicomseg import UID_ROOT, ct_datasets

from DFM50NLib import io
from DFM50NLib.errors import InputError
from DFM50NLib.geometry.synthetic import sphere_case
from DFM50NLib.geometry.volume import RAS_TO_LPS, Volume
from DFM50NLib.io.rtstruct import fill_even_odd, is_rtstruct

CENTER_RAS = (-20.0, 15.0, -30.0)
SPACING = (0.7, 0.9, 2.5)  # anisotropic, axis-aligned (DICOM axial)


def contours_of(mask: np.ndarray, ijk_to_ras) -> list:
    """Closed contours of a 0/1 [i, j, k] mask at level 0.5 on every slice, as (n, 3) LPS mm arrays."""
    lps = RAS_TO_LPS @ ijk_to_ras
    out = []
    for k in range(mask.shape[2]):
        sl = np.pad(mask[:, :, k].astype(float), 1)  # closed lines: nothing touches the edge
        if not sl.any():
            continue
        gen = contourpy.contour_generator(z=sl.T, line_type="Separate")  # z[row=j, col=i]
        for line in gen.lines(0.5):
            ij = line - 1.0  # undo the padding: (x, y) = (i, j) voxel index
            ijk = np.column_stack([ij, np.full(len(ij), float(k))])
            out.append((lps[:3, :3] @ ijk.T).T + lps[:3, 3])
    return out


def write_rtstruct(path, ct_sources, rois: dict, frame_uid=None, z_shift=0.0):
    """A minimal RT Structure Set (pydicom only): rois = name -> list of (n, 3) LPS contours."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.sequence import Sequence
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    src = ct_sources[0]
    frame_uid = frame_uid or src.FrameOfReferenceUID
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.481.3"
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid(UID_ROOT)
    ds.Modality, ds.StructureSetLabel = "RTSTRUCT", "test"
    ds.StudyInstanceUID, ds.SeriesInstanceUID = src.StudyInstanceUID, generate_uid(UID_ROOT)
    ds.PatientID, ds.PatientName = src.PatientID, src.PatientName
    ref = Dataset()
    ref.FrameOfReferenceUID = frame_uid
    ds.ReferencedFrameOfReferenceSequence = Sequence([ref])
    ss, rc_seq = [], []
    for n, (name, contours) in enumerate(rois.items(), start=1):
        r = Dataset()
        r.ROINumber, r.ReferencedFrameOfReferenceUID, r.ROIName, r.ROIGenerationAlgorithm = n, frame_uid, name, "MANUAL"
        ss.append(r)
        rc = Dataset()
        rc.ReferencedROINumber, rc.ROIDisplayColor = n, [255, 0, 0]
        items = []
        for c in contours:
            it = Dataset()
            it.ContourGeometricType = "CLOSED_PLANAR"
            pts = np.asarray(c, float) + (0.0, 0.0, z_shift)
            it.NumberOfContourPoints = len(pts)
            it.ContourData = [f"{v:.6g}" for v in pts.ravel()]
            items.append(it)
        rc.ContourSequence = Sequence(items)
        rc_seq.append(rc)
    ds.StructureSetROISequence, ds.ROIContourSequence = Sequence(ss), Sequence(rc_seq)
    ds.save_as(str(path), enforce_file_format=True)
    return path


def lesion_with_hole_and_satellite(shape):
    """A sphere with a cavity (holes on the middle slices) and a separate nodule on two slices."""
    ct, mask = sphere_case(CENTER_RAS, 9.0, shape=shape, spacing=SPACING, seed=5)
    m = np.asarray(mask.array).astype(np.uint8).copy()
    c = np.argwhere(m).mean(axis=0).round().astype(int)
    m[c[0] - 3 : c[0] + 3, c[1] - 2 : c[1] + 3, c[2] - 1 : c[2] + 2] = 0  # hole, fully inside
    m[2:6, 3:7, c[2] : c[2] + 2] = 1  # satellite: a second contour on the same slices
    return ct, Volume(m, mask.ijk_to_ras)


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    d = tmp_path_factory.mktemp("rtstruct")
    ct, mask = lesion_with_hole_and_satellite((48, 44, 16))
    sources = ct_datasets(ct)
    (d / "ct").mkdir()
    for k, ds in enumerate(sources):
        ds.save_as(str(d / "ct" / f"ct{k:03d}.dcm"), enforce_file_format=True)
    other = np.zeros(mask.shape, np.uint8)
    other[30:40, 30:40, 3:6] = 1
    rois = {"GTV-1": contours_of(mask.array, ct.ijk_to_ras), "Lung-Left": contours_of(other, ct.ijk_to_ras)}
    rs = write_rtstruct(d / "RS.dcm", sources, rois)
    return d, ct, mask, other, sources, rois, rs


def full_grid(vol: Volume, ct: Volume) -> np.ndarray:
    """`vol` (a box on `ct`'s grid) pasted into a CT-sized array, checking that the grids are aligned."""
    off = ct.world_to_ijk(vol.ijk_to_world(np.zeros((1, 3))))[0]
    np.testing.assert_allclose(off, np.round(off), atol=1e-6)
    np.testing.assert_allclose(vol.ijk_to_ras[:3, :3], ct.ijk_to_ras[:3, :3], atol=1e-9)
    o = np.round(off).astype(int)
    out = np.zeros(ct.shape, np.int32)
    a = np.asarray(vol.array)
    out[o[0] : o[0] + a.shape[0], o[1] : o[1] + a.shape[1], o[2] : o[2] + a.shape[2]] = a
    return out


def test_the_fixture_has_holes_and_two_contours_per_slice(case):
    _, ct, mask, _, _, rois, _ = case
    z = [round(float(c[0, 2]), 3) for c in rois["GTV-1"]]
    assert max(z.count(v) for v in z) == 3  # outer outline, the hole, the satellite on one slice
    assert len(rois["GTV-1"]) > ct.shape[2] // 2


def test_round_trip_is_voxel_exact(case):
    d, ct, mask, _, _, _, rs = case
    assert is_rtstruct(rs) and not is_rtstruct(d / "ct" / "ct000.dcm")
    ct_back = io.read_volume(d / "ct")
    vol = io.read_mask(rs, segment="gtv-1", reference=ct_back)  # name ignoring case
    assert vol.meta["format"] == "RTSTRUCT" and vol.meta["segment"] == "GTV-1" and not vol.meta["warnings"]
    got = full_grid(vol, ct_back)
    want = np.asarray(mask.array)
    assert got.sum() == want.sum() > 1000
    np.testing.assert_array_equal(got, want)


def test_every_roi_with_contours_comes_back_named_and_voxel_exact(case):
    """io.lesion_segments (the browser app's "add an existing lesion"): each ROI, by its name, as 0/1 on the CT."""
    d, ct, mask, other, _, _, rs = case
    ct_back = io.read_volume(d / "ct")
    got = io.lesion_segments(rs, reference=ct_back)
    assert [name for name, _ in got] == ["GTV-1", "Lung-Left"]
    np.testing.assert_array_equal(full_grid(got[0][1], ct_back), np.asarray(mask.array))
    np.testing.assert_array_equal(full_grid(got[1][1], ct_back), other)
    assert {np.asarray(v.array).dtype for _, v in got} == {np.dtype(np.uint8)}


def test_roi_number_selects_and_keeps_the_number(case):
    from DFM50NLib.geometry.mask import prepare_mask

    d, ct, _, other, _, _, rs = case
    ct_back = io.read_volume(d / "ct")
    vol = io.read_mask(rs, label=2, reference=ct_back)
    assert set(np.unique(vol.array)) == {0, 2}
    np.testing.assert_array_equal(full_grid(vol, ct_back), other * 2)
    assert prepare_mask(vol, ct_back, label=2).voxels == int(other.sum())


def test_pixel_centre_fill_against_matplotlib_even_odd():
    """Overlapping and nested polygons with off-grid vertices: fill == XOR of matplotlib's point-in-polygon."""
    from matplotlib.path import Path as MplPath

    rng = np.random.default_rng(0)
    t = np.linspace(0, 2 * np.pi, 37)[:-1]
    polys = [
        np.column_stack([20.3 + 12.1 * np.cos(t), 18.7 + 9.3 * np.sin(t)]),
        np.column_stack([21.1 + 4.2 * np.cos(t), 17.9 + 3.7 * np.sin(t)]),  # hole
        np.column_stack([30.2 + 6.3 * np.cos(t), 25.6 + 5.1 * np.sin(t)]),  # overlaps the outer ring
        rng.uniform(2, 38, size=(7, 2)),  # self-intersecting
    ]
    lo, hi = (0, 0), (44, 40)
    got = fill_even_odd(polys, lo, hi)
    ii, jj = np.meshgrid(np.arange(44), np.arange(40), indexing="ij")
    centres = np.column_stack([ii.ravel(), jj.ravel()]).astype(float)
    want = np.zeros(len(centres), bool)
    for p in polys:
        want ^= MplPath(p).contains_points(centres)
    assert got.sum() > 300
    np.testing.assert_array_equal(got.ravel().astype(bool), want)


def test_fill_does_not_enlarge_a_square():
    """A 4x4-voxel square outline through voxel-edge positions covers exactly 16 centres (fillPoly gives 25)."""
    sq = np.array([[1.5, 1.5], [5.5, 1.5], [5.5, 5.5], [1.5, 5.5]])
    assert fill_even_odd([sq], (0, 0), (8, 8)).sum() == 16


def test_mismatched_frame_of_reference_is_refused(case, tmp_path):
    d, _, _, _, sources, rois, _ = case
    rs = write_rtstruct(tmp_path / "RS_other.dcm", sources, rois, frame_uid="1.2.3.4.5")
    with pytest.raises(InputError, match=r"Frame of Reference 1\.2\.3\.4\.5.*another scan"):
        io.read_mask(rs, segment="GTV-1", reference=io.read_volume(d / "ct"))


def test_off_plane_contours_snap_or_are_refused_with_the_distance(case, tmp_path):
    d, _, mask, _, sources, rois, _ = case
    ct_back = io.read_volume(d / "ct")
    near = write_rtstruct(tmp_path / "RS_near.dcm", sources, rois, z_shift=0.3)
    np.testing.assert_array_equal(
        full_grid(io.read_mask(near, segment="GTV-1", reference=ct_back), ct_back), mask.array
    )
    far = write_rtstruct(tmp_path / "RS_far.dcm", sources, rois, z_shift=1.1)
    with pytest.raises(InputError, match=r"lies 1\.10 mm off the nearest CT slice plane \(tolerance 0\.50 mm\)"):
        io.read_mask(far, segment="GTV-1", reference=ct_back)


def test_unknown_name_lists_the_rois_and_a_nifti_ct_is_warned(case, tmp_path):
    d, ct, mask, _, _, _, rs = case
    ct_back = io.read_volume(d / "ct")
    with pytest.raises(InputError, match=r"no ROI named 'GTV-2'.*1: 'GTV-1', 2: 'Lung-Left'"):
        io.read_mask(rs, segment="GTV-2", reference=ct_back)
    with pytest.raises(InputError, match=r"2 ROIs with contours.*--segment NAME"):
        io.read_mask(rs, reference=ct_back)
    with pytest.raises(InputError, match="only be read together with that CT"):
        io.read_mask(rs, segment="GTV-1")
    nifti = io.read_volume(io.write_volume(ct_back, tmp_path / "ct.nii.gz"))
    vol = io.read_mask(rs, segment="GTV-1", reference=nifti)  # placed by patient coordinates, with a warning
    assert "could not be checked" in vol.meta["warnings"][0]
    np.testing.assert_array_equal(full_grid(vol, nifti), mask.array)


def test_cli_score_rtstruct_equals_an_independent_nifti_label_map(case, tmp_path, random_weights):
    """Done-when: score --image CT_DIR --mask RS.dcm --segment GTV-1 == the same lesion as NIfTI."""
    import json

    from DFM50NLib.cli import main

    d, ct, mask, _, _, _, rs = case
    ct_int = ct.with_array(np.asarray(ct.array).astype(np.int16))  # what the DICOM slices store
    nii_ct = io.write_volume(ct_int, tmp_path / "ct.nii.gz")
    label_map = np.asarray(mask.array).astype(np.uint8) * 3
    nii_mask = io.write_volume(Volume(label_map, ct.ijk_to_ras), tmp_path / "lesion.nii.gz")
    common = ["--weights", str(random_weights), "--center", "centroid"]
    assert (
        main(
            ["score", "--image", str(d / "ct"), "--mask", str(rs), "--segment", "GTV-1", "--case-id", "rt"]
            + common
            + ["--out", str(tmp_path / "a")]
        )
        == 0
    )
    assert (
        main(
            ["score", "--image", str(nii_ct), "--mask", str(nii_mask), "--label", "3", "--case-id", "nii"]
            + common
            + ["--out", str(tmp_path / "b")]
        )
        == 0
    )
    a = json.loads((tmp_path / "a" / "rt.dfm50n.json").read_text())
    b = json.loads((tmp_path / "b" / "nii.dfm50n.json").read_text())
    # largest component only: the satellite is dropped in both
    assert abs(a["mask_voxels"] - b["mask_voxels"]) <= 0.01 * b["mask_voxels"]
    assert a["mask_voxels"] == b["mask_voxels"] and a["components_dropped"] == b["components_dropped"] == 1
    np.testing.assert_allclose(a["center_ras"], b["center_ras"], atol=1e-3)
    assert a["score"] == pytest.approx(b["score"], abs=1e-6)
    # `features` takes the same RTSTRUCT input and gives the features behind that score
    fcsv = tmp_path / "f.csv"
    args = ["features", "--image", str(d / "ct"), "--mask", str(rs), "--segment", "GTV-1", "--out", str(fcsv)]
    assert main(args + common) == 0
    header, row = fcsv.read_text().splitlines()
    got = dict(zip(header.split(",")[1:], map(float, row.split(",")[1:])))
    assert got.keys() == a["features"].keys()
    for name, value in a["features"].items():
        assert got[name] == pytest.approx(value, rel=1e-5, abs=1e-6)


def test_batch_manifest_takes_an_rtstruct_mask(case, tmp_path, random_weights):
    from DFM50NLib.batch.manifest import read_manifest

    d, _, mask, _, _, _, rs = case
    manifest = tmp_path / "cases.csv"
    manifest.write_text(f"case_id,image,mask,segment\nrt1,{d / 'ct'},{rs},gtv-1\n")
    (c,) = read_manifest(manifest)
    from DFM50NLib.scoring.pipeline import prepare_case

    prep = prepare_case(c.image, c.mask, case_id=c.case_id, **c.options)
    assert prep.stats["mask_voxels"] > 0.9 * int(np.asarray(mask.array).sum())
