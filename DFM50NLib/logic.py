"""Compatibility entry point: `from DFM50NLib.logic import DFM50NLogic` (the README's Slicer console example).

The Logic lives in `DFM50NLib.scene.logic` (it imports `slicer`); this module only re-exports it.
"""

from DFM50NLib.scene.logic import DFM50NLogic

__all__ = ["DFM50NLogic"]
