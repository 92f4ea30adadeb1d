"""Bad-input catalogue, part two (issue 19): results that vanish and messages that mislead.

Each probe runs `python -m DFM50NLib ...` in this process (main(argv)) and asserts the exit code, the message,
that no partial output is left and that an earlier result is byte-identical afterwards. Inputs are tiny.
"""

from __future__ import annotations

import contextlib
import csv
import errno
import json
import math
import re
import subprocess
from pathlib import Path

import pytest

from DFM50NLib import io
from DFM50NLib.cli import main
from DFM50NLib.constants import DFM50N_FEATURE_INDICES
from DFM50NLib.geometry.synthetic import sphere_case


@pytest.fixture(scope="module")
def cases(tmp_path_factory):
    """Two per-case folders that both hold ct.nii.gz + mask.nrrd (different CTs), as exports usually are."""
    d = tmp_path_factory.mktemp("perfolder")
    out = {}
    for n, (name, centre) in enumerate((("p001", 0.0), ("p002", 6.0))):
        ct, mask = sphere_case(
            center_ras=(centre, 0.0, 0.0), radius_mm=7.0, shape=(64, 64, 24), spacing=(0.9, 0.9, 2.0), seed=3 + n
        )
        (d / name).mkdir()
        out[name] = (io.write_volume(ct, d / name / "ct.nii.gz"), io.write_volume(mask, d / name / "mask.nrrd"))
    return out


@pytest.fixture(autouse=True)
def _env(tmp_path, monkeypatch):
    monkeypatch.setenv("DFM50N_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("DFM50N_FCIB_WEIGHTS", raising=False)
    monkeypatch.delenv("DFM50N_DEBUG", raising=False)


def score(files, out, weights, *extra):
    ct, mask = files
    return main(
        ["score", "--image", str(ct), "--mask", str(mask), "--weights", str(weights), "--out", str(out)]
        + [str(e) for e in extra]
    )


def snapshot(folder: Path) -> dict:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(Path(folder).rglob("*")) if p.is_file()}


def no_partials(folder: Path) -> bool:
    return not [p for p in Path(folder).rglob("*") if ".part" in p.name]


# ------------------------------------------------------------------------------- row 11: case ids that collide
def test_per_case_folders_get_their_own_case_ids(cases, tmp_path, random_weights, capsys):
    out = tmp_path / "out"
    assert score(cases["p001"], out, random_weights) == 0
    first = snapshot(out)
    assert sorted(first) == ["p001_ct.dfm50n.csv", "p001_ct.dfm50n.json"]
    assert score(cases["p002"], out, random_weights) == 0
    after = snapshot(out)
    assert {k: after[k] for k in first} == first  # the first case's result is still there, byte for byte
    assert json.loads(after["p002_ct.dfm50n.json"])["case_id"] == "p002_ct"


def test_a_case_id_of_another_input_is_refused_not_replaced(cases, tmp_path, random_weights, capsys):
    out = tmp_path / "out"
    assert score(cases["p001"], out, random_weights, "--case-id", "ct") == 0
    earlier = snapshot(out)
    capsys.readouterr()
    assert score(cases["p002"], out, random_weights, "--case-id", "ct") == 2
    err = capsys.readouterr().err
    assert re.search(r"ct\.dfm50n\.json holds the result of case 'ct' scored from another input", err), err
    assert "p001" in err and "--case-id" in err and "--overwrite" in err and err.count("error:") == 1
    assert snapshot(out) == earlier and no_partials(out)
    # the same input again is a re-score, not a collision; --overwrite replaces another input's result on purpose
    assert score(cases["p001"], out, random_weights, "--case-id", "ct") == 0
    assert score(cases["p002"], out, random_weights, "--case-id", "ct", "--overwrite") == 0
    assert "p002" in json.loads((out / "ct.dfm50n.json").read_text())["image_path"]


