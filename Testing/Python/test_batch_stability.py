"""Cohort jobs with the stability panel: per-case panel as score_case computes it, hashed, resumable.

Two synthetic cases (the cohort writer of test_batch), random-weight FCIB, bundled demo forest.
"""

from __future__ import annotations

import csv
import json

import pytest
from test_batch import write_case

from DFM50NLib.batch.cohort import score_cohort
from DFM50NLib.cli import main
from DFM50NLib.errors import InputError

CASES = ("s0", "s1")
STATS = ("min", "median", "max", "n_flipped", "n")


@pytest.fixture(scope="module")
def two_cases(tmp_path_factory):
    d = tmp_path_factory.mktemp("stab")
    rows = ["case_id,image,mask,outcome"]
    for n, cid in enumerate(CASES):
        write_case(d, cid, seed=20 + n)
        rows.append(f"{cid},{cid}.nrrd,{cid}_mask.nii.gz,{n}")
    (d / "cases.csv").write_text("\n".join(rows) + "\n")
    return d


def _case(out, cid):
    return json.loads((out / "cases" / f"{cid}.json").read_text())


def test_stability_is_recorded_hashed_reported_and_resumed(two_cases, random_weights, tmp_path, capsys):
    from DFM50NLib.scoring.pipeline import score_case

    manifest, out = two_cases / "cases.csv", tmp_path / "out"
    plain = score_cohort(manifest, out, weights=random_weights, batch_size=1)
    assert (plain.n_done, plain.n_failed) == (2, 0)
    before = {cid: _case(out, cid) for cid in CASES}
    assert all(d["stability"] is None for d in before.values())

    # with the panel: both cases lack it, so both are scored again (config hash differs)
    summary = score_cohort(manifest, out, weights=random_weights, batch_size=2, stability=True, report=True)
    assert (summary.n_done, summary.n_skipped, summary.n_failed) == (2, 0, 0)
    rows = {r["case_id"]: r for r in csv.DictReader(open(out / "results.csv", newline=""))}
    for cid in CASES:
        got = _case(out, cid)
        assert got["config_hash"] != before[cid]["config_hash"]
        assert got["score"] == pytest.approx(before[cid]["score"], rel=1e-4, abs=1e-6)  # same cube, same score
        single = score_case(
            two_cases / f"{cid}.nrrd",
            two_cases / f"{cid}_mask.nii.gz",
            case_id=cid,
            weights=random_weights,
            stability=True,
        )
        assert set(got["stability"]) == set(STATS) and got["stability"]["n"] == 8  # 6 centre + 2 mask moves
        for stat in STATS:
            assert got["stability"][stat] == pytest.approx(single.stability[stat], rel=1e-5, abs=1e-7), (cid, stat)
        s = got["stability"]
        assert 0.0 <= s["min"] <= s["median"] <= s["max"] <= 1.0 and s["min"] < s["max"]
        unstable = [w for w in got["warnings"] if w.startswith("Unstable near the threshold")]
        assert len(unstable) == (1 if s["n_flipped"] else 0)
        assert unstable == [w for w in single.warnings if w.startswith("Unstable")]
        assert got["timings"]["stability"] > 0
        assert float(rows[cid]["stability_median"]) == s["median"]
        assert int(rows[cid]["stability_n_flipped"]) == s["n_flipped"] and rows[cid]["outcome"] == str(CASES.index(cid))
        html = (out / "reports" / f"{cid}_report.html").read_text()
        assert "Stability panel" in html
    config = json.loads((out / "batch_config.json").read_text())
    assert config["stability"] is True

    # the same job again, through the CLI: nothing to redo
    code = main(
        [
            "batch",
            "--manifest",
            str(manifest),
            "--out",
            str(out),
            "--weights",
            str(random_weights),
            "--stability",
            "--no-progress",
        ]
    )
    assert code == 0 and "0 scored, 2 already done" in capsys.readouterr().out


def test_stability_refused_in_reference_geometry(two_cases, random_weights, tmp_path):
    with pytest.raises(InputError, match="not available with --geometry reference"):
        score_cohort(two_cases / "cases.csv", tmp_path, weights=random_weights, stability=True, geometry="reference")
    assert not (tmp_path / "cases").exists()  # refused before any work
