"""Find, download and verify the FCIB weights (model_weights.torch, 738 MB, Zenodo record 10528450).

Where they are looked for, in order: an explicit path (--weights), $DFM50N_FCIB_WEIGHTS, the Slicer
module's setting, the per-user cache (platformdirs.user_cache_dir("DFM50N")/fcib, or $DFM50N_CACHE_DIR/fcib),
which only `download` fills. Nothing touches the network unless a download is asked for.

Integrity (METHOD.md §5): a download is written to `<name>.part` (resumable with an HTTP Range request), its size
checked, its structure strictly checked (fcib.load_trunk_state), then renamed into place in one step: an
interrupted download never leaves a file that passes as the weights. Its SHA-256 is then stored in a small
record (`sha256/<hash of path>.json` in the cache, keyed by path, size and mtime).

Trade-off, documented: hashing 738 MB takes ~0.5-2 s. Every encoder build (once per process per file)
hashes the file in a background thread while the model loads and the first cubes run; the score reads
the hash when it is written (Result.fcib_weights_sha256) and fails if the file no longer matches the hash
recorded for the same (path, size, mtime). A file with a new size or mtime is a new file: its hash becomes
the record. `python -m DFM50NLib weights verify` does the full check on demand.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sys
import time
from pathlib import Path

from DFM50NLib import constants as C
from DFM50NLib.errors import WeightsError
from DFM50NLib.model.checkpoint import load_trunk_state
from DFM50NLib.model.paths import (  # noqa: F401  (re-exported: weights.cache_dir, ...)
    CACHE_ENV,
    DOWNLOAD_COMMAND,
    cache_dir,
    cached_weights_path,
    how_to_provide,
)

SETTING_NAME = "DFM50N/FCIBWeightsPath"  # the Slicer module's QSettings key (for messages)


# ----------------------------------------------------------------------------------------------------------------
# places


def weight_locations(path=None, settings_path=None) -> list:
    """[(source, Path or None)] in the order resolve_weights looks; for `weights status`."""
    env = os.environ.get(C.FCIB_WEIGHTS_ENV) or None
    return [
        ("--weights", Path(path).expanduser() if path else None),
        (f"${C.FCIB_WEIGHTS_ENV}", Path(env).expanduser() if env else None),
        ("Slicer setting", Path(settings_path).expanduser() if settings_path else None),
        ("cache", cached_weights_path()),
    ]


def resolve_weights(path=None, *, download=False, progress=None, settings_path=None) -> Path:
    """The weights file to use: explicit path, $DFM50N_FCIB_WEIGHTS, `settings_path`, the cached download.

    A place that is given but holds no file is an error (no silent fall-through to another file).
    With download=True a missing cache is filled (the only network access); else WeightsError with the 3 ways.
    """
    for source, p in weight_locations(path, settings_path)[:3]:
        if p is not None:
            if not p.is_file():
                raise WeightsError(
                    f"FCIB weights given by {source} not found: {p} "
                    f"{'is a folder' if p.is_dir() else 'does not exist'}. {how_to_provide()}"
                )
            return p
    cached = cached_weights_path()
    if cached.is_file():
        return cached
    if download:
        return download_weights(progress=progress)
    raise WeightsError(
        f"FCIB weights not found (looked for --weights, ${C.FCIB_WEIGHTS_ENV}, the Slicer setting "
        f"and {cached}). {how_to_provide()}"
    )


# ----------------------------------------------------------------------------------------------------------------
# hashes and their records


def file_sha256(path, progress=None) -> str:
    """SHA-256 of a file, read in 4 MiB blocks (hashlib releases the GIL: fine in a thread)."""
    h = hashlib.sha256()
    total, done = Path(path).stat().st_size, 0
    with open(path, "rb") as f:
        while block := f.read(1 << 22):
            h.update(block)
            done += len(block)
            if progress:
                progress(done, total)
    return h.hexdigest()


def _record_path(path) -> Path:
    key = hashlib.sha256(str(Path(path).resolve()).encode("utf-8")).hexdigest()[:32]
    return cache_dir() / "sha256" / f"{key}.json"


def read_record(path):
    """{"path", "size", "mtime_ns", "sha256", "recorded"} stored for this file, or None."""
    try:
        with open(_record_path(path), encoding="utf-8") as f:
            rec = json.load(f)
        return rec if rec.get("path") == str(Path(path).resolve()) else None
    except (OSError, ValueError, AttributeError):
        return None


def write_record(path, sha256: str, st=None) -> dict:
    """Store the file's hash with its size and mtime (best effort: a read-only cache only loses the record)."""
    from DFM50NLib.atomic import write_text

    st = st or Path(path).stat()
    rec = {
        "path": str(Path(path).resolve()),
        "size": st.st_size,
        "mtime_ns": st.st_mtime_ns,
        "sha256": sha256,
        "recorded": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    with contextlib.suppress(OSError):
        write_text(_record_path(path), json.dumps(rec, indent=1) + "\n")
    return rec


def _same_file(rec, st) -> bool:
    return bool(rec) and rec.get("size") == st.st_size and rec.get("mtime_ns") == st.st_mtime_ns


def recorded_sha256(path) -> str:
    """SHA-256 without reading 738 MB when a record for the same (size, mtime) exists; else hash and
    record now. For identities (e.g. batch config hashes); the encoder still verifies the full hash."""
    st = Path(path).stat()
    rec = read_record(path)
    if _same_file(rec, st) and rec.get("sha256"):
        return rec["sha256"]
    sha = file_sha256(path)
    write_record(path, sha, st)
    return sha


def check_against_record(path, st=None) -> str:
    """Full SHA-256 of `path`; WeightsError if a record for the same (size, mtime) says otherwise.

    No record, or a record of an older file (other size/mtime): this hash becomes the record.
    """
    try:
        st = st or Path(path).stat()
        sha = file_sha256(path)
    except OSError as exc:
        raise WeightsError(
            f"cannot read {path} to compute its SHA-256 ({exc}); was it moved or deleted while "
            "in use? Point to the file again."
        ) from None
    rec = read_record(path)
    if _same_file(rec, st):
        if rec["sha256"] != sha:
            raise WeightsError(
                f"{path} has changed since its SHA-256 was recorded on {rec.get('recorded')} (same size and "
                f"modification time, different content: disk corruption or tampering). Recorded "
                f"{rec['sha256']}, now {sha}. Delete it and download again ({DOWNLOAD_COMMAND} --force)."
            )
    else:
        write_record(path, sha, st)
    _check_published(path, sha, st.st_size)
    return sha


def _check_published(path, sha, size):
    """If constants.FCIB_WEIGHTS_SHA256 is set and the file has the published size, it must match."""
    known = getattr(C, "FCIB_WEIGHTS_SHA256", None)
    if known and size == C.FCIB_WEIGHTS_SIZE and sha != known:
        raise WeightsError(
            f"{path} has the size of the published FCIB weights but SHA-256 {sha}, not the "
            f"published {known}: delete it and download again ({DOWNLOAD_COMMAND} --force)."
        )


def verify_weights(path, progress=None) -> dict:
    """Full check of a weights file: strict structure, SHA-256, against the record. Raises WeightsError.

    Returns {"path", "size", "sha256", "previous_record", "record_matched"}; (re)writes the record.
    """
    path = Path(path).expanduser()
    load_trunk_state(path)  # existence + structure, with clear messages
    st = path.stat()
    previous = read_record(path)
    sha = file_sha256(path, progress=progress)
    matched = None
    if _same_file(previous, st):
        matched = previous["sha256"] == sha
        if not matched:
            raise WeightsError(
                f"{path}: SHA-256 {sha} differs from the {previous['sha256']} recorded on "
                f"{previous.get('recorded')} for the same size and modification time (corruption or tampering): "
                f"delete it and download again ({DOWNLOAD_COMMAND} --force)."
            )
    _check_published(path, sha, st.st_size)
    write_record(path, sha, st)
    return {
        "path": str(path.resolve()),
        "size": st.st_size,
        "sha256": sha,
        "previous_record": previous,
        "record_matched": matched,
        "published_size": st.st_size == C.FCIB_WEIGHTS_SIZE,
    }


# ----------------------------------------------------------------------------------------------------------------
# download


class _Interrupted(Exception):
    """The transfer stopped part-way: the .part file is kept and the next attempt resumes it."""


def download_weights(
    url=C.FCIB_WEIGHTS_URL,
    dest=None,
    *,
    expected_size=C.FCIB_WEIGHTS_SIZE,
    progress=None,
    force=False,
    retries=3,
    timeout=60.0,
) -> Path:
    """Download the FCIB weights to `dest` (default: the cache) and return the path.

    Already there and not `force`: returned without any network access. Otherwise the file grows in
    `<dest>.part` (resumed after an interruption, by this call's `retries` or a later call), is checked
    (size == expected_size unless None, strict structure, published hash if known) and renamed into place.
    progress(done_bytes, total_bytes) is called as bytes arrive.
    """
    dest = Path(dest).expanduser() if dest else cached_weights_path()
    if dest.is_file() and not force:
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    with _exclusive(dest.with_name(dest.name + ".lock")):
        if force:
            with contextlib.suppress(FileNotFoundError):
                part.unlink()  # --force: a fresh copy, not a resumed one
        elif dest.is_file():
            return dest  # another process finished it while we waited
        for attempt in range(retries + 1):
            try:
                _fetch(url, part, expected_size, progress, timeout)
                break
            except _Interrupted as exc:
                if attempt == retries:
                    have = part.stat().st_size if part.exists() else 0
                    raise WeightsError(
                        f"download of the FCIB weights interrupted ({exc}); {have:,} bytes are kept "
                        f"in {part}: run the same command again to resume."
                    ) from None
                time.sleep(min(2.0**attempt, 10.0))
        size = part.stat().st_size
        if expected_size is not None and size != expected_size:
            part.unlink()
            raise WeightsError(
                f"downloaded {size:,} bytes from {url}, expected {expected_size:,}: the file was "
                "deleted; check the URL and try again."
            )
        try:
            load_trunk_state(part)  # strict structure check; the mapped tensors are dropped at once
        except WeightsError as exc:
            part.unlink()
            raise WeightsError(
                f"the file downloaded from {url} is not the FCIB checkpoint and was deleted: {exc}"
            ) from None
        sha = file_sha256(part)
        try:
            _check_published(part, sha, size)
        except WeightsError:
            part.unlink()
            raise
        _fsync(part)
        try:
            os.replace(part, dest)
        except OSError as exc:  # Windows: the old file is memory-mapped by a running Slicer/Python
            raise WeightsError(
                f"downloaded and checked {part}, but could not put it in place of {dest} ({exc}): "
                "close programs using the weights and run the command again."
            ) from None
        write_record(dest, sha)
    return dest


def _fetch(url, part: Path, expected_size, progress, timeout):
    """One HTTP attempt: resume `part` with a Range request when it has bytes, else start it."""
    import requests

    have = part.stat().st_size if part.exists() else 0
    if expected_size is not None and have == expected_size:
        return  # complete leftover (e.g. killed while checking): it is checked next like any download
    if expected_size is not None and have > expected_size:
        part.unlink()
        have = 0
    headers = {"Range": f"bytes={have}-"} if have else {}
    try:
        with requests.get(url, stream=True, timeout=timeout, headers=headers) as r:
            if r.status_code == 206 and r.headers.get("Content-Range", "").startswith(f"bytes {have}-"):
                mode, total = "ab", _range_total(r.headers["Content-Range"])
            elif r.status_code == 200:
                mode, have = "wb", 0
                total = int(r.headers["Content-Length"]) if "Content-Length" in r.headers else None
            elif r.status_code == 416:  # our .part is not a prefix of what the server has: start over
                part.unlink()
                raise _Interrupted("server refused to resume; restarting")
            elif r.status_code >= 500 or r.status_code == 429:
                raise _Interrupted(f"HTTP {r.status_code} from {url}")
            else:
                raise WeightsError(
                    f"cannot download the FCIB weights: HTTP {r.status_code} {r.reason} from {url}. "
                    f"Check the URL, or download the file by hand and use --weights PATH."
                )
            if expected_size is not None and total is not None and total != expected_size:
                raise WeightsError(
                    f"{url} offers {total:,} bytes but the FCIB weights file has {expected_size:,}: "
                    "wrong URL, or the file changed upstream; nothing was kept."
                )
            done, shown = have, total or expected_size
            if progress:
                progress(done, shown)
            with open(part, mode) as f:
                for chunk in r.iter_content(1 << 16):  # what arrived before a cut is kept (<= 64 KiB lost)
                    f.write(chunk)
                    done += len(chunk)
                    if expected_size is not None and done > expected_size:
                        raise WeightsError(
                            f"{url} sends more than the {expected_size:,} bytes of the FCIB "
                            "weights: wrong file; nothing was kept."
                        )
                    if progress:
                        progress(done, shown)
    except WeightsError:
        with contextlib.suppress(FileNotFoundError):
            part.unlink()
        raise
    except requests.RequestException as exc:
        raise _Interrupted(f"{type(exc).__name__}: {str(exc)[:200]}") from None
    if total is not None and done < total:
        raise _Interrupted(f"connection closed after {done:,} of {total:,} bytes")


def _range_total(content_range: str):
    tail = content_range.rsplit("/", 1)[-1]
    return int(tail) if tail.isdigit() else None


def _fsync(path):
    with open(path, "rb+") as f:
        os.fsync(f.fileno())


@contextlib.contextmanager
def _exclusive(lock_path: Path):
    """One download per cache at a time, across processes; released by the OS if the process dies."""
    f = open(lock_path, "a+b")
    try:
        try:
            if os.name == "nt":
                import msvcrt

                msvcrt.locking(f.fileno(), msvcrt.LK_NBLCK, 1)
            else:
                import fcntl

                fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise WeightsError(
                f"another process is downloading the FCIB weights (lock {lock_path}); wait for it "
                "to finish and try again."
            ) from None
        yield
    finally:
        f.close()


def text_progress(stream=None, label="FCIB weights", min_interval=0.25):
    """A progress(done, total) callback drawing a one-line text bar (for the CLI)."""
    stream = stream or sys.stderr
    state = {"t0": time.monotonic(), "last": 0.0}

    def progress(done, total):
        now = time.monotonic()
        final = bool(total) and done >= total
        if now - state["last"] < min_interval and not final:
            return
        state["last"] = now
        mb = done / 1e6
        rate = mb / max(now - state["t0"], 1e-6)
        if total:
            frac = min(done / total, 1.0)
            bar = "#" * int(30 * frac)
            line = f"\r{label}: [{bar:<30}] {100 * frac:5.1f}%  {mb:,.0f}/{total / 1e6:,.0f} MB  {rate:5.1f} MB/s"
        else:
            line = f"\r{label}: {mb:,.0f} MB  {rate:5.1f} MB/s"
        stream.write(line + ("\n" if final else ""))
        stream.flush()

    return progress
