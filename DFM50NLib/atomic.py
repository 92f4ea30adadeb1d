"""Write files so that a reader sees the old file or the whole new one, never half of one."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path


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
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


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