def test_default_dicom_case_id_is_patient_and_series(tmp_path):
    from test_dicomseg import ct_datasets

    from DFM50NLib.scoring.case_id import default_case_id

    ct, _ = sphere_case(radius_mm=5.0, shape=(16, 16, 4), spacing=(1.0, 1.0, 2.0), seed=1)
    ids = []
    for name, number in (("a", 2), ("b", 3)):
        folder = tmp_path / name / "CT"
        folder.mkdir(parents=True)
        for k, ds in enumerate(ct_datasets(ct)):
            ds.PatientID, ds.SeriesNumber = "LUNG1-001", number
            ds.save_as(str(folder / f"{k}.dcm"), enforce_file_format=True)
        ids.append(default_case_id(folder))
    assert ids[0].startswith("LUNG1-001_s2_") and ids[1].startswith("LUNG1-001_s3_") and ids[0] != ids[1]


# ------------------------------------------------------------------- rows 13 + 14: one run, all files or none
def _truncating_itk_writer(monkeypatch):
    """What ITK does on a full disk: it writes what fits (here 12 bytes) and does not raise."""
    import SimpleITK as sitk

    real = sitk.WriteImage

    def write(image, path, *args, **kwargs):
        real(image, path, *args, **kwargs)
        data = Path(path).read_bytes()
        Path(path).write_bytes(data[:12])

    monkeypatch.setattr(sitk, "WriteImage", write)


def test_a_cube_that_does_not_read_back_fails_the_run_and_keeps_the_earlier_result(
    cases, tmp_path, random_weights, capsys, monkeypatch
):
    out = tmp_path / "out"
    assert score(cases["p001"], out, random_weights, "--save-cubes") == 0
    earlier = snapshot(out)
    assert len(earlier) == 4
    capsys.readouterr()
    _truncating_itk_writer(monkeypatch)
    assert score(cases["p001"], out, random_weights, "--save-cubes", "--smoking", "yes") == 2
    captured = capsys.readouterr()
    assert re.search(r"does not read back .*is the disk full\? Nothing was replaced.*p001_ct_ct_50cube", captured.err)
    assert "results written" not in captured.out
    assert snapshot(out) == earlier and no_partials(out)


@contextlib.contextmanager
def tiny_disk(path: Path, free_kb: int):
    """A tmpfs with about `free_kb` KiB free (root only); unmounted afterwards."""
    path.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(path)], capture_output=True).returncode:
        yield None
        return
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=True)


def _fill(folder: Path, free_kb: int):
    import os

    st = os.statvfs(folder)
    room = st.f_bavail * st.f_frsize - free_kb * 1024
    (folder / "filler").write_bytes(b"\0" * max(0, room))


def make_disk_full(disk: Path, mounted: bool, free_kb: int, monkeypatch, spare=("batch_config",)):
    """A real full tmpfs (`free_kb` left), or where it cannot be mounted (not root), the same as the writers see it:
    ITK writes a truncated file without a word, Python's writes fail with ENOSPC (files named in `spare` fit)."""
    import os

    if mounted:
        _fill(disk, free_kb)
        return
    _truncating_itk_writer(monkeypatch)
    real = os.fsync

    def fsync(fd):
        name = os.readlink(f"/proc/self/fd/{fd}")
        if name.startswith(str(disk)) and not any(s in name for s in spare):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(fd)

    monkeypatch.setattr(os, "fsync", fsync)


def test_disk_full_with_save_cubes_exits_2_and_keeps_the_earlier_result(
    cases, tmp_path, random_weights, capsys, monkeypatch
):
    with tiny_disk(tmp_path / "disk", 0) as mounted:
        disk = tmp_path / "disk"
        out = disk / "out"
        assert score(cases["p001"], out, random_weights) == 0  # JSON + CSV only
        earlier = snapshot(out)
        make_disk_full(disk, mounted is not None, 12, monkeypatch, spare=(".dfm50n.",))  # JSON, CSV fit; cubes not
        capsys.readouterr()
        assert score(cases["p001"], out, random_weights, "--save-cubes", "--smoking", "yes") == 2
        captured = capsys.readouterr()
        assert re.search(r"(No space left on device|does not read back)", captured.err), captured.err
        assert "Nothing was replaced" in captured.err or "nothing was replaced" in captured.err
        assert "results written" not in captured.out
        assert snapshot(out) == earlier and no_partials(out)


