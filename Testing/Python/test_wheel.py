"""A non-editable install carries everything scoring needs (the bundled DEMO classifier included).

Builds the wheel from this checkout, installs it (without dependencies) into a fresh virtual environment whose
dependencies come from the test environment's site-packages, and scores the demo phantom from a folder outside
the source tree. An editable checkout hides a missing package-data entry; this does not.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    # --no-build-isolation: build with this environment's setuptools (no index needed)
    cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), str(ROOT)]
    subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=out)
    (whl,) = out.glob("dfm50n-*.whl")
    return whl


def test_wheel_holds_every_module_and_the_bundled_model(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    tracked = subprocess.run(["git", "ls-files", "DFM50NLib"], cwd=ROOT, capture_output=True, text=True).stdout.split()
    assert tracked, "git ls-files found nothing"
    missing = sorted(f for f in tracked if f not in names)
    assert missing == [], f"not in the wheel: {missing}"
    # the top-level models/ folder (the DEMO classifier) installs as DFM50NLib/models/ through a package-dir mapping
    bundled = subprocess.run(["git", "ls-files", "models"], cwd=ROOT, capture_output=True, text=True).stdout.split()
    assert "models/dfm50n_rf.forest.npz" in bundled and len(bundled) == 4, bundled
    assert sorted(f"DFM50NLib/{f}" for f in bundled if f"DFM50NLib/{f}" not in names) == []


def test_installed_wheel_scores_the_demo_outside_the_source_tree(wheel, tmp_path, random_weights):
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    python = env_dir / "bin" / "python"
    site = Path(
        subprocess.run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    )
    # the wheel itself, unpacked as pip would install it (a wheel is a zip laid out as site-packages)
    with zipfile.ZipFile(wheel) as zf:
        zf.extractall(site)
    # dependencies (numpy, torch, ...) from the test environment; added after the wheel's own folder, and a path
    # line in a .pth file does not run that folder's own .pth files, so the editable checkout stays invisible
    (site / "zz_test_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")

    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "DFM50N_FCIB_WEIGHTS")}
    probe = "import DFM50NLib.model.paths as p; print(p.__file__); print(p.bundled_model_dir())"
    where, models = subprocess.run(
        [str(python), "-c", probe], cwd=work, env=env, capture_output=True, text=True, check=True
    ).stdout.split("\n")[:2]
    assert Path(where).is_relative_to(site), f"imported {where}, not the installed wheel"
    assert Path(models) == site / "DFM50NLib" / "models", models  # the wheel's copy, not the checkout's models/

    run = subprocess.run(
        [str(python), "-m", "DFM50NLib", "demo", "--weights", str(random_weights), "--out", "out", "--no-report"],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stderr
    (result_file,) = (work / "out").glob("*.json")
    result = json.loads(result_file.read_text())
    assert result["classifier_is_demo"] is True
    assert 0.0 <= result["score"] <= 1.0
    assert result["timings"]["fcib_process_import"] > 0  # the FCIB process found the installed package too
    # the classifier the installed package found is the bundled one, inside site-packages
    assert "DEMO" in run.stdout
    from DFM50NLib.model.classifier import load_classifier

    assert result["classifier_sha256"] == load_classifier(ROOT / "models").sha256
