"""Cohort scoring end to end: real pipeline, random-weight FCIB, bundled demo forest.

One synthetic cohort of 30 cases, 3 of them broken (missing file, empty mask, NaN CT), scored in this
process, through the CLI killed with SIGKILL and resumed, and on a Dask cluster that loses a worker.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from DFM50NLib.batch.cohort import score_cohort
from DFM50NLib.cli import main
from DFM50NLib.errors import InputError

ROOT = Path(__file__).resolve().parents[2]
N_CASES = 30
BROKEN = {"p3": "not found", "p14": "empty", "p25": "NaN"}  # missing mask file, empty mask, NaN in the CT
ALL = [f"p{n}" for n in range(N_CASES)]
GOOD = [c for c in ALL if c not in BROKEN]
COMPARED = (
    "score",
    "risk_label",
    "center_ras",
    "coverage",
    "mask_voxels",
    "cube_mask_voxels",
    "features",
    "combined_probability",
    "orientation",
    "geometry",
    "fcib_weights_sha256",
    "classifier_sha256",
)


def write_case(folder: Path, name: str, seed: int, *, empty=False, nan=False):
    """80x80x40 CT (0.8 x 0.8 x 2 mm: air, lung -800 HU + noise) with one soft-tissue sphere, and its mask."""
    rng = np.random.default_rng(seed)
    shape_kji = (40, 80, 80)
    k, j, i = np.ogrid[: shape_kji[0], : shape_kji[1], : shape_kji[2]]
    c = np.array([20, 40, 40]) + rng.integers(-4, 5, 3) * np.array([1, 2, 2])
    r_mm = 5.0 + 4.0 * rng.random()
    inside = ((k - c[0]) * 2.0) ** 2 + ((j - c[1]) * 0.8) ** 2 + ((i - c[2]) * 0.8) ** 2 <= r_mm**2
    ct = (-800 + 40 * rng.standard_normal(shape_kji)).astype(np.float32 if nan else np.int16)
    ct[inside] = 30 + 20 * rng.standard_normal(int(inside.sum()))
    ct[:, :, :8] = -1000  # air beside the body and a bony strip: the image looks like a CT in HU
    ct[:, :4, 8:] = 700
    mask = np.zeros(shape_kji, np.uint8) if empty else inside.astype(np.uint8)
    if nan:
        ct[c[0], c[1], c[2]] = np.nan
    paths = []
    for arr, suffix in ((ct, ".nrrd"), (mask, "_mask.nii.gz")):
        img = sitk.GetImageFromArray(arr)
        img.SetSpacing((0.8, 0.8, 2.0))
        img.SetOrigin((-32.0, -32.0, -40.0))
        sitk.WriteImage(img, str(folder / f"{name}{suffix}"), True)
        paths.append(folder / f"{name}{suffix}")
    return paths


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    d = tmp_path_factory.mktemp("cohort")
    rows = ["case_id,image,mask,smoking,spiculated,os_months"]
    for n in range(N_CASES):
        name = f"p{n}"
        write_case(d, name, seed=n, empty=name == "p14", nan=name == "p25")
        mask = "missing_mask.nii.gz" if name == "p3" else f"{name}_mask.nii.gz"
        clinical = "yes,no" if n == 1 else ","
        rows.append(f"{name},{name}.nrrd,{mask},{clinical},{10 + n}")
    (d / "cases.csv").write_text("\n".join(rows) + "\n")
    return d


def _csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _check_outputs(out: Path):
    """N-k results in manifest order, k errors with their specific messages, nothing twice."""
    rows = _csv(out / "results.csv")
    assert [r["case_id"] for r in rows] == GOOD
    assert [r["os_months"] for r in rows] == [str(10 + int(c[1:])) for c in GOOD]
    errors = {r["case_id"]: r for r in _csv(out / "errors.csv")}
    assert set(errors) == set(BROKEN)
    for cid, words in BROKEN.items():
        assert words.lower() in errors[cid]["message"].lower(), errors[cid]
        assert errors[cid]["error_type"] == "InputError"
        assert (out / "errors" / f"{cid}.json").exists()
    assert sorted(p.name for p in (out / "cases").iterdir()) == sorted(f"{c}.json" for c in GOOD)
    return rows


def _results(out: Path) -> dict:
    return {c: json.loads((out / "cases" / f"{c}.json").read_text()) for c in GOOD}


@pytest.fixture(scope="module")
def local_run(cohort, random_weights, tmp_path_factory):
    out = tmp_path_factory.mktemp("local") / "out"
    calls = []
    summary = score_cohort(
        cohort / "cases.csv",
        out,
        weights=random_weights,
        batch_size=1,
        progress=lambda done, total, cid: calls.append((done, total, cid)),
    )
    return out, summary, calls


def test_local_run_results_errors_and_equality_with_score_case(local_run, cohort, random_weights):
    from DFM50NLib.scoring.pipeline import score_case

    out, summary, calls = local_run
    assert (summary.n_total, summary.n_done, summary.n_skipped, summary.n_failed) == (
        N_CASES,
        len(GOOD),
        0,
        len(BROKEN),
    )
    assert sorted(summary.failed) == sorted(BROKEN)
    assert sorted(c for _, _, c in calls) == sorted(ALL)  # each case once
    assert [d for d, _, _ in calls] == list(range(1, N_CASES + 1))
    assert {t for _, t, _ in calls} == {N_CASES}
    _check_outputs(out)
    results = _results(out)
    assert results["p1"]["smoking"] is True and results["p1"]["combined_probability"] is not None
    for cid in GOOD:
        clinical = {"smoking": True, "spiculated": False} if cid == "p1" else None
        single = score_case(
            cohort / f"{cid}.nrrd",
            cohort / f"{cid}_mask.nii.gz",
            case_id=cid,
            weights=random_weights,
            clinical=clinical,
        ).to_dict()
        for key in COMPARED:
            assert results[cid][key] == single[key], (cid, key)
        assert len(results[cid]["config_hash"]) == 64


def test_rerun_skips_done_cases_retries_failed_and_follows_input_changes(local_run, cohort, random_weights):
    out, _, _ = local_run
    before = {c: (out / "cases" / f"{c}.json").read_bytes() for c in GOOD}
    summary = score_cohort(cohort / "cases.csv", out, weights=random_weights, batch_size=1)
    assert (summary.n_done, summary.n_skipped, summary.n_failed) == (0, len(GOOD), len(BROKEN))
    assert {c: (out / "cases" / f"{c}.json").read_bytes() for c in GOOD} == before
    _check_outputs(out)
    # a rewritten CT (new mtime) is scored again; nothing else is
    ct = cohort / "p2.nrrd"
    st = ct.stat()
    os.utime(ct, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    summary = score_cohort(cohort / "cases.csv", out, weights=random_weights, batch_size=1)
    assert (summary.n_done, summary.n_skipped) == (1, len(GOOD) - 1)
    after = json.loads((out / "cases" / "p2.json").read_text())
    assert after["score"] == json.loads(before["p2"])["score"]
    assert after["config_hash"] != json.loads(before["p2"])["config_hash"]
    _check_outputs(out)


def test_batched_forward_and_feature_tables(local_run, cohort, random_weights, tmp_path):
    """Batches of 4 cubes: same features up to float32 rounding of the batched convolution."""
    out_local, _, _ = local_run
    summary = score_cohort(cohort / "cases.csv", tmp_path, weights=random_weights, batch_size=4, save_features=4096)
    assert (summary.n_done, summary.n_failed) == (len(GOOD), len(BROKEN))
    ref = _results(out_local)
    f9 = {r["case_id"]: r for r in _csv(tmp_path / "features_9.csv")}
    f4096 = {r["case_id"]: r for r in _csv(tmp_path / "features_4096.csv")}
    assert list(f9) == GOOD and list(f4096) == GOOD and len(f4096["p0"]) == 4097
    for cid in GOOD:
        got = json.loads((tmp_path / "cases" / f"{cid}.json").read_text())
        assert len(got["all_features"]) == 4096
        for name, value in ref[cid]["features"].items():
            assert float(f9[cid][name]) == pytest.approx(value, rel=1e-4, abs=1e-5)
            assert float(f4096[cid][name]) == got["features"][name]
    # results holding the 4096 vectors also serve a plain re-run (the reverse re-scores: see _is_done)
    again = score_cohort(cohort / "cases.csv", tmp_path, weights=random_weights, batch_size=4)
    assert (again.n_done, again.n_skipped) == (0, len(GOOD))


def test_cli_folders_unpaired_and_exit_code(cohort, random_weights, tmp_path, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("p0.nrrd", "p0_mask.nii.gz", "p1.nrrd", "p1_mask.nii.gz", "p2.nrrd"):
        (folder / name).write_bytes((cohort / name).read_bytes())
    code = main(
        [
            "batch",
            "--images",
            str(folder),
            "--masks",
            str(folder),
            "--out",
            str(tmp_path / "o"),
            "--weights",
            str(random_weights),
            "--no-progress",
        ]
    )
    assert code == 1  # something needs the user's attention
    assert [r["case_id"] for r in _csv(tmp_path / "o" / "results.csv")] == ["p0", "p1"]
    (err,) = _csv(tmp_path / "o" / "errors.csv")
    assert err["case_id"] == "p2" and "unpaired image" in err["message"]
    assert "2 scored" in capsys.readouterr().out


def _finished_case_files(out):
    """Per-case results that were renamed into place; the hidden ``.x.part.json`` temporaries are not results."""
    cases = out / "cases"
    return [p for p in cases.glob("*.json") if not p.name.startswith(".")] if cases.is_dir() else []


def test_kill9_mid_run_then_resume_loses_nothing_and_duplicates_nothing(cohort, random_weights, tmp_path):
    out = tmp_path / "out"
    cmd = [
        sys.executable,
        "-m",
        "DFM50NLib",
        "batch",
        "--manifest",
        str(cohort / "cases.csv"),
        "--out",
        str(out),
        "--weights",
        str(random_weights),
        "--batch-size",
        "1",
        "--no-progress",
    ]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 120
        while time.time() < deadline and proc.poll() is None:
            if _finished_case_files(out):
                break
            time.sleep(0.05)
        assert proc.poll() is None, proc.communicate()
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    first = {p.name: p.read_bytes() for p in _finished_case_files(out)}
    assert 1 <= len(first) < len(GOOD)
    summary = score_cohort(cohort / "cases.csv", out, weights=random_weights, batch_size=1)
    assert summary.n_skipped == len(first) and summary.n_done == len(GOOD) - len(first)
    assert {n: (out / "cases" / n).read_bytes() for n in first} == first  # untouched
    _check_outputs(out)
    assert not [p for p in out.rglob(".*") if ".part" in p.name]


def test_dask_cluster_losing_a_worker_scores_every_case_once(cohort, random_weights, local_run, tmp_path):
    from distributed import Client, LocalCluster

    out_local = local_run[0]
    with (
        LocalCluster(
            n_workers=2,
            processes=True,
            threads_per_worker=1,
            host="127.0.0.1",
            dashboard_address=None,
            memory_limit="4GiB",
        ) as cluster,
        Client(cluster) as client,
    ):
        client.run(lambda: __import__("torch").set_num_threads(1))
        pids = client.run(os.getpid)
        seen, killed = [], {}

        def progress(done, total, cid):
            seen.append(cid)
            if not killed:  # after the first result: kill a worker that holds a task in flight
                busy = {w: keys for w, keys in client.processing().items() if keys}
                if busy:
                    victim = sorted(busy)[0]
                    killed.update(pid=pids[victim], keys=list(busy[victim]))
                    os.kill(pids[victim], signal.SIGKILL)

        summary = score_cohort(
            cohort / "cases.csv",
            tmp_path,
            weights=random_weights,
            batch_size=1,
            scheduler=cluster.scheduler_address,
            progress=progress,
        )
    import psutil

    assert killed["keys"] and not psutil.pid_exists(killed["pid"])  # it died with work in flight
    assert sorted(seen) == sorted(ALL)  # every case exactly once
    assert (summary.n_done, summary.n_failed) == (len(GOOD), len(BROKEN))
    _check_outputs(tmp_path)
    local, dask = _results(out_local), _results(tmp_path)
    for cid in GOOD:
        for key in COMPARED + ("config_hash",):
            if key == "features":
                assert dask[cid][key] == pytest.approx(local[cid][key], rel=1e-4, abs=1e-5)
            elif key != "score":
                assert dask[cid][key] == local[cid][key], (cid, key)


def test_reader_processes_write_results_bit_identical_to_the_per_case_path(cohort, random_weights, local_run, tmp_path):
    """Two reader processes prepare the cubes, this process forwards them: the very same bits as the in-process
    run (one case per forward = score_case, checked above), and with batches of 2 as the in-process run with
    batches of 2 (a short last batch is padded, so a case's features never depend on its batch mates)."""
    ids = ("p0", "p2", "p4", "p3")  # p3: its mask file is missing, an error from a reader process
    cases = [{"case_id": c, "image": cohort / f"{c}.nrrd", "mask": cohort / f"{c}_mask.nii.gz"} for c in ids]
    cases[3]["mask"] = cohort / "missing_mask.nii.gz"
    summary = score_cohort(cases, tmp_path / "pool1", weights=random_weights, batch_size=1, workers=2)
    assert (summary.n_done, summary.n_failed) == (3, 1)
    assert "not found" in json.loads((tmp_path / "pool1" / "errors" / "p3.json").read_text())["message"]
    local = _results(local_run[0])
    for cid in ("p0", "p2", "p4"):
        got = json.loads((tmp_path / "pool1" / "cases" / f"{cid}.json").read_text())
        for key in COMPARED + ("config_hash", "device"):
            assert got[key] == local[cid][key], (cid, key)  # exact: score and features to the last bit
    # the device a score was computed on is in every output: JSON (above), results.csv, the report's provenance
    from DFM50NLib.report.text import sections
    from DFM50NLib.scoring.result import Result

    assert {r["case_id"]: r["device"] for r in _csv(tmp_path / "pool1" / "results.csv")} == dict.fromkeys(
        ids[:3], "cpu"
    )
    rows = [row for _, rows in sections(Result.from_dict(got)) for row in rows]
    assert ("Device", "cpu") in rows
    in_process = score_cohort(cases[:3], tmp_path / "in2", weights=random_weights, batch_size=2, workers=1)
    pooled = score_cohort(cases[:3], tmp_path / "pool2", weights=random_weights, batch_size=2, workers=2)
    assert in_process.n_done == pooled.n_done == 3
    for cid in ("p0", "p2", "p4"):
        a, b = (json.loads((tmp_path / d / "cases" / f"{cid}.json").read_text()) for d in ("in2", "pool2"))
        assert (a["score"], a["features"]) == (b["score"], b["features"]), cid


def test_parquet_feature_tables_hold_the_results_values(cohort, random_weights, tmp_path):
    """features_*.parquet (typed, atomic) equal the per-case results; a csv re-run writes the same numbers."""
    import pyarrow.parquet as pq

    cases = [
        {"case_id": c, "image": cohort / f"{c}.nrrd", "mask": cohort / f"{c}_mask.nii.gz"} for c in ("p1", "p0")
    ]  # manifest order, not alphabetical
    summary = score_cohort(
        cases, tmp_path, weights=random_weights, batch_size=2, save_features=4096, features_format="parquet"
    )
    assert (summary.n_done, summary.n_failed) == (2, 0)
    assert summary.paths["features_9_parquet"] == tmp_path / "features_9.parquet"
    assert not (tmp_path / "features_9.csv").exists()
    t9 = pq.read_table(tmp_path / "features_9.parquet")
    t4096 = pq.read_table(tmp_path / "features_4096.parquet")
    assert t9.column_names[0] == "case_id" and t9.num_columns == 10 and t4096.num_columns == 4097
    assert str(t9.schema.field("pred_1105").type) == "double" and str(t4096.schema.field("pred_7").type) == "float"
    assert t9.column("case_id").to_pylist() == ["p1", "p0"] == t4096.column("case_id").to_pylist()
    for n, cid in enumerate(("p1", "p0")):
        res = json.loads((tmp_path / "cases" / f"{cid}.json").read_text())
        assert {k: t9.column(k)[n].as_py() for k in res["features"]} == res["features"]  # exact
        vec = [t4096.column(f"pred_{i}")[n].as_py() for i in range(4096)]
        assert vec == res["all_features"]  # float32 storage loses nothing: the encoder computes in float32
    again = score_cohort(cases, tmp_path, weights=random_weights, save_features=9)  # csv, nothing re-scored
    assert (again.n_done, again.n_skipped) == (0, 2)
    rows = _csv(tmp_path / "features_9.csv")
    assert [float(rows[0][k]) for k in t9.column_names[1:]] == [t9.column(k)[0].as_py() for k in t9.column_names[1:]]
    assert not [p for p in tmp_path.rglob(".*") if ".part" in p.name]


def test_feature_format_refusals(cohort, tmp_path, monkeypatch):
    for kwargs, words in (
        ({"features_format": "xlsx", "save_features": 9}, "csv, parquet"),
        ({"features_format": "parquet"}, "--save-features 9"),
    ):
        with pytest.raises(InputError, match=words):
            score_cohort(cohort / "cases.csv", tmp_path, **kwargs)
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # as if not installed
    with pytest.raises(InputError, match="pip install pyarrow"):
        score_cohort(cohort / "cases.csv", tmp_path, features_format="parquet", save_features=9)
    assert not (tmp_path / "cases").exists()  # refused before any work


def test_a_short_batch_is_padded_so_a_cases_features_never_depend_on_its_batch_mates(random_weights):
    """A last batch of 1 forwarded as a batch of 2 (padded) gives the bits that case gets beside any other cube."""
    from DFM50NLib.batch.engine import _forward
    from DFM50NLib.scoring.pipeline import load_encoder

    encoder = load_encoder(random_weights)
    cubes = np.random.default_rng(3).normal(-400.0, 350.0, size=(3, 50, 50, 50)).astype(np.float32)
    alone = _forward(encoder, cubes[:1], 2)
    assert alone.shape == (1, 4096)
    assert np.array_equal(alone[0], _forward(encoder, cubes[[0, 2]], 2)[0])
    assert np.array_equal(alone[0], _forward(encoder, cubes[[1, 0]], 2)[1])