def test_a_failing_report_keeps_the_earlier_json_and_csv(cases, tmp_path, random_weights, capsys, monkeypatch):
    from DFM50NLib.report import pdf

    out = tmp_path / "out"
    assert score(cases["p001"], out, random_weights) == 0
    earlier = snapshot(out)

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(pdf, "page_two", full)
    capsys.readouterr()
    assert score(cases["p001"], out, random_weights, "--report", "--smoking", "yes") == 2
    err = capsys.readouterr().err
    assert re.search(r"No space left on device while writing p001_ct_report\.pdf; nothing was replaced", err), err
    assert snapshot(out) == earlier and no_partials(out)


# --------------------------------------------- rows 15, 19, 20: DICOM SR of an anonymised series, no noise
@pytest.fixture(scope="module")
def anonymised_dicom(tmp_path_factory):
    """A DICOM CT series as anonymisers leave it: PatientName 'LUNG1-001' (one component), no PatientBirthDate,
    PatientIdentityRemoved YES without DeidentificationMethod; plus an RTSTRUCT of the lesion."""
    from test_dicomseg import ct_datasets
    from test_rtstruct import contours_of, lesion_with_hole_and_satellite, write_rtstruct

    d = tmp_path_factory.mktemp("anon")
    ct, mask = lesion_with_hole_and_satellite((48, 44, 16))
    sources = ct_datasets(ct)
    (d / "ct").mkdir()
    for k, ds in enumerate(sources):
        ds.PatientName, ds.PatientID, ds.PatientIdentityRemoved = "LUNG1-001", "LUNG1-001", "YES"
        del ds.PatientBirthDate
        ds.save_as(str(d / "ct" / f"ct{k:03d}.dcm"), enforce_file_format=True)
    rs = write_rtstruct(d / "RS.dcm", sources, {"GTV-1": contours_of(mask.array, ct.ijk_to_ras)})
    return d / "ct", rs


def dciodvfy_errors(path) -> list:
    out = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True)
    return [line for line in (out.stdout + out.stderr).splitlines() if line.startswith("Error")]


def test_sr_of_a_series_without_birth_date_is_written_and_valid(anonymised_dicom, tmp_path, random_weights, capsys):
    import pydicom

    from DFM50NLib.report.dicom_sr import NO_METHOD_GIVEN, SCHEME

    ct, rs = anonymised_dicom
    out, srdir = tmp_path / "out", tmp_path / "sr"
    args = ["score", "--image", ct, "--mask", rs, "--segment", "GTV-1", "--weights", random_weights]
    assert main([str(a) for a in args] + ["--out", str(out), "--dicom-sr", str(srdir)]) == 0
    err = capsys.readouterr().err
    assert "unlikely to represent" not in err and "AttributeError" not in err  # rows 19 and 15
    assert all(line.startswith("warning: ") for line in err.splitlines() if line.strip())
    (sr_path,) = srdir.glob("LUNG1-001_s1_*.dfm50n.sr.dcm")  # row 11: the DICOM case id
    (seg_path,) = srdir.glob("*.dfm50n.seg.dcm")
    assert dciodvfy_errors(sr_path) == [] and dciodvfy_errors(seg_path) == []  # row 20 (2 errors each before)
    for path in (sr_path, seg_path):
        ds = pydicom.dcmread(path)
        assert ds.PatientIdentityRemoved == "YES" and ds.DeidentificationMethod == NO_METHOD_GIVEN
        assert ds.PatientBirthDate == "" and str(ds.PatientName) == "LUNG1-001"
    sr = pydicom.dcmread(sr_path)
    assert [s.CodingSchemeDesignator for s in sr.CodingSchemeIdentificationSequence] == [SCHEME]


