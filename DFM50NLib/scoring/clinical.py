"""Combined clinical + DFM50N model (METHOD.md §2.10): the published SCLC OLM calculator.

Missing clinical inputs mean the combined model is *not reported* (None): a guessed smoking
history or spiculation would silently change a probability a clinician may act on.
"""

from __future__ import annotations

import math

from DFM50NLib.constants import (
    COMBINED_COEF_DFM50N,
    COMBINED_COEF_SHORT_AXIS_CM,
    COMBINED_COEF_SMOKING,
    COMBINED_COEF_SPICULATED,
    COMBINED_INTERCEPT,
    COMBINED_THRESHOLD,
)
from DFM50NLib.errors import InputError

_YES = {"yes", "y", "1", "true", "t", "on"}
_NO = {"no", "n", "0", "false", "f", "off"}

# Short axes outside this range are almost surely in mm (or a typo), not cm: refuse, don't guess.
MAX_SHORT_AXIS_CM = 15.0


def parse_yes_no(value, name="value"):
    """'yes'/'no'/'y'/'n'/'1'/'0'/'true'/'false'/bool/None -> True/False/None; anything else: InputError."""
    if value is None:
        return None
    if hasattr(value, "item") and not isinstance(value, str):  # numpy scalars
        value = value.item()
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)):
        if value in (0, 1):
            return bool(value)
        raise InputError(f"{name} must be yes or no (1 or 0), got {value!r}.")
    text = str(value).strip().lower()
    if text in ("", "none", "unknown", "na", "n/a"):
        return None
    if text in _YES:
        return True
    if text in _NO:
        return False
    raise InputError(f"{name} must be yes or no (also accepted: y/n, 1/0, true/false), got {value!r}.")


def parse_short_axis_cm(value, name="short axis"):
    """A short-axis diameter in cm (float > 0, <= 15) or None; a clear error otherwise."""
    if value is None:
        return None
    if isinstance(value, str):
        text = value.strip().lower()
        if text in ("", "none", "unknown", "na", "n/a"):
            return None
        if text.endswith("cm"):
            text = text[:-2].strip()
        elif text.endswith("mm"):
            raise InputError(f"Give the {name} in cm (e.g. 1.8 for 18 mm), got {value!r}.")
        value = text
    try:
        cm = float(value)
    except (TypeError, ValueError):
        raise InputError(f"The {name} must be a number of centimetres, got {value!r}.") from None
    if not math.isfinite(cm) or cm <= 0:
        raise InputError(f"The {name} must be a positive number of centimetres, got {value!r}.")
    if cm > MAX_SHORT_AXIS_CM:
        raise InputError(
            f"The {name} {cm:g} cm is implausible for a cT1-2 tumour: was it given in mm? "
            "Give it in cm (e.g. 1.8 for 18 mm)."
        )
    return cm


def combined_logit(dfm50n: float, smoking: bool, spiculated: bool, short_axis_cm: float) -> float:
    return (
        COMBINED_INTERCEPT
        + COMBINED_COEF_SMOKING * float(bool(smoking))
        + COMBINED_COEF_SHORT_AXIS_CM * float(short_axis_cm)
        + COMBINED_COEF_SPICULATED * float(bool(spiculated))
        + COMBINED_COEF_DFM50N * float(dfm50n)
    )


def combined_probability(dfm50n: float, smoking: bool, spiculated: bool, short_axis_cm: float) -> float:
    """p = 1 / (1 + exp(-logit)) of METHOD.md §2.10; all four inputs are required."""
    if dfm50n is None or smoking is None or spiculated is None or short_axis_cm is None:
        raise InputError(
            "The combined model needs the DFM50N score, smoking history, spiculation and the "
            "short-axis diameter (cm); one of them is missing."
        )
    z = combined_logit(dfm50n, smoking, spiculated, short_axis_cm)
    # numerically stable logistic
    if z >= 0:
        return 1.0 / (1.0 + math.exp(-z))
    e = math.exp(z)
    return e / (1.0 + e)


def combined_positive(p: float) -> bool:
    """OLM positive by the combined model: p >= 0.254 (its own cut-off, not the DFM50N 0.25)."""
    return bool(p >= COMBINED_THRESHOLD)


def apply_clinical(result, smoking=None, spiculated=None, short_axis_cm=None, measured_short_axis_cm=None):
    """Fill the clinical fields of `result` in place and return it.

    The short axis defaults to the one measured on the segmentation (source "measured"); a user
    value wins (source "user"). Without smoking, spiculation or any short axis the combined
    probability stays None.
    """
    smoking = parse_yes_no(smoking, "Smoking history")
    spiculated = parse_yes_no(spiculated, "Spiculation")
    user_cm = parse_short_axis_cm(short_axis_cm, "short-axis diameter")
    measured_cm = None
    if measured_short_axis_cm is not None:
        measured_cm = float(measured_short_axis_cm)
        if not math.isfinite(measured_cm) or measured_cm <= 0:
            measured_cm = None
    if user_cm is not None:
        cm, source = user_cm, "user"
    elif measured_cm is not None:
        cm, source = measured_cm, "measured"
    else:
        cm, source = None, None

    result.smoking = smoking
    result.spiculated = spiculated
    result.short_axis_cm = cm
    result.short_axis_source = source
    if None in (smoking, spiculated, cm) or result.score is None or not math.isfinite(result.score):
        result.combined_probability = None
        result.combined_positive = None
    else:
        p = combined_probability(result.score, smoking, spiculated, cm)
        result.combined_probability = p
        result.combined_positive = combined_positive(p)
    return result
