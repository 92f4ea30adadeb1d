"""Scoring: one case from inputs to `Result` (prepare -> forward -> finish), clinical model, stability panel.

Composes `geometry` and `model`; may import `report` lazily for report files; never Slicer.
"""
