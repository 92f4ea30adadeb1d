"""The command line as a user types it: exit codes, files written, messages that say what to do."""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import numpy as np
import pytest

from DFM50NLib import io
from DFM50NLib.cli import build_parser, main
from DFM50NLib.geometry.synthetic import sphere_case


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    ct, mask = sphere_case(
        center_ras=(0.0, 0.0, 0.0), radius_mm=7.0, shape=(80, 80, 30), spacing=(0.8, 0.8, 2.0), seed=3
    )
    return io.write_volume(ct, d / "ct.nii.gz"), io.write_volume(mask, d / "mask.nrrd")


def test_help_texts_exist_for_every_command(capsys):
    parser = build_parser()
    for command in ("score", "features", "demo", "weights", "batch", "import-model", "train"):
        with pytest.raises(SystemExit) as exc:
            parser.parse_args([command, "--help"])
        assert exc.value.code == 0
        assert len(capsys.readouterr().out) > 200, command


def test_score_writes_json_and_csv(files, tmp_path, random_weights, capsys):
    ct, mask = files
    out = tmp_path / "out"
    code = main(
        [
            "score",
            "--image",
            str(ct),
            "--mask",
            str(mask),
            "--weights",
            str(random_weights),
            "--out",
            str(out),
            "--case-id",
            "p1",
            "--smoking",
            "no",
            "--spiculated",
            "yes",
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    data = json.loads((out / "p1.dfm50n.json").read_text())
    assert f"{data['score']:.4f}" in printed and "DEMO" in printed
    assert data["smoking"] is False and data["spiculated"] is True
    assert data["short_axis_source"] == "measured" and data["combined_probability"] is not None
    rows = list(csv.DictReader(open(out / "p1.dfm50n.csv")))
    assert len(rows) == 1 and float(rows[0]["score"]) == data["score"]


def test_features_csv_matches_the_score_features(files, tmp_path, random_weights):
    ct, mask = files
    out9, out_all = tmp_path / "f9.csv", tmp_path / "fall.csv"
    assert (
        main(
            ["features", "--image", str(ct), "--mask", str(mask), "--weights", str(random_weights), "--out", str(out9)]
        )
        == 0
    )
    assert (
        main(
            [
                "features",
                "--image",
                str(ct),
                "--mask",
                str(mask),
                "--weights",
                str(random_weights),
                "--out",
                str(out_all),
                "--all",
            ]
        )
        == 0
    )
    r9 = next(csv.DictReader(open(out9)))
    rall = next(csv.DictReader(open(out_all)))
    assert len(r9) == 1 + 9 and len(rall) == 1 + 4096
    assert all(r9[k] == rall[k] for k in r9)


def test_bad_mask_is_a_clear_error_with_exit_code_2(files, tmp_path, random_weights, capsys):
    ct, _ = files
    vol = io.read_volume(ct)
    empty = io.write_volume(vol.with_array(np.zeros(vol.shape, np.uint8)), tmp_path / "empty.nii.gz")
    out = tmp_path / "out"
    code = main(
        ["score", "--image", str(ct), "--mask", str(empty), "--weights", str(random_weights), "--out", str(out)]
    )
    assert code == 2
    assert "empty" in capsys.readouterr().err.lower()
    assert not (out / "ct.dfm50n.json").exists()


def test_missing_weights_says_the_three_ways(files, tmp_path, monkeypatch, capsys):
    ct, mask = files
    monkeypatch.delenv("DFM50N_FCIB_WEIGHTS", raising=False)
    monkeypatch.setenv("DFM50N_CACHE_DIR", str(tmp_path / "empty-cache"))
    code = main(["score", "--image", str(ct), "--mask", str(mask), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2
    assert "--weights" in err and "DFM50N_FCIB_WEIGHTS" in err and "download" in err


def test_module_runs_as_a_program(files):
    out = subprocess.run([sys.executable, "-m", "DFM50NLib", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "DFM50N" in out.stdout and "Research use only" in out.stdout


def test_demo_command_scores_the_bundled_phantom(tmp_path, random_weights, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--weights", str(random_weights), "--out", str(out), "--no-report"]) == 0
    data = json.loads((out / "demo_phantom.dfm50n.json").read_text())
    assert data["classifier_is_demo"] is True
    assert 0.0 <= data["score"] <= 1.0
    assert data["coverage"] > 0.99 and data["components_dropped"] == 0
    assert (out / "demo_phantom_ct_50cube.nii.gz").exists()