def test_deidentification_method_of_the_ct_is_copied():
    from pydicom.dataset import Dataset

    from DFM50NLib.report.dicom_sr import copy_deidentification

    ct = Dataset()
    ct.PatientIdentityRemoved, ct.DeidentificationMethod = "YES", "CTP: Basic Profile"
    assert copy_deidentification(Dataset(), ct).DeidentificationMethod == "CTP: Basic Profile"
    ct.PatientIdentityRemoved = "NO"
    assert "DeidentificationMethod" not in copy_deidentification(Dataset(), ct)


def test_batch_sr_of_a_series_without_birth_date_keeps_its_score(anonymised_dicom, tmp_path, random_weights, capsys):
    ct, rs = anonymised_dicom
    manifest = tmp_path / "cases.csv"
    manifest.write_text(f"case_id,image,mask,segment\nanon,{ct},{rs},GTV-1\n")
    out, srdir = tmp_path / "out", tmp_path / "sr"
    args = ["batch", "--manifest", manifest, "--out", out, "--weights", random_weights, "--dicom-sr", srdir]
    assert main([str(a) for a in args]) == 0  # with the progress bar: nothing of highdicom's in between
    err = capsys.readouterr().err
    assert "unlikely to represent" not in err and "AttributeError" not in err
    assert sorted(p.name for p in srdir.iterdir()) == ["anon.dfm50n.seg.dcm", "anon.dfm50n.sr.dcm"]
    assert [r["case_id"] for r in csv.DictReader(open(out / "results.csv"))] == ["anon"]
    assert (out / "errors.csv").read_text().strip() == "case_id,image,mask,stage,error_type,message"


# --------------------------------------------------- rows 12, 16, 17: batch console, summary, CSV, partials
@pytest.fixture(scope="module")
def big_lesion(tmp_path_factory):
    """A 64 mm lesion: larger than the cube (coverage < 1) and than the population's 5 cm."""
    d = tmp_path_factory.mktemp("big")
    ct, mask = sphere_case(radius_mm=32.0, shape=(90, 90, 40), spacing=(1.0, 1.0, 2.0), seed=7)
    return io.write_volume(ct, d / "big.nii.gz"), io.write_volume(mask, d / "big_mask.nrrd")


def test_features_warns_like_score(big_lesion, tmp_path, random_weights, capsys):
    ct, mask = big_lesion
    out = tmp_path / "f.csv"
    assert (
        main(["features", "--image", str(ct), "--mask", str(mask), "--weights", str(random_weights), "--out", str(out)])
        == 0
    )
    err = capsys.readouterr().err
    assert re.search(r"warning: Lesion larger than the 50 mm cube: only \d+\.\d% of its volume", err), err
    assert re.search(r"warning: Out of population: its longest diameter is 6\d mm .*only \d+\.\d% of it fits", err), err
    assert "warning: FCIB weights: unverified file sha256" in err
    (row,) = list(csv.DictReader(open(out)))
    assert list(row) == ["case_id"] + [f"pred_{i}" for i in DFM50N_FEATURE_INDICES]
    assert row["case_id"] == f"{ct.parent.name}_big" and all(math.isfinite(float(row[c])) for c in list(row)[1:])


