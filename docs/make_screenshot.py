"""Regenerate docs/screenshot.png: the report the Slicer panel opens, for the demo phantom, rendered by Chromium.

This is a capture of real output, not a mock-up: the Slicer-side code path (Sample Data demo phantom ->
PanelPresenter.apply -> background job -> table -> PanelPresenter.writeReport) runs on a slicer-core MRML
scene, and headless Chromium photographs the HTML report it wrote. Without the published FCIB weights
(738 MB, not in this repository) pass the random-weight test checkpoint; the report then shows the
DEMO classifier banner and the weights' hash, exactly as the panel would.

    python docs/make_screenshot.py --weights ~/.cache/dfm50n-tests/fcib_random_seed0.torch
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def scene_with_logics():
    import slicer

    scene = slicer.vtkMRMLScene()
    for cls in (slicer.vtkSlicerVolumesLogic, slicer.vtkSlicerSegmentationsModuleLogic, slicer.vtkSlicerMarkupsLogic):
        cls().SetMRMLScene(scene)
    return scene


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--weights", required=True, help="FCIB weights (or the random-weight test checkpoint)")
    ap.add_argument("--out", default=str(ROOT / "docs" / "screenshot.png"))
    ap.add_argument("--chromium", default="/usr/bin/chromium")
    args = ap.parse_args(argv)

    from DFM50NLib.scene.logic import WEIGHTS_SETTING, DFM50NLogic
    from DFM50NLib.scene.presenter import MemorySettings, PanelPresenter
    from DFM50NLib.scene.sampledata import load_demo

    scene = scene_with_logics()
    ct, seg, segment_id = load_demo(scene)
    presenter = PanelPresenter(DFM50NLogic(scene), settings=MemorySettings({WEIGHTS_SETTING: args.weights}))
    presenter.params.inputVolume = ct
    presenter.selectSegment(seg, segment_id)
    presenter.setParameter("device", "cpu")
    presenter.apply()
    view = presenter.wait(600)
    if presenter.takeError() or not view.result_lines:
        raise SystemExit(f"scoring failed: {view.status} {view.error}")
    folder = Path(tempfile.mkdtemp(prefix="dfm50n-screenshot-"))
    html = presenter.writeReport(folder)["report_html"]
    cmd = [
        args.chromium,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--hide-scrollbars",
        f"--screenshot={args.out}",
        "--window-size=1100,1400",
        html.as_uri(),
    ]
    subprocess.run(cmd, check=True, capture_output=True, timeout=120)
    print(f"{args.out}: report of {view.result_lines[0].segment}, score {view.result_lines[0].score:.3f}")


if __name__ == "__main__":
    main()
