"""Benchmark of a browser session's start and memory (not a test): prints the figures of one run.

    python Testing/Benchmarks/benchmark_web_session.py [--weights PATH] [--slices 150] [--reloads 3] [--no-memory]

Start: for each way a session can be started - when its page asks for it (`--spare-sessions 0`, the old way)
and handed from a warm spare started ahead (`--spare-sessions 1`, the default) - opens the page and reloads it
`--reloads` times (a pause of at least 8 s between, as a user would), and prints the seconds from the page load
(or reload) to the first images of the three slice views, and to the demo case's CT shown in the axial view
after clicking *Open demo case* at once; the session's own start (process start to listening, its log's
timeline) beside them.

Memory: starts `python -m DFM50NLib web` (wslink's launcher), opens the page in Debian's headless chromium (one
session = one process), and reads the session's resident memory (its process plus the FCIB encoder child, from
/proc) idle, after uploading a synthetic 512x512xN int16 chest CT (0.7 x 0.7 x 2.5 mm) and its lesion, during
scoring (peak, VmHWM) and after. The server's `--max-sessions` times the peak is what a host must hold.
Without --weights a random-weight checkpoint of the real architecture is used (the same size as FCIB's).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "Testing" / "Python"))


def tree(pid) -> list:
    """pid and its descendants."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        for task in Path(f"/proc/{p}/task").glob("*"):
            try:
                todo += [int(c) for c in (task / "children").read_text().split()]
            except OSError:
                pass
    return out


def status_mb(pid, field) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def rss(pid) -> float:
    return sum(status_mb(p, "VmRSS") for p in tree(pid))


def peak(pid) -> float:
    return sum(status_mb(p, "VmHWM") for p in tree(pid))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--weights", default=None)
    ap.add_argument("--slices", type=int, default=150)
    ap.add_argument("--reloads", type=int, default=3)
    ap.add_argument("--no-memory", action="store_true", help="only the start figures")
    args = ap.parse_args(argv)
    start_rows = [row for spares in (0, 1) for row in page_starts(spares, args.reloads)]
    print(f"{'session start':36s} {'load':>6s} {'views (s)':>10s} {'demo CT (s)':>12s} {'session start (s)':>18s}")
    for way, load, views, ct, own in start_rows:
        print(f"{way:36s} {load:>6s} {views:10.2f} {ct:12.2f} {own:18.2f}")
    median = {}
    for way in dict.fromkeys(r[0] for r in start_rows):
        views = sorted(r[2] for r in start_rows if r[0] == way)
        median[way] = views[len(views) // 2]
        print(f"median page load -> views, {way}: {median[way]:.2f} s")
    old, new = median.values()
    print(f"ratio started at request / warm spare: {old / new:.1f}")
    if not args.no_memory:
        memory(args)


def page_starts(spares, reloads) -> list:
    """(way, load, seconds to the views' first images, to the demo CT shown, the session's own start) per load."""
    from playwright.sync_api import sync_playwright
    from web_harness import (
        AXIAL_IMAGE_BRIGHT,
        CHROMIUM,
        VIEW_FRAMES,
        handed_sessions,
        timeline,
        wait_for_spare,
        web_server,
    )

    way = "warm spare" if spares else "started at the page's request"
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        work = tmp / "tmp"
        work.mkdir()
        args = ("--spare-sessions", str(spares), "--max-sessions", str(reloads + 2))
        with web_server(tmp, *args, env={"TMPDIR": str(work)}) as url, sync_playwright() as p:
            page = p.chromium.launch(executable_path=CHROMIUM, headless=True).new_page(
                viewport={"width": 1280, "height": 800}
            )
            for load in range(reloads + 1):
                time.sleep(8)  # the user looks at the page before reloading
                if spares:
                    wait_for_spare(work)  # started NEXT_SPARE_DELAY_S after the last hand-off
                t0 = time.time()
                page.goto(url) if load == 0 else page.reload()
                page.wait_for_function(VIEW_FRAMES, polling=50, timeout=180_000)
                views = time.time() - t0
                page.click("#dfm-open-demo")
                page.wait_for_function(AXIAL_IMAGE_BRIGHT, polling=50, timeout=180_000)
                ct = time.time() - t0
                (_, log) = handed_sessions(work)[-1]
                rows.append(
                    (
                        f"{way} (--spare-sessions {spares})",
                        "first" if load == 0 else f"re {load}",
                        views,
                        ct,
                        timeline(log, "listening"),
                    )
                )
    return rows


def memory(args):
    from web_harness import browser_page, handed_sessions, score_and_wait, wait_for_views, wait_idle, web_server

    from DFM50NLib.geometry.synthetic import sphere_case
    from DFM50NLib.io.itk_image import write_volume

    if args.weights is None:
        from DFM50NLib.model import fcib

        args.weights = str(Path(tempfile.gettempdir()) / "fcib_random_seed0.torch")
        if not Path(args.weights).exists():
            fcib.save_random_checkpoint(args.weights, seed=0)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        ct, mask = sphere_case((-60.0, 20.0, 0.0), 10.0, shape=(512, 512, args.slices), spacing=(0.7, 0.7, 2.5))
        ct = ct.with_array(ct.array.astype("int16"))
        ct_path = write_volume(ct, tmp / "chest_ct.nii.gz")
        mask_path = write_volume(mask.with_array(mask.array.astype("uint8")), tmp / "lesion.nii.gz")
        work = tmp / "tmp"
        work.mkdir()
        rows = []
        with web_server(tmp, "--weights", args.weights, env={"TMPDIR": str(work)}) as url, browser_page(url) as page:
            ((pid, _),) = handed_sessions(work)
            wait_idle(page, quiet_ms=2000)
            rows.append(("idle (page open, no case)", rss(pid)))
            page.set_input_files("#dfm-upload", str(ct_path))
            page.wait_for_selector("#dfm-case:has-text('chest_ct.nii.gz')", timeout=300_000)
            wait_for_views(page)
            page.set_input_files("#dfm-upload-lesion", str(mask_path))
            page.wait_for_selector("#dfm-segment-voxels:not([data-voxels='0'])", timeout=300_000)
            wait_idle(page, quiet_ms=2000)
            rows.append((f"CT 512x512x{args.slices} + lesion open", rss(pid)))
            t0 = time.time()
            score = score_and_wait(page, timeout=900_000)
            wait_idle(page, quiet_ms=2000)
            rows.append((f"after scoring ({time.time() - t0:.0f} s, score {float(score):.4f})", rss(pid)))
            rows.append(("peak over the session (VmHWM)", peak(pid)))
    print(f"{'session state':45s} {'RSS (MB, session + encoder)':>28s}")
    for name, mb in rows:
        print(f"{name:45s} {mb:28.0f}")


if __name__ == "__main__":
    main()
