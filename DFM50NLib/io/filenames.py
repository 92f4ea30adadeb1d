"""Image file names: which suffixes are images, and a case name without its (double) extension."""

from __future__ import annotations

from pathlib import Path

IMAGE_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")


WRITE_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".mha")  # single-file formats, so the write can be atomic


def file_stem(path, extensions=(".seg.nrrd",) + IMAGE_SUFFIXES) -> str:
    """File name without its (possibly double) image extension: ``ct01.nii.gz`` -> ``ct01``."""
    name = Path(str(path)).name
    for ext in extensions:
        if name.lower().endswith(ext):
            return name[: -len(ext)]
    return name
