"""The tree passes ruff (lint and format, configured in pyproject.toml), so `.ci/run` fails on a finding.

The same checks run before each commit with `pre-commit install` (.pre-commit-config.yaml).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("command", [["check"], ["format", "--check"]], ids=["lint", "format"])
def test_ruff(command):
    run = subprocess.run([sys.executable, "-m", "ruff", *command, "."], cwd=ROOT, capture_output=True, text=True)
    assert run.returncode == 0, f"ruff {' '.join(command)} found:\n{run.stdout}{run.stderr}"
