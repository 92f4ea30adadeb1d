"""Geometry: reading volumes, the lesion mask, its centre and the 50 mm cube (physical and reference modes).

Pure numpy / scipy / SimpleITK / nibabel; imports only the top-level cross-cutting modules. Never torch, never Slicer.
"""
