"""CRC-32 of every record of a zip-format checkpoint: torch.load does not check them, this does (~1 s / 738 MB).

A resumed download with a few KB of garbage inside tensor data still has the right size, the right zip
directory and loadable tensors; only the per-record CRC-32 stored in the zip says the bytes are wrong.
The verdict is cached per file (size, mtime, inode) in this process and in the weights cache, so a file is
read for this once, not at every start.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import threading
import zipfile
import zlib
from pathlib import Path

from DFM50NLib.errors import WeightsError

_CHUNK = 1 << 22
_lock = threading.Lock()
_checked: set = set()  # (path, size, mtime_ns, inode) found intact in this process


def file_key(path, st=None) -> tuple:
    st = st or Path(path).stat()
    return (str(Path(path).resolve()), st.st_size, st.st_mtime_ns, st.st_ino)


def check_zip_crcs(path) -> int:
    """Read every record and compare its CRC-32 with the one stored in the zip; returns the record count.

    WeightsError naming the first bad record. A file that is not a zip is left to the structure check.
    """
    path = Path(path)
    try:
        zf = zipfile.ZipFile(path)
    except zipfile.BadZipFile:
        return 0  # not a zip (legacy format or not a checkpoint): the strict loader says what it is
    n = 0
    with zf:
        for info in zf.infolist():
            crc = 0
            try:
                with zf.open(info) as f:
                    while block := f.read(_CHUNK):
                        crc = zlib.crc32(block, crc)
            except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as exc:
                raise WeightsError(
                    f"{path}: corrupt content: zip record {info.filename!r} ({info.file_size:,} bytes) fails its "
                    f"CRC-32 check ({exc}). Some bytes of the file are wrong (a damaged or spliced download): delete "
                    "it and download again (python -m DFM50NLib weights download --force)."
                ) from None
            n += 1
    return n


def _verdict_path(key) -> Path:
    from DFM50NLib.model.paths import cache_dir

    name = hashlib.sha256(json.dumps(key).encode()).hexdigest()[:32]
    return cache_dir() / "zipcrc" / f"{name}.json"


def check_zip_crcs_cached(path, st=None) -> None:
    """check_zip_crcs once per (path, size, mtime, inode): remembered in the process and in the cache folder."""
    key = file_key(path, st)
    with _lock:
        if key in _checked:
            return
    vp = _verdict_path(key)
    with contextlib.suppress(OSError, ValueError):
        if json.loads(vp.read_text(encoding="utf-8")).get("key") == list(key):
            with _lock:
                _checked.add(key)
            return
    n = check_zip_crcs(path)
    with _lock:
        _checked.add(key)
    from DFM50NLib.atomic import write_text

    with contextlib.suppress(OSError):
        write_text(vp, json.dumps({"key": list(key), "records": n, "crc_ok": True}) + "\n")


def forget() -> None:
    """Drop the in-process verdicts (tests)."""
    with _lock:
        _checked.clear()
