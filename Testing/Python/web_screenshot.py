"""Capture the README screenshot of the browser app: demo case, a lesion painted with the mouse, scored.

    python Testing/Python/web_screenshot.py docs/web-scored-lesion.png [--weights PATH]

Uses the same harness as the Playwright tests (fresh server on a free port, Debian chromium, headless).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from web_harness import (
    add_segment_and_paint,
    browser_page,
    open_demo,
    score_and_wait,
    wait_for_cube_outline,
    wait_idle,
    web_server,
)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--weights", default=None, help="FCIB weights (else $DFM50N_FCIB_WEIGHTS or the cache)")
    args = ap.parse_args(argv)
    extra = ["--weights", args.weights] if args.weights else []
    with tempfile.TemporaryDirectory() as tmp, web_server(Path(tmp), *extra) as url, browser_page(url) as page:
        open_demo(page)
        add_segment_and_paint(page, [(0.38, 0.44), (0.50, 0.40), (0.52, 0.52), (0.40, 0.56), (0.38, 0.46)])
        score = score_and_wait(page)
        wait_for_cube_outline(page)
        wait_idle(page, quiet_ms=1500)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(args.out))
        print(f"score {score} -> {args.out}")


if __name__ == "__main__":
    main()
