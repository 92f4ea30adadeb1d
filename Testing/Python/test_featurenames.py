"""Every upstream spelling of an FCIB feature maps to the same index; anything else is a clear error."""

import pytest

from DFM50NLib.constants import DFM50N_FEATURE_INDICES, DFM50N_FEATURE_NAMES
from DFM50NLib.errors import ModelError
from DFM50NLib.model.featurenames import canonical_name, column_map, feature_index


@pytest.mark.parametrize(
    "name",
    ["pred_1105", "FCIB50N_F1105", "pred_F1105", "PRED_1105", "fcib50n_f1105", "pred_f1105", " pred_1105 ", 1105],
)
def test_spellings_map_to_1105(name):
    assert feature_index(name) == 1105
    assert canonical_name(name) == "pred_1105"


def test_range_ends():
    assert feature_index("pred_0") == 0 and feature_index("FCIB50N_F4095") == 4095


@pytest.mark.parametrize(
    "name",
    [
        "pred_4096",
        "pred_-1",
        "pred_",
        "1105",
        "embedding_1105",
        "pred_1105x",
        "pred_01105",
        "FCIB50N_1105",
        "pred 1105",
        "",
        -1,
        4096,
        True,
        None,
    ],
)
def test_bad_names_refused(name):
    with pytest.raises(ModelError, match="FCIB"):
        feature_index(name)


def test_dfm50n_names_round_trip():
    assert tuple(feature_index(n) for n in DFM50N_FEATURE_NAMES) == DFM50N_FEATURE_INDICES
    assert [canonical_name(f"FCIB50N_F{i}") for i in DFM50N_FEATURE_INDICES] == list(DFM50N_FEATURE_NAMES)


def test_column_map():
    assert column_map(["case_id", "pred_F93", "olm", "FCIB50N_F1105"]) == {93: 1, 1105: 3}
    with pytest.raises(ModelError, match="both name FCIB feature 93"):
        column_map(["pred_93", "FCIB50N_F93"])
