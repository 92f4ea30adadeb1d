"""Manifest reading, folder pairing and config hashes: cheap, no network."""

from __future__ import annotations

import os

import pytest

from DFM50NLib.atomic import safe_stem
from DFM50NLib.batch.manifest import config_hash, pair_folders, read_manifest
from DFM50NLib.errors import InputError


def _touch(p, text="x"):
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(text)
    return p


def test_manifest_columns_paths_options_and_passthrough(tmp_path):
    (tmp_path / "m.csv").write_text(
        "case_id,image,mask,label,center,smoking,spiculated,short_axis_cm,os_months,site\n"
        "p1,img/p1.nii.gz,msk/p1.nrrd,2,centroid,yes,no,1.5,12.5,A\n"
        "p2,/abs/p2.nrrd,/abs/p2_seg.nrrd,,10 -20.5 3,,,,7,B\n"
        ",,,,,,,,,\n"
        "p3,p3.mha,p3.seg.nrrd,,,0,1,,,\n"
    )
    cases = read_manifest(tmp_path / "m.csv")
    assert [c.case_id for c in cases] == ["p1", "p2", "p3"] and [c.row for c in cases] == [0, 1, 2]
    p1, p2, p3 = cases
    assert p1.image == str(tmp_path.resolve() / "img/p1.nii.gz") and p2.image == "/abs/p2.nrrd"
    assert p1.options == {"label": 2, "center": "centroid"}
    assert p2.options == {"center": "point", "point_ras": [10.0, -20.5, 3.0]}
    assert p1.clinical == {"smoking": True, "spiculated": False, "short_axis_cm": 1.5}
    assert p2.clinical == {"smoking": None, "spiculated": None, "short_axis_cm": None}
    assert p3.clinical["smoking"] is False and p3.clinical["spiculated"] is True
    assert p1.extra == {"os_months": "12.5", "site": "A"}


def test_manifest_errors_name_the_row(tmp_path):
    m = tmp_path / "m.csv"
    m.write_text("case_id,image,mask,smoking\np1,a,b,maybe\n")
    with pytest.raises(InputError, match="row 2.*smoking"):
        read_manifest(m)
    m.write_text("case_id,image,mask\np1,a,b\np1,c,d\n")
    with pytest.raises(InputError, match="Duplicate case 'p1'"):
        read_manifest(m)
    m.write_text("case_id,image,mask\na/b,a,b\na_b,c,d\n")  # same file name once made safe
    with pytest.raises(InputError, match="same file name"):
        read_manifest(m)
    m.write_text("case_id,image,mask\nPat1,a,b\npat1,c,d\n")  # one file on macOS and Windows
    with pytest.raises(InputError, match="'Pat1' and 'pat1' map to the same file name"):
        read_manifest(m)
    m.write_text("case_id,ct\np1,a\n")
    with pytest.raises(InputError, match="lacks column.*image, mask"):
        read_manifest(m)
    with pytest.raises(InputError, match="not found"):
        read_manifest(tmp_path / "nope.csv")


def test_semicolon_manifest_and_case_id_from_file_name(tmp_path):
    (tmp_path / "m.csv").write_text("image;mask;outcome\nct/p9.nii.gz;p9_mask.nii.gz;1\n")
    (c,) = read_manifest(tmp_path / "m.csv")
    assert c.case_id == "p9" and c.extra == {"outcome": "1"}