def test_batch_console_summary_and_csv_carry_every_warning_and_failure(
    cases, big_lesion, tmp_path, random_weights, capsys
):
    manifest = tmp_path / "cases.csv"
    rows = [
        ["case_id", "image", "mask", "=1+2", "outcome", "note"],
        ['=HYPERLINK("http://x","big")', *big_lesion, "=cmd|' /C calc'!A0", "-0.5", "@SUM(A1)"],
        ["p001", *cases["p001"], "+1", "1", "\tsafe"],
        ["gone", tmp_path / "missing.nii.gz", cases["p001"][1], "x", "0", "-y"],
    ]
    with open(manifest, "w", newline="") as f:
        csv.writer(f).writerows([[str(c) for c in r] for r in rows])
    out = tmp_path / "out"
    args = ["batch", "--manifest", manifest, "--out", out, "--weights", random_weights, "--report", "--no-progress"]
    assert main([str(a) for a in args]) == 1  # one case failed
    err = capsys.readouterr().err
    # row 12: each case's own warnings on the console, with its id; the job's (weights) once
    assert re.search(r'warning: =HYPERLINK\("http://x","big"\): Out of population: its longest diameter', err), err
    assert re.search(r'warning: =HYPERLINK\("http://x","big"\): Lesion larger than the 50 mm cube', err), err
    assert err.count("FCIB weights: unverified") == 1 and "1 case(s) failed" in err
    # row 17: no cell a spreadsheet would run; numbers stay numbers
    got = list(csv.reader(open(out / "results.csv", encoding="utf-8")))
    head = got[0]
    big = dict(zip(head, got[1]))
    assert big["case_id"] == '\'=HYPERLINK("http://x","big")' and "'=1+2" in head
    assert big["'=1+2"] == "'=cmd|' /C calc'!A0" and big["note"] == "'@SUM(A1)" and big["outcome"] == "-0.5"
    assert float(big["score"]) == pytest.approx(
        json.loads(next((out / "cases").glob("*HYPERLINK*")).read_text())["score"]
    )
    p001 = dict(zip(head, got[2]))
    assert p001["'=1+2"] == "+1" and p001["note"] == "'\tsafe"
    assert not any(cell.startswith(("=", "+", "@", "\t", "\r")) for row in got for cell in row if not _number(cell))
    errors = list(csv.reader(open(out / "errors.csv", encoding="utf-8")))
    assert dict(zip(errors[0], errors[1]))["note"] == "'-y"
    # row 12: the cohort summary says a case failed and shows every warning in full
    text = subprocess.run(["pdftotext", str(out / "cohort_summary.pdf"), "-"], capture_output=True, text=True).stdout
    flat = " ".join(text.split())
    assert "2 cases scored" in flat and "1 case(s) failed, not shown (see errors.csv)" in flat
    assert "OUT OF POPULATION" in flat and "its score is not validated for this lesion." in flat
    html = (out / "cohort_summary.html").read_text(encoding="utf-8")
    assert "1 case(s) failed" in html and "its score is not validated for this lesion." in html


def _number(text) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def test_batch_cleans_partials_left_by_a_kill_in_reports_and_sr(cases, tmp_path, random_weights, capsys):
    """kill -9 between writing a temporary and renaming it leaves `.<name>.<random>.part.pdf` behind: the next
    run of the job (it holds the folder's lock) removes them everywhere it writes, reports/ and the SR folder too."""
    manifest = tmp_path / "cases.csv"
    manifest.write_text(f"case_id,image,mask\np1,{cases['p001'][0]},{cases['p001'][1]}\n")
    out, srdir = tmp_path / "out", tmp_path / "sr"
    left = [
        out / "reports" / ".p1_report.k2j3h4.part.pdf",
        out / "reports" / ".p1_report.x9y8z7.part.html",
        out / ".results.a1b2c3.part.csv",
        out / "cases" / ".p1.q1w2e3.part.json",
        srdir / ".p1.r4t5y6.part.dfm50n.sr.dcm",
    ]
    for p in left:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"%PDF-1.4 half")
    (srdir / "keep.dcm").write_bytes(b"not ours")
    args = ["batch", "--manifest", manifest, "--out", out, "--weights", random_weights, "--report", "--no-progress"]
    assert main([str(a) for a in args] + ["--dicom-sr", str(srdir)]) == 0
    assert "warning: p1: No DICOM SR written" in capsys.readouterr().err  # a NIfTI CT: the score stands
    assert not any(p.exists() for p in left) and no_partials(out)
    assert (srdir / "keep.dcm").read_bytes() == b"not ours"
    assert (out / "reports" / "p1_report.pdf").read_bytes().startswith(b"%PDF-")
    assert "No DICOM SR written" in (out / "reports" / "p1_report.html").read_text(encoding="utf-8")


