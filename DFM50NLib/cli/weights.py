"""`python -m DFM50NLib weights status|download|verify|path`: the FCIB weights on this machine."""

from __future__ import annotations

import argparse
import sys

from DFM50NLib.constants import FCIB_WEIGHTS_ENV, FCIB_WEIGHTS_SIZE, FCIB_WEIGHTS_URL

_HELP = f"""\
DFM50N needs the weights of the FCIB foundation model: model_weights.torch, {FCIB_WEIGHTS_SIZE:,} bytes
(~738 MB), published on Zenodo (record 10528450). They are not shipped with DFM50N. Give them in one of 3 ways:
  1. --weights PATH on any scoring command (in Slicer: the module's "FCIB weights" setting);
  2. the environment variable {FCIB_WEIGHTS_ENV}=PATH (e.g. for offline machines or clusters);
  3. download them once: `python -m DFM50NLib weights download`. They go to a per-user cache folder
     (outside this project and Slicer; change it with DFM50N_CACHE_DIR) and are found there afterwards.
Offline machine: download the file elsewhere (`weights download` or the Zenodo link), copy it over, and use
way 1 or 2; `weights verify PATH` checks the copy."""


def register(subparsers):
    p = subparsers.add_parser(
        "weights",
        help="find, download and check the FCIB model weights (738 MB)",
        description=_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="action", metavar="ACTION", required=True)

    s = sub.add_parser(
        "status",
        help="where the weights are looked for, and what is there",
        description="Show each place the weights are looked for, in order, whether a file is "
        "there, its size and its recorded SHA-256. Never uses the network.",
    )
    s.add_argument("--weights", default=None, help="also check this path (as --weights would be used)")
    s.set_defaults(func=_status)

    d = sub.add_parser(
        "download",
        help="download the weights into the per-user cache (738 MB, resumable)",
        description="Download model_weights.torch into the per-user cache folder. An interrupted "
        "download resumes where it stopped when you run the command again. The file "
        "is checked (size, structure, SHA-256 recorded) before it is put in place.",
    )
    d.add_argument("--url", default=FCIB_WEIGHTS_URL, help="where to download from (default: Zenodo)")
    d.add_argument("--force", action="store_true", help="download again even if the cache already has the file")
    d.add_argument("--quiet", action="store_true", help="no progress bar")
    d.set_defaults(func=_download)

    v = sub.add_parser(
        "verify",
        help="fully check a weights file (structure + SHA-256)",
        description="Load the file strictly (every tensor of the FCIB model, right shapes, nothing "
        "else), compute its SHA-256 and compare it with the hash recorded when it was "
        "first used. A file of the published size without a stored publisher checksum (copied by hand) is "
        "checked against the MD5 the Zenodo record lists (one small request; kept beside the file, so scores "
        "stop calling it unverified). One verdict, first: exit 0 = the published FCIB file, 1 = intact but "
        "not confirmed as the published file, 2 = damaged or not an FCIB checkpoint.",
    )
    v.add_argument("--offline", action="store_true", help="never ask the publisher's record for its checksum")
    v.add_argument("--record-url", default=None, help=argparse.SUPPRESS)  # tests: a local Zenodo-like record
    v.add_argument(
        "path",
        nargs="?",
        default=None,
        help=f"file to check (default: the one scoring would use: ${FCIB_WEIGHTS_ENV}, else the cache)",
    )
    v.set_defaults(func=_verify)

    q = sub.add_parser(
        "path",
        help="print the path of the weights scoring would use (exit 1 if none)",
        description="Print the weights file scoring would use, for scripts: "
        '`--weights "$(python -m DFM50NLib weights path)"`. Exit 1 if there is none.',
    )
    q.set_defaults(func=_path)
    return p


def _status(args):
    from DFM50NLib.errors import WeightsError
    from DFM50NLib.model.weights import read_record, resolve_weights, weight_locations

    print("FCIB weights are looked for in this order (the first place that is set is used):")
    for source, p in weight_locations(args.weights):
        if p is None:
            print(f"  {source:<22} (not set)")
        elif not p.is_file():
            print(f"  {source:<22} {p}: {'is a folder' if p.is_dir() else 'missing'}")
        else:
            st = p.stat()
            note = "" if st.st_size == FCIB_WEIGHTS_SIZE else f" (the published file has {FCIB_WEIGHTS_SIZE:,})"
            print(f"  {source:<22} {p}: found, {st.st_size:,} bytes{note}")
            rec = read_record(p)
            if rec and rec.get("size") == st.st_size and rec.get("mtime_ns") == st.st_mtime_ns:
                from DFM50NLib.model.weights import provenance

                print(f"  {'':<22} sha256 {rec['sha256']} (recorded {rec.get('recorded')})")
                print(f"  {'':<22} {provenance(p)['text']}")
            else:
                print(f"  {'':<22} sha256 not recorded yet (done on first use, or run `weights verify`)")
    try:
        print(f"in use: {resolve_weights(args.weights)}")
        return 0
    except WeightsError as exc:
        print(f"in use: none. {exc}")
        return 1


