"""Find, download and verify the FCIB weights (model_weights.torch, 738 MB, Zenodo record 10528450).

Where they are looked for, in order: an explicit path (--weights), $DFM50N_FCIB_WEIGHTS, the Slicer
module's setting, the per-user cache (platformdirs.user_cache_dir("DFM50N")/fcib, or $DFM50N_CACHE_DIR/fcib),
which only `download` fills. Nothing touches the network unless a download is asked for.

Integrity (METHOD.md §5): a download is written to `<name>.part` (resumable with an HTTP Range request), its size
checked, its structure strictly checked (fcib.load_trunk_state), then renamed into place in one step: an
interrupted download never leaves a file that passes as the weights. Its SHA-256 is then stored in a small
record (`sha256/<hash of path>.json` in the cache, keyed by path, size and mtime).

Trade-off, documented: hashing 738 MB takes ~0.5-2 s of a core. An encoder build trusts the record when
the file's whole identity is unchanged -- path, size, mtime, ctime and inode, as git's index and make do: a
write, a replaced file or an mtime reset with `touch`/`os.utime` all change ctime. Otherwise (first use, a
changed identity, or Windows, where st_ctime is the creation time) it hashes the file in a background
thread while the model loads; the score reads the hash when it is written (Result.fcib_weights_sha256) and
fails if the file no longer matches the hash recorded for the same (path, size, mtime). A file with a new
size or mtime is a new file: its hash becomes the record. Not caught between two full hashes: bytes that
rot on disk without any write (the zip CRC check is cached the same way); `python -m DFM50NLib weights
verify` does the full check on demand. Why: hashing in every process ran beside the first forward on a
2-core machine and made it 0.55 s slower (0.85 s instead of 0.30 s; measured by benchmark_scoring.py).

Beyond that record (which only detects a later change): every zip record's CRC-32 is checked on download and
on first use of a file (model/zipcheck.py, verdict cached per size+mtime+inode), and the publisher's MD5 is
fetched from the Zenodo record API at download time and kept beside the file (model/published.py). A file
whose MD5 is not the published one is "unverified": every result and report says so with its SHA-256.
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
    from DFM50NLib.io.integrity import check_regular

    for source, p in weight_locations(path, settings_path)[:3]:
        if p is not None:
            check_regular(p)  # a FIFO would block every read that follows
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


def file_digests(path, progress=None, md5=True) -> tuple:
    """(SHA-256, MD5 or None) of a file in one read (MD5 only to compare with the publisher's checksum)."""
    h = hashlib.sha256()
    m = hashlib.md5(usedforsecurity=False) if md5 else None
    total, done = Path(path).stat().st_size, 0
    with open(path, "rb") as f:
        while block := f.read(1 << 22):
            h.update(block)
            if m is not None:
                m.update(block)
            done += len(block)
            if progress:
                progress(done, total)
    return h.hexdigest(), (m.hexdigest() if m is not None else None)


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


def write_record(path, sha256: str, st=None, md5=None) -> dict:
    """Store the file's hash with its size and mtime (best effort: a read-only cache only loses the record)."""
    from DFM50NLib.atomic import write_text

    st = st or Path(path).stat()
    rec = {
        "path": str(Path(path).resolve()),
        "size": st.st_size,
        "mtime_ns": st.st_mtime_ns,
        "ctime_ns": st.st_ctime_ns,
        "inode": st.st_ino,
        "sha256": sha256,
        "md5": md5,
        "recorded": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    with contextlib.suppress(OSError):
        write_text(_record_path(path), json.dumps(rec, indent=1) + "\n")
    return rec


def _same_file(rec, st) -> bool:
    return bool(rec) and rec.get("size") == st.st_size and rec.get("mtime_ns") == st.st_mtime_ns


# st_ctime is the last change of the inode on POSIX (any write or utime moves it), the creation time on Windows
_CTIME_IS_CHANGE_TIME = os.name != "nt"


def _same_identity(rec, st) -> bool:
    """The record was written for this very file: same size and mtime, and same ctime and inode."""
    return _same_file(rec, st) and (rec.get("ctime_ns"), rec.get("inode")) == (st.st_ctime_ns, st.st_ino)


def trusted_sha256(path, st=None):
    """The recorded SHA-256 when nothing about the file changed since it was hashed (path, size, mtime,
    ctime, inode), else None: the caller then hashes it (check_against_record)."""
    if not _CTIME_IS_CHANGE_TIME:
        return None
    try:
        st = st or Path(path).stat()
    except OSError:
        return None
    rec = read_record(path)
    if _same_identity(rec, st):
        return rec.get("sha256") or None
    return None


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
    from DFM50NLib.model import published
    from DFM50NLib.model.zipcheck import check_zip_crcs_cached

    try:
        st = st or Path(path).stat()
        check_zip_crcs_cached(path, st)  # corrupted bytes inside tensor data: once per file
        # MD5 only where a publisher checksum is stored beside the file: without one the file is unverified anyway
        sha, md5 = file_digests(path, md5=published.read(path) is not None)
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
        if (md5 and rec.get("md5") != md5) or not _same_identity(rec, st):
            write_record(path, sha, st, md5 or rec.get("md5"))  # identity refreshed: trusted next time
    else:
        write_record(path, sha, st, md5)
    _check_published(path, sha, st.st_size)
    return sha


def provenance(path, sha256=None) -> dict:
    """{"verified", "text", "sha256", "md5", "published_md5"}: is this the publisher's file?

    Verified = the file's MD5 (from its record, same size and mtime) equals the MD5 the publisher's record
    listed at download time (stored beside the file). Anything else is "unverified", said with the SHA-256.
    """
    from DFM50NLib.model import published

    path = Path(path)
    rec = read_record(path)
    try:
        st = path.stat()
    except OSError:
        st = None
    md5 = rec.get("md5") if (rec and st is not None and _same_file(rec, st)) else None
    sha = sha256 or (rec or {}).get("sha256") or "unknown"
    pub = published.read(path)
    if pub and md5 == pub:
        return {
            "verified": True,
            "text": f"FCIB v{C.FCIB_VERSION} (MD5 {md5} = the publisher's checksum)",
            "sha256": sha,
            "md5": md5,
            "published_md5": pub,
        }
    why = (
        "no publisher checksum is stored beside it: `weights verify` confirms a copied file once, online"
        if not pub
        else (
            f"its MD5 {md5} differs from the publisher's {pub}"
            if md5
            else "its MD5 was not computed yet (run `weights verify`)"
        )
    )
    return {
        "verified": False,
        "text": f"FCIB weights: unverified file sha256 {sha} ({why}); the score may not be the published model's",
        "sha256": sha,
        "md5": md5,
        "published_md5": pub,
    }


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
    from DFM50NLib.model.zipcheck import check_zip_crcs

    path = Path(path).expanduser()
    load_trunk_state(path)  # existence + structure, with clear messages
    st = path.stat()
    records = check_zip_crcs(path)  # always in full here: `verify` is the on-demand check
    previous = read_record(path)
    sha, md5 = file_digests(path, progress=progress)
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
    write_record(path, sha, st, md5)
    return {
        "path": str(path.resolve()),
        "size": st.st_size,
        "sha256": sha,
        "md5": md5,
        "zip_records": records,
        "provenance": provenance(path, sha),
        "previous_record": previous,
        "record_matched": matched,
        "published_size": st.st_size == C.FCIB_WEIGHTS_SIZE,
    }


# ----------------------------------------------------------------------------------------------------------------
# download


class _Interrupted(Exception):
    """The transfer stopped part-way: the .part file is kept and the next attempt resumes it."""

    def __init__(self, message, unreachable=False):
        super().__init__(message)
        self.unreachable = unreachable  # no connection at all (offline, DNS, refused)


def download_weights(
    url=C.FCIB_WEIGHTS_URL,
    dest=None,
    *,
    expected_size=C.FCIB_WEIGHTS_SIZE,
    progress=None,
    force=False,
    retries=3,
    timeout=60.0,
    record_url=None,
) -> Path:
    """Download the FCIB weights to `dest` (default: the cache) and return the path.

    Already there and not `force`: returned without any network access. Otherwise the file grows in
    `<dest>.part` (resumed after an interruption, by this call's `retries` or a later call), is checked
    (size == expected_size unless None, strict structure, published hash if known) and renamed into place.
    progress(done_bytes, total_bytes) is called as bytes arrive. record_url: the publisher's record API
    (JSON with files[].key / files[].checksum "md5:..."); default: Zenodo's record for the default URL, none
    for another URL. Its MD5 must match, else the file is deleted; unreachable: the file is kept, unverified.
    """
    from DFM50NLib.model import published
    from DFM50NLib.model.zipcheck import check_zip_crcs

    if record_url is None and url == published.FILE_URL:
        record_url = published.RECORD_API_URL
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
                    if exc.unreachable and not have:
                        raise WeightsError(_offline_message(url, exc)) from None
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
        try:
            check_zip_crcs(part)  # garbage inside tensor data (e.g. a spliced resume) fails a record's CRC-32
        except WeightsError as exc:
            part.unlink()
            raise WeightsError(f"the file downloaded from {url} was deleted: {exc}") from None
        sha, md5 = file_digests(part)
        pub, note = (None, "")
        if record_url:
            from urllib.parse import urlparse

            name = Path(urlparse(url).path).name or C.FCIB_WEIGHTS_FILENAME
            pub, note = published.fetch_published_md5(record_url, name, timeout)
        if pub and pub != md5:
            part.unlink()
            raise WeightsError(
                f"the file downloaded from {url} has MD5 {md5}, but the publisher's record ({record_url}) lists "
                f"{pub}: it is not the published file and was deleted. Check the URL and try again."
            )
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
        write_record(dest, sha, None, md5)
        if pub:
            published.store(dest, pub, record_url)
        else:
            with contextlib.suppress(OSError):
                published.sidecar(dest).unlink()
            print(
                f"warning: no publisher checksum for {dest} ({note or 'no record URL for this download'}); results "
                f"will say 'FCIB weights: unverified file sha256 {sha}'.",
                file=sys.stderr,
            )
    return dest


def _offline_message(url, exc) -> str:
    return (
        f"could not reach the download host of the FCIB weights ({exc}); nothing was downloaded. Without "
        f"network: fetch {url} by hand (e.g. with a browser, {C.FCIB_WEIGHTS_SIZE:,} bytes) on a connected "
        f"machine, then give it with --weights PATH or the environment variable {C.FCIB_WEIGHTS_ENV}=PATH."
    )


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
    except requests.ConnectionError as exc:
        raise _Interrupted(f"{type(exc).__name__}: {exc}", unreachable=not part.exists()) from None
    except requests.RequestException as exc:
        raise _Interrupted(f"{type(exc).__name__}: {exc}") from None
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
