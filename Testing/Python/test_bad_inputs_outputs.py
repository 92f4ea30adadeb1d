"""Bad-input catalogue, part two (issue 19): results that vanish and messages that mislead.

Each probe runs `python -m DFM50NLib ...` in this process (main(argv)) and asserts the exit code, the message,
that no partial output is left and that an earlier result is byte-identical afterwards. Inputs are tiny.
"""

from __future__ import annotations

import contextlib
import errno
import json
import re
import subprocess
from pathlib import Path

import pytest

from DFM50NLib import io
from DFM50NLib.cli import main
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


def test_disk_full_with_save_cubes_exits_2_and_keeps_the_earlier_result(
    cases, tmp_path, random_weights, capsys, monkeypatch
):
    with tiny_disk(tmp_path / "disk", 0) as disk:
        if disk is None:  # not root here: ITK's behaviour on a full disk, simulated
            disk = tmp_path / "disk"
            _truncating_itk_writer(monkeypatch)
            assert score(cases["p001"], disk, random_weights, "--save-cubes") == 2
            return
        out = disk / "out"
        assert score(cases["p001"], out, random_weights) == 0  # JSON + CSV only
        earlier = snapshot(out)
        _fill(disk, 12)  # room for the JSON and CSV, not for two cubes
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
