"""Errors a user can act on: each message says what is wrong and what to do."""


class DFM50NError(Exception):
    """Base class: anything the user can fix (bad input, missing model, ...)."""


class InputError(DFM50NError, ValueError):
    """The CT or the mask cannot be used as given."""


class WeightsError(DFM50NError):
    """The FCIB weights are missing, incomplete or not the FCIB checkpoint."""


class ModelError(DFM50NError):
    """The DFM50N classifier folder is missing, malformed or not a 9-feature, 2-class forest."""


class DFM50NWarning(UserWarning):
    """Something the user should see next to the score (e.g. lesion larger than the cube)."""