def _download(args):
    from DFM50NLib import constants
    from DFM50NLib.model.weights import cached_weights_path, download_weights, text_progress

    dest = cached_weights_path()
    had = dest.is_file()
    path = download_weights(
        args.url,
        force=args.force,
        expected_size=constants.FCIB_WEIGHTS_SIZE,
        progress=None if args.quiet else text_progress(),
    )
    from DFM50NLib.model.weights import provenance

    print(f"{'already downloaded' if had and not args.force else 'downloaded and checked'}: {path}")
    print(provenance(path)["text"])
    return 0


def _verify(args):
    from DFM50NLib.model.weights import provenance, resolve_weights, text_progress, verify_weights

    path = args.path or resolve_weights()
    info = verify_weights(path, progress=text_progress(label="SHA-256") if sys.stderr.isatty() else None)
    note, mismatch = _confirm_published(info, args)
    prov = provenance(info["path"], info["sha256"]) if note is not None else info["provenance"]
    rc, verdict = weights_verdict(info, prov, note, mismatch)
    print(verdict)
    print("  structure: the FCIB v1.0.0 trunk (322 entries, 184,477,824 parameters), loads strictly")
    print(
        f"  size:      {info['size']:,} bytes"
        + ("" if info["published_size"] else f" (published: {FCIB_WEIGHTS_SIZE:,})")
    )
    print(f"  sha256:    {info['sha256']}")
    print(f"  md5:       {info['md5']}")
    print(f"  zip CRC-32: all {info['zip_records']} records intact")
    prev = info["previous_record"]
    if info["record_matched"]:
        print(f"  matches the hash recorded on {prev.get('recorded')}")
    else:
        print("  no hash recorded for this exact file before; recorded now")
    return rc


def _confirm_published(info, args):
    """A hand-copied file of the published size has no publisher checksum beside it: read the record's MD5 once
    (as `weights download` does) and keep it when it matches. Returns (a note on what happened or None if not
    tried, whether the record lists another MD5)."""
    from DFM50NLib.model import published

    if info["provenance"]["verified"] or not info["published_size"] or published.read(info["path"]) or args.offline:
        return None, False
    url = args.record_url or published.RECORD_API_URL
    md5, why = published.fetch_published_md5(url)
    if md5 is None:
        return f"the publisher's checksum could not be read ({why})", False
    if md5 == info["md5"]:
        published.store(info["path"], md5, url)
        return "confirmed now against the publisher's record", False
    return f"its MD5 {info['md5']} differs from the {md5} the publisher's record lists", True


def weights_verdict(info, prov, note=None, mismatch=False) -> tuple:
    """(exit code, first line): one verdict for the file, never OK followed by 'not the published file'."""
    path = info["path"]
    if prov["verified"]:
        return 0, f"OK: {path} is the published FCIB v1.0.0 file ({prov['text']})"
    if not info["published_size"]:
        return 1, (
            f"NOT THE PUBLISHED FILE: {path} is an intact FCIB-shaped checkpoint of {info['size']:,} bytes, not the "
            f"published {FCIB_WEIGHTS_SIZE:,}: a different checkpoint; its scores are not DFM50N's."
        )
    if mismatch:
        return 1, f"NOT THE PUBLISHED FILE: {path}: {note}; its scores are not DFM50N's."
    return 1, (
        f"UNCONFIRMED: {path} is intact and has the published size, but "
        + (note or "no publisher checksum is stored beside it")
        + f". Run `weights verify` once with network access, or compare its MD5 {info['md5']} with the one listed "
        "on https://zenodo.org/records/10528450; until then scores call it unverified."
    )


def _path(args):
    from DFM50NLib.errors import WeightsError
    from DFM50NLib.model.weights import resolve_weights

    try:
        print(resolve_weights())
    except WeightsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0