def test_batch_on_a_full_disk_says_what_it_could_not_write(cases, tmp_path, random_weights, capsys, monkeypatch):
    with tiny_disk(tmp_path / "disk", 0) as mounted:
        disk = tmp_path / "disk"
        out = disk / "out"
        manifest = tmp_path / "cases.csv"
        note = "n" * 5000  # results.csv needs more than the one 4 KiB page left; batch_config.json does not
        manifest.write_text(f"case_id,image,mask,note\np1,{cases['p001'][0]},{cases['p001'][1]},{note}\n")
        base = ["batch", "--out", str(out), "--weights", str(random_weights), "--no-progress"]
        assert main(base + ["--manifest", str(manifest)]) == 0
        earlier = snapshot(out)
        manifest.write_text(manifest.read_text() + f"p2,{cases['p002'][0]},{cases['p002'][1]},{note}\n")
        make_disk_full(disk, mounted is not None, 5, monkeypatch, spare=("batch_config", "cases/"))
        capsys.readouterr()
        assert main(base + ["--manifest", str(manifest)]) == 2
        err = capsys.readouterr().err
        assert re.search(r"error: the disk holding .*out is full", err), err
        assert "results.csv and errors.csv could NOT be written" in err and "run the same command again" in err
        after = snapshot(out)
        assert {k: after[k] for k in earlier if k != "batch_config.json"} == {
            k: v for k, v in earlier.items() if k != "batch_config.json"
        }  # p1's result and the earlier tables, byte for byte
        assert no_partials(out) and "1 case(s) scored by this run are in" in err
        assert json.loads(after["cases/p2.json"])["case_id"] == "p2"  # what was scored is kept, whole


# ---------------------------------------------------------------- row 21: one verdict on the FCIB weights
@pytest.fixture
def record_server(monkeypatch):
    from test_weights import Server

    for var in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    s = Server()
    yield s
    s.stop()


@pytest.fixture
def copied_by_hand(tmp_path, monkeypatch):
    """A small intact FCIB-shaped checkpoint, treated as if it had the published size (as the real file has),
    copied by hand: no publisher checksum beside it."""
    import torch

    from DFM50NLib.model import fcib, weights

    state = {
        k: torch.zeros((), dtype=v.dtype).expand(v.shape) for k, v in fcib.build_trunk("meta").state_dict().items()
    }
    state["conv1.weight"] = torch.randn(state["conv1.weight"].shape)
    path = tmp_path / "copied" / "model_weights.torch"
    path.parent.mkdir()
    torch.save({"trunk_state_dict": state}, path)
    monkeypatch.setattr(weights.C, "FCIB_WEIGHTS_SIZE", path.stat().st_size)
    return path


def _record(server, tmp_path, md5):
    rec = tmp_path / "record.json"
    rec.write_text(json.dumps({"files": [{"key": "model_weights.torch", "size": 1, "checksum": f"md5:{md5}"}]}))
    server.files["api/record"] = (rec, "ok")
    return f"{server.url}/api/record"


def test_weights_verify_confirms_a_hand_copied_file_once(copied_by_hand, record_server, tmp_path, capsys):
    import hashlib

    from DFM50NLib.model import published, weights

    assert not weights.provenance(copied_by_hand)["verified"]  # before: every command says "unverified"
    url = _record(record_server, tmp_path, hashlib.md5(copied_by_hand.read_bytes()).hexdigest())
    assert main(["weights", "verify", str(copied_by_hand), "--record-url", url]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"OK: {copied_by_hand} is the published FCIB v1.0.0 file") and "NOT" not in out
    assert published.read(copied_by_hand) and weights.provenance(copied_by_hand)["verified"]  # every later command
    assert main(["weights", "verify", str(copied_by_hand), "--offline"]) == 0 and record_server.requests == [
        "api/record"
    ]


