"""DFM50N in the browser: a trame-slicer page (real Slicer core: MRML, segment editor, slice views) on the same
Logic and pipeline as the Slicer panel. Started by `python -m DFM50NLib web`; needs the `[web]` extra."""
