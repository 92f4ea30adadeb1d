"""FCIB feature names: every upstream spelling of feature 1105 means index 1105 of the 4096-vector.

Upstream files write the same feature as ``pred_1105``, ``FCIB50N_F1105`` or ``pred_F1105`` (METHOD.md §2.8).
Prefixes are matched case-insensitively (CSV headers get re-cased by spreadsheets); the number must be
plain decimal without leading zeros so that a typo is an error rather than a silently different feature.
"""

from __future__ import annotations

import numbers
import re

from DFM50NLib.constants import N_FCIB_FEATURES
from DFM50NLib.errors import ModelError

_NAME = re.compile(r"^(?:pred_f?|fcib50n_f)(\d+)$", re.IGNORECASE)
SPELLINGS = ("pred_<n>", "FCIB50N_F<n>", "pred_F<n>")


def feature_index(name) -> int:
    """Index 0..4095 of an FCIB feature given by any accepted spelling (or an int)."""
    if isinstance(name, bool):
        raise ModelError(f"{name!r} is not an FCIB feature name; use pred_<n> with n in 0..{N_FCIB_FEATURES - 1}.")
    if isinstance(name, numbers.Integral):
        index = int(name)
    else:
        m = _NAME.match(str(name).strip())
        digits = m.group(1) if m else None
        if digits is None or (len(digits) > 1 and digits.startswith("0")):
            raise ModelError(
                f"{name!r} is not an FCIB feature name. Accepted spellings: {', '.join(SPELLINGS)} "
                f"with n a number 0..{N_FCIB_FEATURES - 1} without leading zeros (e.g. pred_1105)."
            )
        index = int(digits)
    if not 0 <= index < N_FCIB_FEATURES:
        raise ModelError(f"FCIB feature {name!r} is out of range: FCIB has features 0..{N_FCIB_FEATURES - 1}.")
    return index


def canonical_name(name) -> str:
    """The project's spelling, ``pred_<n>``, of any accepted spelling."""
    return f"pred_{feature_index(name)}"


def is_feature_name(name) -> bool:
    """True if `name` is an FCIB feature in any accepted spelling (for picking columns out of a table)."""
    try:
        feature_index(name)
    except ModelError:
        return False
    return True


def column_map(columns) -> dict:
    """{feature index: column position} for the FCIB columns of a table header.

    Two columns naming the same feature (``pred_93`` and ``FCIB50N_F93``) are an error: which one is meant?
    """
    found, where = {}, {}
    for pos, col in enumerate(columns):
        if not is_feature_name(col):
            continue
        index = feature_index(col)
        if index in found:
            raise ModelError(
                f"Columns {where[index]!r} and {col!r} both name FCIB feature {index}; keep only one of them."
            )
        found[index], where[index] = pos, col
    return found
