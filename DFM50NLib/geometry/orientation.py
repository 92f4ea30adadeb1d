"""Orientation codes (METHOD.md §2.5): three letters naming the patient direction of each cube array axis.

``LPS`` = axis 0 increases towards patient Left, axis 1 towards Posterior, axis 2 towards Superior.
The score depends on this choice, so codes are validated strictly and stored upper-case.
"""

from __future__ import annotations

import numpy as np

from DFM50NLib.errors import InputError

# RAS unit vector of each letter (RAS world: +x = Right, +y = Anterior, +z = Superior).
LETTER_RAS = {
    "R": (1.0, 0.0, 0.0),
    "L": (-1.0, 0.0, 0.0),
    "A": (0.0, 1.0, 0.0),
    "P": (0.0, -1.0, 0.0),
    "S": (0.0, 0.0, 1.0),
    "I": (0.0, 0.0, -1.0),
}
_PAIRS = ("LR", "PA", "SI")  # one letter of each pair, in any order


def normalise_code(code) -> str:
    """Validate a code such as ``lps`` or ``SPL`` and return it upper-case; InputError otherwise."""
    text = str(code).strip().upper() if code is not None else ""
    used = [pair for letter in text for pair in _PAIRS if letter in pair]
    if len(text) != 3 or any(c not in LETTER_RAS for c in text) or sorted(used) != sorted(_PAIRS):
        raise InputError(
            f"Invalid orientation code {code!r}: give three letters, one of L/R, one of P/A and one of S/I "
            "in any order (e.g. LPS, the default; LAS for dcm2niix-style files; SPL for FCIB's z,y,x order)."
        )
    return text


def axis_matrix(code) -> np.ndarray:
    """3x3 matrix whose row n is the RAS unit vector along which cube array axis n increases."""
    return np.array([LETTER_RAS[c] for c in normalise_code(code)], dtype=float)


def canonical_order(code) -> tuple:
    """Permutation p such that the code's axes p[0], p[1], p[2] point along RAS x, y, z (either sign).

    Sampling in this canonical order and transposing afterwards makes codes that differ only by a
    permutation (LPS vs SPL) give bit-identical, transposed cubes.
    """
    m = axis_matrix(code)
    return tuple(int(np.flatnonzero(m[:, world])[0]) for world in range(3))