def test_weights_verify_never_says_ok_for_another_file(copied_by_hand, record_server, tmp_path, capsys):
    from DFM50NLib.model import published

    url = _record(record_server, tmp_path, "0" * 32)
    assert main(["weights", "verify", str(copied_by_hand), "--record-url", url]) == 1
    out = capsys.readouterr().out
    assert re.match(r"NOT THE PUBLISHED FILE: .*its MD5 [0-9a-f]{32} differs from the 0{32} the publisher", out)
    assert "OK" not in out and published.read(copied_by_hand) is None
    assert main(["weights", "verify", str(copied_by_hand), "--record-url", "http://127.0.0.1:9/none"]) == 1
    out = capsys.readouterr().out
    assert out.startswith("UNCONFIRMED: ") and "could not be read" in out and "OK" not in out
    assert re.search(r"compare its MD5 [0-9a-f]{32} with the one listed on https://zenodo\.org/records/10528450", out)


def test_the_report_says_unverified_weights_once(tmp_path):
    from test_report import make_result

    from DFM50NLib.model.weights import provenance
    from DFM50NLib.report.writer import write_report

    r = make_result()
    r.fcib_weights = provenance(tmp_path / "nowhere.torch", "ab" * 32)["text"]
    r.warnings.append(r.fcib_weights)
    paths = write_report(r, tmp_path)
    assert paths["report_html"].read_text(encoding="utf-8").count("no publisher checksum is stored") == 1
    text = subprocess.run(["pdftotext", str(paths["report_pdf"]), "-"], capture_output=True, text=True).stdout
    assert " ".join(text.split()).count("no publisher checksum is stored") == 1
    assert "unverified (see Warnings): SHA-256" in " ".join(text.split())


# ----------------------------------------------------------------------------- row 22: the PDF report
@pytest.fixture(scope="module")
def crowded(tmp_path_factory):
    """The issue's page one: combined model p = 0.150 (cut-off 0.254) against a high DFM50N score (the
    disagreement paragraph) and four warnings besides the DEMO label."""
    from test_report import build_case

    from DFM50NLib.model.weights import provenance
    from DFM50NLib.scoring.pipeline import population_warnings

    c = build_case()
    r = c["result"]
    r.smoking, r.spiculated, r.short_axis_cm, r.short_axis_source = False, False, 1.2, "user"
    r.combined_probability, r.combined_positive = 0.150, False
    r.fcib_weights = provenance(tmp_path_factory.mktemp("w") / "w.torch", "cd" * 32)["text"]
    r.warnings += [r.fcib_weights, "The lesion touches the border of the 50 mm cube."]
    r.warnings += population_warnings(62.0, 0.9)
    r.timings = {"read": 0.3, "fcib_process_import": 9.5, "fcib_process_load": 0.4, "forward": 3.1, "total": 4.0}
    assert len(r.warnings) == 5
    return c


def test_crowded_page_one_keeps_full_size_ct_views(crowded):
    from DFM50NLib.report import pdf
    from DFM50NLib.report.writer import build_views

    views = build_views(crowded["result"], ct=crowded["ct"], prepared_mask=crowded["pm"], cube=crowded["cube"])
    fig, moved = pdf.page_one(crowded["result"], views["ct"], views["diameters"])
    heights_cm = [ax.get_position().height * pdf.A4[1] * 2.54 for ax in fig.axes if ax.images]
    full_cm = (1 - 2 * pdf.MARGIN - 0.02) / 3 * pdf.A4[0] * 2.54
    assert len(heights_cm) == 3 and moved  # the tables went to their own page ...
    assert min(heights_cm) >= pdf.MIN_VIEW_SHARE * full_cm > 3.0  # ... the views stayed large (were ~1 cm)


def test_crowded_pdf_pages_labels_and_words(crowded, tmp_path):
    from DFM50NLib.report.writer import write_report

    c = crowded
    paths = write_report(c["result"], tmp_path, ct=c["ct"], prepared_mask=c["pm"], cube=c["cube"], formats=("pdf",))
    text = subprocess.run(["pdftotext", str(paths["report_pdf"]), "-"], capture_output=True, text=True).stdout
    pages = [" ".join(p.split()) for p in text.split("\f") if p.strip()]
    assert len(pages) == 3 and "page 1 / 3" in pages[0] and "page 3 / 3" in pages[2]
    assert "The two models disagree" in pages[0] and "OUT OF POPULATION" in pages[0]
    assert "deepest point inside the lesion" in pages[1]  # the tables, whole, on page 2
    assert "Technical appendix" in pages[2]
    # timings: no part larger than its total; the FCIB process's own times are said to be outside it
    assert "fcib_process_import (in parallel, not part of the total) 9.50 s" in pages[2] or re.search(
        r"fcib_process_import \(in parallel, not part of the total\) 9\.5", pages[2]
    ), pages[2]


