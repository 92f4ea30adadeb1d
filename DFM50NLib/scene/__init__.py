"""Scene: everything that touches Slicer's MRML scene (Logic, node adapters, scores table, dependency installer).

The only package that may import `slicer` or `vtk`; never Qt, so it runs inside Slicer and under slicer-core.
"""
