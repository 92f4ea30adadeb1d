"""DFM50N scoring library: CT + lesion mask -> 50 mm cube -> FCIB features -> DFM50N score.

Pure Python (numpy, SimpleITK, torch); knows nothing of Slicer. Heavy packages are imported
lazily inside the functions that need them, so importing this package is cheap.
"""

__version__ = "0.1.0"
