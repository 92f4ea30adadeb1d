"""No lost strokes in the browser app: Paint chosen, a quick stroke and Score clicked at once, with no wait in
between, scores the stroke's voxels (web/input_order.py keeps the page's input in the user's order).

The server is made slow at handling view events (a sitecustomize on the server's PYTHONPATH only, for this test:
every mouse event of a view takes VIEW_EVENT_DELAY_S), as a loaded machine is: without the ordered queue the Score
click overtakes the stroke's release, where Paint applies, and Score says the segment is empty.
"""

from __future__ import annotations

import os

import pytest
from web_harness import (
    REPO,
    axial_view_box,
    browser_page,
    choose_effect,
    choose_option,
    open_demo,
    require_browser,
    wait_idle,
    web_server,
)

from DFM50NLib.scene.params import CHOICE_LABELS

VIEW_EVENT_DELAY_S = 0.3
SLOW_VIEW_EVENTS = f"""
import time

from trame_rca import view_adapter

_handle = view_adapter.RcaViewAdapter.on_interaction


def _slow(self, origin, event):
    time.sleep({VIEW_EVENT_DELAY_S})  # the event loop is blocked, as by a render on a loaded machine
    return _handle(self, origin, event)


view_adapter.RcaViewAdapter.on_interaction = _slow
"""


@pytest.fixture()
def slow_server_url(tmp_path, random_weights):
    require_browser()
    site = tmp_path / "slow_view_events"
    site.mkdir()
    (site / "sitecustomize.py").write_text(SLOW_VIEW_EVENTS)
    path = os.pathsep.join(p for p in (str(site), str(REPO), os.environ.get("PYTHONPATH", "")) if p)
    with web_server(tmp_path, "--weights", str(random_weights), env={"PYTHONPATH": path}) as url:
        yield url


def segment_ids(page):
    return page.evaluate(
        "() => (window.trame.state.get('dfm_segments') || []).map((s) => s.value)",
    )


def add_segment(page):
    """A new segment, chosen for Score (the server made it the active one)."""
    before = segment_ids(page)
    page.locator("button:has(.mdi-plus)").first.click()
    page.wait_for_function(
        "(before) => { const id = window.trame.state.get('dfm_segment_id'); return id && !before.includes(id); }",
        arg=before,
    )
    return page.evaluate("window.trame.state.get('dfm_segment_id')")


def quick_stroke(page, start, end):
    """Press, five moves, release: no pause anywhere (a radiologist's flick, or a test's)."""
    page.mouse.move(*start)
    page.mouse.down()
    page.mouse.move(*end, steps=5)
    page.mouse.up()


def test_paint_stroke_and_score_at_once_scores_the_stroke(slow_server_url, tmp_path):
    with browser_page(slow_server_url, 1280, 800) as page:
        open_demo(page)
        box = axial_view_box(page)
        at = lambda fx, fy: (box["x"] + fx * box["width"], box["y"] + fy * box["height"])

        # Score deactivates the effect, so each round chooses Paint: 'awaited' waits until the server made it the
        # active tool; 'at once' strokes right after the click (the tool switches on the server later) and makes
        # the clinical choices (state changes) right before Score; 'same breath' clicks Score from the page's own
        # script a few milliseconds after the release, before trame-rca's view queue has handed the release over
        for round_, (y, how) in enumerate(((0.45, "awaited"), (0.55, "at once"), (0.35, "same breath"))):
            segment = add_segment(page)
            wait_idle(page)
            if how == "awaited":
                choose_effect(page, "mdi-brush")
            else:
                page.locator(".v-card-item button:has(.mdi-brush)").first.click()
            quick_stroke(page, at(0.40, y), at(0.55, y))
            if how == "same breath":
                page.evaluate("document.getElementById('dfm-score').click()")
            else:
                if how == "at once":
                    for field, param, value in (("smoking", "smoking", "yes"), ("spiculated", "spiculation", "no")):
                        choose_option(page, field, CHOICE_LABELS[param][value])
                page.click("#dfm-score")
            page.wait_for_selector("#dfm-message:text-is('Done'), #dfm-error", timeout=240_000)
            page.screenshot(path=str(tmp_path / f"stroke-scored-{round_}.png"))
            assert page.locator("#dfm-error").count() == 0, page.inner_text("#dfm-error")
            assert page.get_attribute("#dfm-result", "id") and segment in page.evaluate(
                "window.trame.state.get('dfm_result').key"
            )
            scored = int(page.get_attribute("#dfm-lesion", "data-voxels"))

            if how == "at once":  # the choices made right before Score were part of it
                assert page.locator("#dfm-combined").count() == 1, "Score ran without the choices made before it"
                assert "smoking yes, spiculated no" in page.inner_text("#dfm-combined")

            # once everything sent has been handled, the segment holds exactly what was scored: nothing came late
            wait_idle(page, 1500)
            drawn = int(page.get_attribute("#dfm-segment-voxels", "data-voxels"))
            stats = page.evaluate("({...window.dfmInputOrder, pending: window.dfmInputOrder.pending()})")
            print(f"round {round_}: scored {scored} voxels, {drawn} drawn once idle; input queue {stats}")
            assert scored == drawn
            # the brush (5 % of the view height) swept 15 % of the view's width: far more than a dab at one end
            assert drawn > 300, drawn
