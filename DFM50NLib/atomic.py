"""Write files so that a reader sees the old file or the whole new one, never half of one.

`transaction()` extends that to the several files of one run (JSON, CSV, cubes, report, SR): every atomic write
inside it goes to a temporary that is read back (`verify_written`) and the temporaries replace their targets
only when all of them were written; on any error the earlier files stay as they were.
"""

from __future__ import annotations

import contextlib
import contextvars
import errno
import os
import tempfile
from pathlib import Path

_PENDING: contextvars.ContextVar = contextvars.ContextVar("dfm50n_atomic_transaction", default=None)
_DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


@contextlib.contextmanager
def atomic_path(path, suffix=None):
    """Yield a temporary path beside `path`; on success it replaces `path` in one rename.

    The temporary keeps `path`'s suffix(es) (e.g. ``.nii.gz``) so writers that pick a format
    from the file name still work. On error the temporary is removed and `path` is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = suffix if suffix is not None else "".join(path.suffixes)
    head = path.name.split(".")[0].encode("utf-8")[:60].decode("utf-8", "ignore")  # the temp name stays short
    fd, tmp = tempfile.mkstemp(prefix=f".{head}.", suffix=f".part{suffix[-40:]}", dir=path.parent)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the user's usual mode
    pending = _PENDING.get()
    try:
        yield Path(tmp)
        verify_written(tmp, path)
        if pending is None:
            os.replace(tmp, path)
        else:  # the transaction renames it when every file of the run is written
            earlier = pending.pop(path, None)
            if earlier is not None:
                _unlink(earlier)
            pending[path] = tmp
    except BaseException as exc:
        _unlink(tmp)
        if isinstance(exc, OSError) and exc.errno in _DISK_FULL:
            raise OSError(exc.errno, _disk_full_text(exc, path), str(path)) from None
        raise


@contextlib.contextmanager
def transaction():
    """All `atomic_path` writes inside (this thread, nested calls included) become one all-or-nothing write.

    Each file goes to a verified temporary beside its target; at the end they replace their targets one rename
    each. On error, or when a write cannot be read back (ITK's writer does not raise on a full disk), every
    temporary is removed and the earlier files are untouched. Nested transactions join the outer one.
    """
    if _PENDING.get() is not None:
        yield
        return
    pending: dict = {}
    token = _PENDING.set(pending)
    try:
        yield
    except BaseException:
        for tmp in pending.values():
            _unlink(tmp)
        raise
    finally:
        _PENDING.reset(token)
    try:
        for path, tmp in pending.items():
            os.replace(tmp, path)
    finally:
        for tmp in pending.values():
            _unlink(tmp)  # only those a failed rename left behind


def verify_written(tmp, path) -> None:
    """Read a written file back as what its name says (image, JSON, PDF, DICOM); OSError if it does not read.

    A writer that swallows ENOSPC (ITK) leaves an empty or truncated file: caught here before any rename.
    """
    name = str(path).lower()
    try:
        if name.endswith((".nii.gz", ".nii", ".nrrd", ".mha")):
            import SimpleITK as sitk

            sitk.ReadImage(str(tmp))
        elif name.endswith(".json"):
            import json

            with open(tmp, encoding="utf-8") as f:
                json.load(f)
        elif name.endswith(".pdf"):
            with open(tmp, "rb") as f:
                head = f.read(5)
                f.seek(max(0, os.path.getsize(tmp) - 1024))
                if head != b"%PDF-" or b"%%EOF" not in f.read():
                    raise ValueError("not a complete PDF")
        elif name.endswith(".dcm"):
            import pydicom

            pydicom.dcmread(str(tmp))
        elif name.endswith((".csv", ".html")) and os.path.getsize(tmp) == 0:
            raise ValueError("empty file")
    except Exception as exc:
        detail = (str(exc).strip().splitlines() or [""])[-1]  # ITK's last line says what failed
        raise OSError(
            errno.EIO,
            f"the file just written does not read back ({type(exc).__name__}: {detail}); "
            "is the disk full? Nothing was replaced: the earlier files are as they were",
            str(path),
        ) from None


def _disk_full_text(exc, path) -> str:
    return (
        f"{exc.strerror or 'No space left on device'} while writing {Path(path).name}; nothing was replaced "
        f"(the earlier files in {Path(path).parent} are as they were): free some space and run again"
    )


def _unlink(path) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


MAX_STEM_BYTES = 120  # file systems allow 255 bytes per name; room for suffixes and temporaries


def safe_stem(name) -> str:
    """A case id as a file name: no path separators, nothing hidden, never empty, never too long.

    An id whose name would exceed MAX_STEM_BYTES (UTF-8) keeps its first ~100 bytes plus ``~`` and 16 hex of
    its SHA-256: distinct ids stay distinct, and the full id is inside the file (results carry case_id).
    """
    import hashlib

    stem = "".join(c if c.isalnum() or c in "-_." else "_" for c in str(name)).lstrip(".") or "case"
    if len(stem.encode("utf-8")) > MAX_STEM_BYTES:
        head = stem.encode("utf-8")[: MAX_STEM_BYTES - 20].decode("utf-8", "ignore")
        stem = f"{head}~{hashlib.sha256(str(name).encode('utf-8')).hexdigest()[:16]}"
    return stem


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_text(path, text: str, encoding="utf-8") -> Path:
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding=encoding, newline="") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
    return Path(path)


def write_bytes(path, data: bytes) -> Path:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    return Path(path)