def test_value_label_is_never_crossed_by_the_threshold_line():
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    from DFM50NLib.report import figures as rf
    from DFM50NLib.report import pdf

    for value, threshold in ((0.150, 0.254), (0.20, 0.25), (0.05, 0.10), (0.30, 0.25), (0.90, 0.95), (0.6, 0.254)):
        fig = rf.new_figure(*pdf.A4)
        ax = fig.add_axes([0.48, 0.5, 1 - pdf.MARGIN - 0.48, 0.05])
        rf.draw_score_bar(ax, value, threshold)
        renderer = FigureCanvasAgg(fig).get_renderer()
        (label,) = [t for t in ax.texts if t.get_text() == f"{value:.3f}"]
        box = label.get_window_extent(renderer)
        line_x = ax.transData.transform((threshold, 0.5))[0]
        assert not (box.x0 - 1 <= line_x <= box.x1 + 1), (value, threshold, box, line_x)


def test_not_reported_names_only_what_is_missing():
    from test_report import make_result

    from DFM50NLib.report import text as rt

    r = make_result()
    r.short_axis_cm = 1.1  # measured; smoking and spiculation not given
    assert rt.combined_summary(r).endswith("(needs smoking history and spiculation)")
    assert "short-axis" not in " ".join(rt.plain_summary(r))
    r.smoking = True
    assert rt.combined_summary(r).endswith("(needs spiculation)")
    r.smoking, r.short_axis_cm = None, None
    assert "needs smoking history, spiculation and the short-axis diameter" in rt.combined_summary(r)


def test_timing_rows_never_list_a_part_larger_than_the_total():
    from DFM50NLib.report.text import timing_rows

    rows = timing_rows({"read": 0.2, "fcib_process_import": 12.0, "forward": 3.0, "total": 5.0})
    assert [k for k, _ in rows] == [
        "read",
        "forward",
        "total",
        "fcib_process_import (in parallel, not part of the total)",
    ]


# ------------------------------------------------------------------------- every warning reaches every output
def test_a_warning_reaches_every_output_of_score(anonymised_dicom, tmp_path, random_weights, capsys):
    """The satellite nodule dropped from the lesion: console, JSON, CSV, HTML and PDF report, and the SR."""
    import highdicom as hd

    ct, rs = anonymised_dicom
    out, srdir = tmp_path / "out", tmp_path / "sr"
    args = ["score", "--image", ct, "--mask", rs, "--segment", "GTV-1", "--weights", random_weights, "--report"]
    assert main([str(a) for a in args] + ["--out", str(out), "--dicom-sr", str(srdir), "--case-id", "w"]) == 0
    note = "1 smaller disconnected mask component(s) were ignored; only the largest (6-connected) component was scored."
    assert capsys.readouterr().err.count(f"warning: {note}") == 1
    assert note in json.loads((out / "w.dfm50n.json").read_text())["warnings"]
    assert note in next(csv.DictReader(open(out / "w.dfm50n.csv")))["warnings"].split(" | ")
    assert note in (out / "w_report.html").read_text(encoding="utf-8")
    text = subprocess.run(["pdftotext", str(out / "w_report.pdf"), "-"], capture_output=True, text=True).stdout
    assert note in " ".join(text.split())
    sr = hd.sr.srread(str(srdir / "w.dfm50n.sr.dcm"))
    texts = [str(i.TextValue) for i in _content_items(sr.ContentSequence) if getattr(i, "ValueType", "") == "TEXT"]
    assert note in texts


def _content_items(seq):
    for item in seq:
        yield item
        yield from _content_items(getattr(item, "ContentSequence", None) or [])
