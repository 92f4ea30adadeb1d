"""The publisher's checksum of the FCIB weights, from the Zenodo record's metadata API, kept beside the file.

Zenodo's `GET https://zenodo.org/api/records/<id>` returns JSON whose `files` list holds, per file, `key` (the
file name), `size` and `checksum` ("md5:<hex>"). It is fetched at download time and written to
`<weights>.published.json`; a file is "verified" when its MD5 equals that published one. Otherwise (no sidecar,
record unreachable, different MD5) every result carries "FCIB weights: unverified file sha256 ...".
"""

from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path

from DFM50NLib import constants as C

RECORD_API_URL = "https://zenodo.org/api/records/10528450"  # the record of ...
FILE_URL = "https://zenodo.org/records/10528450/files/model_weights.torch?download=1"  # ... this file


def sidecar(path) -> Path:
    p = Path(path)
    return p.with_name(p.name + ".published.json")


def fetch_published_md5(record_url, filename=C.FCIB_WEIGHTS_FILENAME, timeout=30.0):
    """(md5 hex or None, note): the checksum the record publishes for `filename`; never raises."""
    import requests

    try:
        r = requests.get(record_url, timeout=timeout, headers={"Accept": "application/json"})
        if r.status_code != 200:
            return None, f"HTTP {r.status_code} from {record_url}"
        files = r.json().get("files") or []
    except (requests.RequestException, ValueError, AttributeError) as exc:
        return None, f"{record_url} could not be read ({type(exc).__name__}: {exc})"
    if isinstance(files, dict):  # some API versions: {"entries": {name: {...}}}
        files = list((files.get("entries") or {}).values())
    for f in files:
        if isinstance(f, dict) and filename in (f.get("key"), f.get("filename")):
            algo, _, value = str(f.get("checksum", "")).partition(":")
            if algo.lower() == "md5" and len(value) == 32:
                return value.lower(), f"published by {record_url}"
            return None, f"{record_url} lists {filename} without an md5 checksum"
    return None, f"{record_url} does not list {filename}"


def store(path, md5, source) -> None:
    from DFM50NLib.atomic import write_text

    rec = {"file": Path(path).name, "md5": md5, "source": source, "fetched": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    with contextlib.suppress(OSError):
        write_text(sidecar(path), json.dumps(rec, indent=1) + "\n")


def read(path):
    """The stored publisher md5 of the file at `path`, or None."""
    try:
        rec = json.loads(sidecar(path).read_text(encoding="utf-8"))
        md5 = str(rec.get("md5", "")).lower()
        return md5 if len(md5) == 32 else None
    except (OSError, ValueError, AttributeError):
        return None
