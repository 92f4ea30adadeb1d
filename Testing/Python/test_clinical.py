"""Combined clinical + DFM50N model against the formula written out from METHOD.md §2.10."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest

from DFM50NLib.errors import InputError
from DFM50NLib.scoring.clinical import (
    apply_clinical,
    combined_positive,
    combined_probability,
    parse_short_axis_cm,
    parse_yes_no,
)


def spec_formula(dfm50n, smoking, spiculated, short_axis_cm):
    """Typed from the METHOD.md §2.10 text, independently of constants.py."""
    logit = -1.34614 - 0.60818 * smoking + (-0.33883) * short_axis_cm - 0.19792 * spiculated + 6.22427 * dfm50n
    return 1 / (1 + math.exp(-logit))


TABLE = [
    (0.0, 0, 0, 0.5),
    (0.25, 1, 0, 1.2),
    (0.25, 0, 1, 2.0),
    (0.31, 1, 1, 1.8),
    (0.5, 0, 0, 3.1),
    (0.9, 1, 1, 0.8),
    (1.0, 1, 1, 7.0),
    (0.12, 0, 1, 2.4),
]


@pytest.mark.parametrize("dfm50n,smoking,spiculated,short", TABLE)
def test_probability_equals_spec_formula(dfm50n, smoking, spiculated, short):
    p = combined_probability(dfm50n, bool(smoking), bool(spiculated), short)
    assert p == pytest.approx(spec_formula(dfm50n, smoking, spiculated, short), rel=1e-12, abs=1e-15)
    assert combined_positive(p) == (spec_formula(dfm50n, smoking, spiculated, short) >= 0.254)


def test_known_value_by_hand():
    # logit = -1.34614 - 0.60818 - 0.33883*1.5 - 0 + 6.22427*0.4 = 0.0369...
    logit = -1.34614 - 0.60818 - 0.508245 + 2.489708
    assert combined_probability(0.4, True, False, 1.5) == pytest.approx(1 / (1 + math.exp(-logit)), abs=1e-12)


def test_threshold_is_0254_not_025():
    assert combined_positive(0.254)
    assert not combined_positive(0.2539999)
    assert not combined_positive(0.25)


def result(score=0.3):
    return SimpleNamespace(
        score=score,
        smoking="x",
        spiculated="x",
        short_axis_cm="x",
        short_axis_source="x",
        combined_probability="x",
        combined_positive="x",
    )


def test_apply_with_all_inputs_uses_measured_axis_by_default():
    r = apply_clinical(result(0.3), smoking="yes", spiculated="n", measured_short_axis_cm=1.7)
    assert (r.smoking, r.spiculated, r.short_axis_cm, r.short_axis_source) == (True, False, 1.7, "measured")
    assert r.combined_probability == pytest.approx(spec_formula(0.3, 1, 0, 1.7))
    assert r.combined_positive == (spec_formula(0.3, 1, 0, 1.7) >= 0.254)


def test_user_short_axis_wins_over_measured():
    r = apply_clinical(result(0.3), smoking="0", spiculated="1", short_axis_cm="2.2", measured_short_axis_cm=1.7)
    assert (r.short_axis_cm, r.short_axis_source) == (2.2, "user")
    assert r.combined_probability == pytest.approx(spec_formula(0.3, 0, 1, 2.2))


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(spiculated="no", short_axis_cm=1.0),  # no smoking
        dict(smoking="no", short_axis_cm=1.0),  # no spiculation
        dict(smoking="no", spiculated="no"),  # no short axis at all
        dict(),
    ],
)
def test_missing_inputs_mean_not_reported(kwargs):
    r = apply_clinical(result(0.3), **kwargs)
    assert r.combined_probability is None and r.combined_positive is None


def test_missing_short_axis_records_no_source():
    r = apply_clinical(result(0.3), smoking="no", spiculated="no")
    assert r.short_axis_cm is None and r.short_axis_source is None


@pytest.mark.parametrize(
    "text,expected",
    [
        ("yes", True),
        ("YES", True),
        ("y", True),
        ("1", True),
        ("true", True),
        (" True ", True),
        (1, True),
        (True, True),
        ("no", False),
        ("n", False),
        ("0", False),
        ("false", False),
        (0, False),
        (False, False),
        (None, None),
        ("", None),
    ],
)
def test_parse_yes_no(text, expected):
    assert parse_yes_no(text) is expected


@pytest.mark.parametrize("bad", ["maybe", "2", 2, "yess", 0.5])
def test_parse_yes_no_rejects_with_clear_message(bad):
    with pytest.raises(InputError, match="yes or no"):
        parse_yes_no(bad, "Smoking history")


@pytest.mark.parametrize("bad", ["abc", "-1", 0, "18 mm", 25, float("nan")])
def test_short_axis_rejects_nonsense(bad):
    with pytest.raises(InputError, match="cm|centimetres"):
        parse_short_axis_cm(bad)


def test_short_axis_accepts_cm_suffix():
    assert parse_short_axis_cm("1.8 cm") == 1.8


def test_bad_input_through_apply_is_input_error():
    with pytest.raises(InputError, match="Smoking"):
        apply_clinical(result(), smoking="sometimes", spiculated="no", short_axis_cm=1)


def test_with_real_result_dataclass():
    from DFM50NLib.scoring.result import Result

    r = Result(
        case_id="c",
        score=0.41,
        threshold=0.25,
        risk_label="high OLM risk",
        high_risk=True,
        classifier_is_demo=True,
        classifier_name="demo",
        classifier_sha256="a",
        fcib_weights_sha256="b",
        software_version="0",
        geometry="physical",
        orientation="LPS",
        center_method="dt_peak",
        center_ras=[0, 0, 0],
        center_lps=[0, 0, 0],
        cube_to_ras=[],
        mask_volume_mm3=1.0,
        mask_voxels=1,
        cube_mask_voxels=1,
        coverage=1.0,
        touches_border=False,
        components_dropped=0,
    )
    apply_clinical(r, smoking=True, spiculated=True, measured_short_axis_cm=1.1)
    assert r.combined_probability == pytest.approx(spec_formula(0.41, 1, 1, 1.1))
    assert '"short_axis_source": "measured"' in r.to_json()
