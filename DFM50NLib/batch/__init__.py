"""Batch: cohort scoring from a manifest or paired folders; resumable, local process pool or Dask.

Builds on `scoring` (and `report` for per-case reports); never Slicer.
"""
