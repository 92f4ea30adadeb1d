"""Orientation codes: validation and the RAS direction of each cube axis."""

from __future__ import annotations

import numpy as np
import pytest

from DFM50NLib.errors import InputError
from DFM50NLib.geometry.orientation import axis_matrix, canonical_order, normalise_code


def test_lps_rows_are_the_ras_directions_of_the_axes():
    np.testing.assert_array_equal(axis_matrix("LPS"), [[-1, 0, 0], [0, -1, 0], [0, 0, 1]])
    np.testing.assert_array_equal(axis_matrix("ras"), np.eye(3))
    np.testing.assert_array_equal(axis_matrix("SPL"), [[0, 0, 1], [0, -1, 0], [-1, 0, 0]])
    np.testing.assert_array_equal(axis_matrix("IAR"), [[0, 0, -1], [0, 1, 0], [1, 0, 0]])


def test_every_valid_code_is_a_signed_permutation():
    import itertools

    codes = ["".join(p) for letters in itertools.product("LR", "PA", "SI") for p in itertools.permutations(letters)]
    assert len(set(codes)) == 48
    for code in codes:
        m = axis_matrix(code.lower())
        assert normalise_code(code.lower()) == code
        np.testing.assert_array_equal(np.abs(m) @ np.abs(m).T, np.eye(3))
        perm = canonical_order(code)
        assert [int(np.flatnonzero(m[perm[w]])[0]) for w in range(3)] == [0, 1, 2]


@pytest.mark.parametrize("bad", ["LLS", "XYZ", "LP", "LPSA", "", None, "L P", "RLS"])
def test_bad_codes_are_refused_with_a_clear_message(bad):
    with pytest.raises(InputError, match="one of L/R, one of P/A and one of S/I"):
        normalise_code(bad)
