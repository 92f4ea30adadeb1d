"""A NRRD header read once for everyone: its fields, its key/value pairs and its length in bytes.

Why one module: the integrity check (are the voxel bytes all there?) and the ``.seg.nrrd`` reader (which
segments, which layers?) each had their own copy of this loop.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class NrrdHeader:
    fields: dict  # "field: value" lines, names lower-cased ("sizes", "type", "data file", ...)
    keyvalues: dict  # "key:=value" lines, keys as written (Slicer's "Segment0_Name", ...)
    length: int  # bytes up to and including the blank line that ends the header


def read(path):
    """The header of the NRRD file `path`, or None when the file does not start with the NRRD magic.
    Raises OSError when the file cannot be read."""
    fields, keyvalues, length = {}, {}, 0
    with open(path, "rb") as f:
        magic = f.readline()
        length += len(magic)
        if not magic.startswith(b"NRRD"):
            return None
        for raw in f:
            length += len(raw)
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            if not line:
                break
            if line.startswith("#"):
                continue
            key, sep, value = line.partition(":=")
            if sep:
                keyvalues[key.strip()] = value.strip()
                continue
            key, sep, value = line.partition(": ")
            if sep:
                fields[key.strip().lower()] = value.strip()
    return NrrdHeader(fields, keyvalues, length)