def test_pairing_rule_suffixes_dicom_folders_and_unpaired(tmp_path):
    img, msk = tmp_path / "img", tmp_path / "msk"
    for name in ("a.nii.gz", "b.nrrd", "c.mha", "d.nii.gz", "e.nii", "notes.txt", ".hidden.nii"):
        _touch(img / name)
    _touch(img / "dicom_f" / "1.dcm")  # a DICOM series folder: its folder name is the base name
    _touch(img / "dicom_g" / "1.dcm")
    _touch(img / "loose.dcm")  # a loose DICOM file is never an image
    for name in (
        "a_mask.nii.gz",
        "b.seg.nrrd",
        "c-SEG.nrrd",
        "dicom_f_label.nrrd",
        "e_seg.nii",
        "e.nii",
        "orphan_mask.nii.gz",
        "dicom_g_seg.dcm",
    ):  # a DICOM-SEG file pairs like any mask
        _touch(msk / name)
    cases, problems = pair_folders(img, msk)
    pairs = {c.case_id: (os.path.basename(c.image), os.path.basename(c.mask)) for c in cases}
    assert pairs == {
        "a": ("a.nii.gz", "a_mask.nii.gz"),
        "b": ("b.nrrd", "b.seg.nrrd"),
        "c": ("c.mha", "c-SEG.nrrd"),
        "dicom_f": ("dicom_f", "dicom_f_label.nrrd"),
        "dicom_g": ("dicom_g", "dicom_g_seg.dcm"),
    }
    why = {(p["case_id"], p["error"].split(":")[0]) for p in problems}
    assert why == {("d", "unpaired image"), ("e", "ambiguous"), ("orphan", "unpaired mask")}


def test_pairing_in_one_shared_folder(tmp_path):
    for name in ("p1.nii.gz", "p1_mask.nii.gz", "p2.nrrd", "p2_seg.nrrd", "p3_seg.dcm"):
        _touch(tmp_path / name)
    _touch(tmp_path / "p3" / "1.dcm")
    cases, problems = pair_folders(tmp_path, tmp_path)
    assert [(c.case_id, os.path.basename(c.mask)) for c in cases] == [
        ("p1", "p1_mask.nii.gz"),
        ("p2", "p2_seg.nrrd"),
        ("p3", "p3_seg.dcm"),
    ]
    assert problems == []


def test_config_hash_follows_inputs_and_options_not_outcomes(tmp_path):
    (tmp_path / "m.csv").write_text("case_id,image,mask,outcome\np1,ct.nrrd,m.nrrd,1\n")
    ct = _touch(tmp_path / "ct.nrrd", "ct")
    _touch(tmp_path / "m.nrrd", "m")
    (case,) = read_manifest(tmp_path / "m.csv")
    opts = {"center": "dt_peak", "orientation": "LPS"}
    ident = {"software_version": "1", "fcib_weights_sha256": "w", "classifier_sha256": "c", "device": "cpu"}
    h = config_hash(case, opts, ident)
    case.extra["outcome"] = "0"
    assert config_hash(case, opts, ident) == h
    assert config_hash(case, dict(opts, orientation="LAS"), ident) != h
    assert config_hash(case, opts, dict(ident, classifier_sha256="d")) != h
    case.clinical["smoking"] = True
    assert config_hash(case, opts, ident) != h
    case.clinical["smoking"] = None
    st = ct.stat()
    os.utime(ct, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # the CT was rewritten
    assert config_hash(case, opts, ident) != h


def test_safe_stem():
    assert safe_stem("a/b c") == "a_b_c" and safe_stem("..x") == "x" and safe_stem("") == "case"


def test_resume_rule_config_hash_and_4096_vector(tmp_path):
    import json

    from DFM50NLib.batch.cohort import _is_done
    from DFM50NLib.batch.engine import Task

    task = Task("p/1", "a", "b", {}, {}, "h" * 64)
    assert not _is_done(tmp_path, task, 9)  # nothing yet
    (tmp_path / "cases").mkdir()
    path = tmp_path / "cases" / "p_1.json"
    path.write_text(json.dumps({"config_hash": "h" * 64, "all_features": None}))
    assert _is_done(tmp_path, task, 9) and not _is_done(tmp_path, task, 4096)
    path.write_text(json.dumps({"config_hash": "h" * 64, "all_features": [0.0] * 4096}))
    assert _is_done(tmp_path, task, 4096)
    path.write_text(json.dumps({"config_hash": "g" * 64}))
    assert not _is_done(tmp_path, task, 9)  # other configuration: redo
    path.write_text('{"config_hash": "hhh')  # torn file (cannot happen with atomic writes): redo
    assert not _is_done(tmp_path, task, 9)
