"""Every number of the DFM50N method, in one place (docs/METHOD.md explains each).

Kept free of imports so that Slicer can read it at module-load time for nothing.
"""

CUBE_SIZE = 50  # samples per axis (METHOD.md §2.3)
CUBE_SPACING_MM = 1.0  # distance between samples (METHOD.md §2.3)
CUBE_CENTER_INDEX = 25  # sample index that sits exactly on the centre (METHOD.md §2.3)
OUTSIDE_HU = -1024.0  # CT value of samples outside the image: air (METHOD.md §2.4)
REFERENCE_PAD_VALUE = 0.0  # the upstream scripts pad with 0, not air (METHOD.md §3)

HU_SUBTRAHEND = -1024.0  # FCIB input x = (HU - HU_SUBTRAHEND) / HU_DIVISOR (METHOD.md §2.6)
HU_DIVISOR = 3072.0

DEFAULT_ORIENTATION = "LPS"  # array-axis order of the cube (METHOD.md §2.5)
DEFAULT_CENTER_METHOD = "dt_peak"  # upstream CLI default (METHOD.md §2.2)
CENTER_METHODS = ("dt_peak", "centroid", "point")
GEOMETRY_MODES = ("physical", "reference")  # reference = upstream scripts, bugs included (METHOD.md §3)

N_FCIB_FEATURES = 4096
# The 9 FCIB features of the DFM50N forest, in the classifier's input order (METHOD.md §2.8).
DFM50N_FEATURE_INDICES = (1105, 2550, 2857, 3792, 3248, 3580, 2165, 93, 1790)
DFM50N_FEATURE_NAMES = tuple(f"pred_{i}" for i in DFM50N_FEATURE_INDICES)

THRESHOLD = 0.25  # Youden cut-off, fixed on the training cohort (METHOD.md §1)
RISK_HIGH = "high OLM risk"
RISK_LOW = "low OLM risk"

# Published SCLC OLM calculator (logistic regression, METHOD.md §2.10).
COMBINED_INTERCEPT = -1.34614
COMBINED_COEF_SMOKING = -0.60818
COMBINED_COEF_SHORT_AXIS_CM = -0.33883
COMBINED_COEF_SPICULATED = -0.19792
COMBINED_COEF_DFM50N = 6.22427
COMBINED_THRESHOLD = 0.254
# DFM50N was developed on cT1-2 lung cancers: tumours up to 5 cm (METHOD.md §1); larger ones are out of population.
POPULATION_MAX_LONG_AXIS_MM = 50.0

# FCIB foundation model v1.0.0 (METHOD.md §2.7).
FCIB_VERSION = "1.0.0"
FCIB_WEIGHTS_URL = "https://zenodo.org/records/10528450/files/model_weights.torch?download=1"
FCIB_WEIGHTS_FILENAME = "model_weights.torch"
FCIB_WEIGHTS_SIZE = 738_451_713
FCIB_STATE_DICT_ENTRIES = 322
FCIB_PARAMETER_COUNT = 184_477_824
FCIB_WEIGHTS_ENV = "DFM50N_FCIB_WEIGHTS"  # offline: path to model_weights.torch

DISCLAIMER = "Research use only. Not a medical device; not for clinical decision making."
DEMO_LABEL = "DEMO — not the published DFM50N classifier"

# Inputs the tool must not score silently (METHOD.md §2.11).
CT_MIN_EXTENT_MM = 10.0  # a CT thinner than this along an axis leaves more than 80 % of every cube as fill
CT_MIN_VOXELS_PER_AXIS = 3  # fewer voxels along an axis cannot carry a cubic spline in that direction
CUBE_FILL_WARN_SHARE = 0.05  # warn when more than 5 % of the cube's samples lie outside the CT (-1024 fill)
LESION_MEAN_HU_WARN = -500.0  # a solid lesion is denser; a mean below this is a mask on air or lung
LESION_MIN_VOLUME_MM3 = 65.0  # a 5 mm sphere (65.4 mm3): below the smallest nodule size measured for staging
VOXEL_SPACING_RANGE_MM = (0.01, 100.0)  # a voxel edge outside this is a broken header, not a CT
DICOM_SLICE_OFFSET_TOLERANCE_MM = 0.5  # slice position off the one regular grid ITK builds (tilt, drift)
DICOM_ORIENTATION_TOLERANCE = 1e-3  # largest difference of a direction cosine between slices of one series
NIFTI_QFORM_SFORM_TOLERANCE_MM = 1.0  # qform and sform place a corner voxel this far apart: refused
