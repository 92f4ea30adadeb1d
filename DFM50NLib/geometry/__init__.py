"""Geometry: the `Volume` type, the lesion mask, its centre and the 50 mm cube (physical and reference modes).

Pure numpy / scipy; imports only the top-level cross-cutting modules. Files are read and written in `io/`, which
builds on this package; never the other way round. Never torch, never Slicer.
"""
