"""Command line: `python -m DFM50NLib <command>`, one sub-module per command group, each with `register(subparsers)`.

A front end: may import every layer except `scene` (Slicer); heavy work is imported inside the command functions.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from DFM50NLib import __version__
from DFM50NLib.constants import DISCLAIMER

# score + features: pipeline; weights: FCIB weights; models: import-model/train/make-demo-model;
# batch: cohorts; demo: the bundled phantom case.
COMMAND_MODULES = ("score", "weights", "models", "batch", "demo", "web")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m DFM50NLib",
        description="DFM50N: probability of occult lymph-node metastasis in early small-cell lung cancer, "
        "from a chest CT and a lesion mask (FCIB foundation model + random forest). " + DISCLAIMER,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"DFM50N {__version__}")
    parser.add_argument(
        "--debug", action="store_true", help="show Python tracebacks on errors (allowed anywhere on the line)"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(f"{__name__}.{name}").register(sub)
    return parser


_shown_warnings: set = set()


def already_shown(message) -> bool:
    """True if this warning text was already printed on stderr by this process (each warning once)."""
    return str(message) in _shown_warnings


def _show_warning(message, category, filename, lineno, file=None, line=None):
    """warnings.showwarning for the CLI: `warning: text` once per text, without Python's source line.

    Only DFM50N's own warnings (what the user must know about the score) are shown: a library's notes about
    its own API (highdicom: 'LUNG1-001 is unlikely to represent the intended person name') are not the
    user's business and would break a progress bar. --debug shows them all, as Python does.
    """
    from DFM50NLib.errors import DFM50NWarning

    if not issubclass(category, DFM50NWarning):
        return
    text = str(message)
    if text in _shown_warnings:
        return
    _shown_warnings.add(text)
    print(f"warning: {text}", file=file or sys.stderr)


# errors a user can cause (a bad path, a full disk, a file that is not what it claims): message, rc 2
_USER_ERRORS = (OSError, ValueError, EOFError, MemoryError, LookupError)


def main(argv=None) -> int:
    """Run one command. User errors print `error: ...` and return 2; --debug (anywhere) shows tracebacks."""
    import os

    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv or os.environ.get("DFM50N_DEBUG", "") not in ("", "0")
    argv = [a for a in argv if a != "--debug"]
    from DFM50NLib.model import encoder_process

    encoder_process.prestart(argv)  # torch imports in a sibling process while this one starts (score, demo)
    try:
        return _run(argv, debug)
    finally:
        encoder_process.discard_prestarted()


def _run(argv, debug) -> int:
    import warnings

    from DFM50NLib.errors import DFM50NError, DFM50NWarning

    parser = build_parser()
    args = parser.parse_args(argv)
    _shown_warnings.clear()  # "each warning once" is per command, also when main() runs many times in a process
    saved = warnings.showwarning
    if not debug:
        warnings.showwarning = _show_warning
    try:
        with warnings.catch_warnings():
            # Python's own registry would hide a text already warned from the same line earlier in this process
            warnings.simplefilter("always", DFM50NWarning)
            return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except DFM50NError as exc:
        if debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except _USER_ERRORS as exc:
        if debug:
            raise
        print(f"error: {_describe(exc)} (run with --debug for the traceback)", file=sys.stderr)
        return 2
    except Exception as exc:
        if debug:
            raise
        print(
            f"error: unexpected {type(exc).__name__}: {exc} -- please report it with the output of the same "
            "command run with --debug",
            file=sys.stderr,
        )
        return 1
    finally:
        warnings.showwarning = saved


def _describe(exc) -> str:
    """The whole message of an OSError (with its file names) or another error, never cut."""
    if isinstance(exc, OSError) and exc.strerror:
        names = " -> ".join(str(n) for n in (exc.filename, exc.filename2) if n is not None)
        return f"{exc.strerror}{': ' + names if names else ''}"
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
