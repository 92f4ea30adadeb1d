"""Benchmark of one browser session's memory (not a test): prints the figures of one run.

    python Testing/Benchmarks/benchmark_web_session.py [--weights PATH] [--slices 150]

Starts `python -m DFM50NLib web` (wslink's launcher), opens the page in Debian's headless chromium (one
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
    args = ap.parse_args(argv)
    from test_web_sessions import _session_of
    from web_harness import browser_page, score_and_wait, wait_for_views, wait_idle, web_server

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
            pid = _session_of(work)
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
