"""DICOM SR out: the TID 1500 report written for a scored DICOM case reads back (highdicom) to the same
score, references the CT series and the lesion SEG, identifies the algorithm, and passes dciodvfy."""

from __future__ import annotations

import json
import shutil
import subprocess

import highdicom as hd
import numpy as np
import pytest
from test_dicomseg import make_seg
from test_rtstruct import contours_of, ct_datasets, lesion_with_hole_and_satellite, write_rtstruct

from DFM50NLib import io
from DFM50NLib.cli import main
from DFM50NLib.errors import InputError
from DFM50NLib.scoring.pipeline import population_warnings


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    d = tmp_path_factory.mktemp("sr")
    ct, mask = lesion_with_hole_and_satellite((48, 44, 16))
    sources = ct_datasets(ct)
    (d / "ct").mkdir()
    for k, ds in enumerate(sources):
        ds.save_as(str(d / "ct" / f"ct{k:03d}.dcm"), enforce_file_format=True)
    rs = write_rtstruct(d / "RS.dcm", sources, {"GTV-1": contours_of(mask.array, ct.ijk_to_ras)})
    return d, ct, mask, sources, rs


def dciodvfy_errors(path) -> list:
    if shutil.which("dciodvfy") is None:
        pytest.skip("dciodvfy (Debian package dicom3tools, installed by .ci/run) is not on PATH")
    out = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True)
    return [line for line in (out.stdout + out.stderr).splitlines() if line.startswith("Error")]


def content_items(seq):
    for item in seq:
        yield item
        yield from content_items(getattr(item, "ContentSequence", None) or [])


def test_sr_reads_back_to_the_same_score_and_passes_dciodvfy(case, tmp_path, random_weights):
    d, ct, mask, sources, rs = case
    out, srdir = tmp_path / "out", tmp_path / "sr"
    args = ["score", "--image", str(d / "ct"), "--mask", str(rs), "--segment", "GTV-1", "--case-id", "c1"]
    args += ["--weights", str(random_weights), "--smoking", "yes", "--spiculated", "no"]
    assert main(args + ["--out", str(out), "--dicom-sr", str(srdir)]) == 0
    res = json.loads((out / "c1.dfm50n.json").read_text())
    sr_path, seg_path = srdir / "c1.dfm50n.sr.dcm", srdir / "c1.dfm50n.seg.dcm"
    assert dciodvfy_errors(sr_path) == [] and dciodvfy_errors(seg_path) == []

    sr = hd.sr.srread(str(sr_path))
    (group,) = sr.content.get_volumetric_roi_measurement_groups()
    got = {m.name.meaning: m.value for m in group.get_measurements()}
    assert got["DFM50N probability of occult lymph node metastasis"] == pytest.approx(res["score"], abs=1e-9)
    assert got["DFM50N high-risk threshold"] == pytest.approx(res["threshold"])
    assert got["Combined clinical model probability of OLM"] == pytest.approx(res["combined_probability"], abs=1e-9)
    assert got["Long axis"] == pytest.approx(res["long_axis_mm"], abs=1e-6)
    assert got["Short axis"] == pytest.approx(res["short_axis_cm"] * 10, abs=1e-6)
    evals = {e.name.meaning: e.value.meaning for e in group.get_qualitative_evaluations()}
    want = "High" if res["high_risk"] else "Low"
    assert evals["Risk of occult lymph node metastasis"] == f"{want} risk of occult lymph node metastasis"
    assert evals["DFM50N classifier"].startswith("DEMO") and "DEMO" in sr.SeriesDescription  # unmistakable
    assert evals["Lesion within the population DFM50N was built on"] == "Yes"
    assert group.tracking_identifier == "c1 lesion" and group.tracking_uid.startswith("1.")

    items = list(content_items(sr.ContentSequence))
    # algorithm identification: name with DEMO, version, the two SHA-256 as parameters
    alg = [str(i.TextValue) for i in items if getattr(i, "ValueType", "") == "TEXT"]
    assert any("DEMO" in t for t in alg) and f"classifier_sha256={res['classifier_sha256']}" in alg
    assert f"fcib_weights_sha256={res['fcib_weights_sha256']}" in alg
    assert any("disconnected mask component" in t for t in alg)  # Result.warnings travel as text
    # references: the CT series (evidence) and the SEG written alongside (segment 1)
    seg = __import__("pydicom").dcmread(seg_path)
    (img,) = [i for i in items if getattr(i, "ValueType", "") == "IMAGE"]
    assert img.ReferencedSOPSequence[0].ReferencedSOPInstanceUID == seg.SOPInstanceUID
    assert int(img.ReferencedSOPSequence[0].ReferencedSegmentNumber) == 1
    evidence = {
        s.SeriesInstanceUID: s
        for st in sr.CurrentRequestedProcedureEvidenceSequence
        for s in st.ReferencedSeriesSequence
    }
    assert len(evidence[sources[0].SeriesInstanceUID].ReferencedSOPSequence) == ct.shape[2]
    assert seg.SeriesInstanceUID in evidence
    # the SEG holds exactly the scored lesion (largest component), at the CT's voxels
    seg_mask = io.read_mask(seg_path)
    assert int(np.asarray(seg_mask.array).sum()) == res["mask_voxels"]


