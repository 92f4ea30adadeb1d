"""conftest's CI guard: under CI a skip for something .ci/run installs fails; a GPU skip stays a skip."""

from __future__ import annotations

from pathlib import Path

pytest_plugins = ["pytester"]

CONFTEST = Path(__file__).with_name("conftest.py")

TESTS = """
import pytest

def test_missing_tool():
    pytest.skip("chromium not installed")

def test_gpu():
    pytest.skip("needs a CUDA GPU")

def test_fine():
    assert True
"""


def test_skips_fail_in_ci_except_for_a_gpu(pytester, monkeypatch):
    pytester.makeconftest(CONFTEST.read_text())
    pytester.makepyfile(TESTS)
    monkeypatch.setenv("CI", "true")
    pytester.runpytest("-p", "no:cacheprovider").assert_outcomes(passed=1, failed=1, skipped=1)


def test_skips_stay_skips_outside_ci(pytester, monkeypatch):
    pytester.makeconftest(CONFTEST.read_text())
    pytester.makepyfile(TESTS)
    monkeypatch.delenv("CI", raising=False)
    pytester.runpytest("-p", "no:cacheprovider").assert_outcomes(passed=1, skipped=2)
