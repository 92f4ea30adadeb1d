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
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(f"{__name__}.{name}").register(sub)
    return parser


def main(argv=None) -> int:
    from DFM50NLib.errors import DFM50NError

    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except DFM50NError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
