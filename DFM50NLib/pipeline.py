"""Compatibility entry point: `from DFM50NLib.pipeline import score_case` (README, user scripts).

The scoring flow lives in `DFM50NLib.scoring.pipeline`; this module only re-exports its public names.
"""

from DFM50NLib.scoring.pipeline import (
    PreparedCase,
    finish_case,
    load_encoder,
    load_models,
    prepare_case,
    score_case,
    score_volumes,
)

__all__ = ["PreparedCase", "finish_case", "load_encoder", "load_models", "prepare_case", "score_case", "score_volumes"]