def test_sr_references_a_given_dicom_seg_instead_of_writing_one(case, tmp_path, random_weights):
    d, ct, mask, sources, _ = case
    seg_in = tmp_path / "lesion_seg.dcm"
    other = np.zeros(mask.shape, np.uint8)
    other[2:6, 3:8, 1:3] = 1
    make_seg(sources, {"vessel": other, "lesion": np.asarray(mask.array)}, seg_in, list(range(ct.shape[2])))
    srdir = tmp_path / "sr"
    args = ["score", "--image", str(d / "ct"), "--mask", str(seg_in), "--segment", "lesion"]
    args += ["--weights", str(random_weights)]
    assert main(args + ["--out", str(tmp_path / "o"), "--dicom-sr", str(srdir), "--case-id", "c2"]) == 0
    assert sorted(p.name for p in srdir.iterdir()) == ["c2.dfm50n.sr.dcm"]
    sr = hd.sr.srread(str(srdir / "c2.dfm50n.sr.dcm"))
    (img,) = [i for i in content_items(sr.ContentSequence) if getattr(i, "ValueType", "") == "IMAGE"]
    ref = img.ReferencedSOPSequence[0]
    assert ref.ReferencedSOPInstanceUID == __import__("pydicom").dcmread(seg_in).SOPInstanceUID
    assert int(ref.ReferencedSegmentNumber) == 2  # "lesion" is the SEG's second segment


def test_a_ct_not_from_dicom_is_refused_before_scoring(case, tmp_path, random_weights):
    from DFM50NLib.scoring.pipeline import score_case

    d, ct, mask, _, _ = case
    nii = io.write_volume(ct, tmp_path / "ct.nii.gz")
    m = io.write_volume(mask, tmp_path / "m.nii.gz")
    with pytest.raises(InputError, match=r"was not read from a DICOM series.*--image DICOM_DIR"):
        score_case(nii, m, weights=random_weights, dicom_sr=tmp_path / "sr")
    assert not (tmp_path / "sr").exists()


def test_out_of_population_warning():
    assert population_warnings(30.0, 1.0) == []
    (w,) = population_warnings(62.4, 0.8)
    assert w.startswith("Out of population") and "62 mm" in w and "80.0%" in w and "up to 5 cm" in w
    (w,) = population_warnings(None, 0.95)
    assert "95.0%" in w


def test_batch_writes_an_sr_per_dicom_case_and_warns_for_the_others(case, tmp_path, random_weights):
    d, ct, mask, _, rs = case
    nii, m = io.write_volume(ct, tmp_path / "ct.nii.gz"), io.write_volume(mask, tmp_path / "m.nii.gz")
    manifest = tmp_path / "cases.csv"
    manifest.write_text(f"case_id,image,mask,segment\ndcm,{d / 'ct'},{rs},GTV-1\nnii,{nii},{m},\n")
    out, srdir = tmp_path / "out", tmp_path / "sr"
    args = ["batch", "--manifest", str(manifest), "--out", str(out), "--weights", str(random_weights)]
    assert main(args + ["--dicom-sr", str(srdir), "--no-progress"]) == 0
    assert sorted(p.name for p in srdir.iterdir()) == ["dcm.dfm50n.seg.dcm", "dcm.dfm50n.sr.dcm"]
    res = json.loads((out / "cases" / "dcm.json").read_text())
    res = res.get("result", res)
    sr = hd.sr.srread(str(srdir / "dcm.dfm50n.sr.dcm"))
    (group,) = sr.content.get_volumetric_roi_measurement_groups()
    got = {m.name.meaning: m.value for m in group.get_measurements()}
    assert got["DFM50N probability of occult lymph node metastasis"] == pytest.approx(res["score"], abs=1e-9)
    other = json.loads((out / "cases" / "nii.json").read_text())
    assert any("No DICOM SR written" in w and "not read from a DICOM series" in w for w in other["warnings"])
