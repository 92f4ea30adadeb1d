"""The browser app with a keyboard and a screen reader, in Chromium: axe-core (npm, Testing/package.json) finds no
serious or critical violation; every visible control has an accessible name; Score is one Tab (the skip link) and
Enter away; the focused control shows a wide amber ring; no label of the panel is cut."""

from __future__ import annotations

from pathlib import Path

import pytest
from web_harness import browser_page, open_demo, require_browser, wait_idle, web_server

AXE = Path(__file__).resolve().parents[1] / "node_modules" / "axe-core" / "axe.min.js"

UNNAMED_CONTROLS = """() => {
  const visible = (el) => { const r = el.getBoundingClientRect(); return r.width > 0 && r.height > 0; };
  const named = (el) => {
    if ((el.getAttribute('aria-label') || el.getAttribute('title') || el.getAttribute('alt') || '').trim()) return true;
    const by = (el.getAttribute('aria-labelledby') || '').split(/\\s+/).filter(Boolean);
    if (by.some((id) => document.getElementById(id)?.textContent.trim())) return true;
    if (el.id && document.querySelector(`label[for="${el.id}"]`)?.textContent.trim()) return true;
    const role = el.getAttribute('role');
    return !['INPUT', 'IMG'].includes(el.tagName) && !['slider', 'progressbar'].includes(role)
      && el.textContent.trim().length > 0;
  };
  const controls = Array.from(document.querySelectorAll(
    'button, a[href], input:not([type=hidden]), [role=button], [role=slider], [role=combobox], img'))
    .filter(visible);
  const unnamed = controls.filter((el) => !named(el)).map((el) => el.outerHTML.slice(0, 160));
  return { total: controls.length, unnamed };
}"""


@pytest.fixture()
def page(tmp_path, random_weights):
    require_browser()
    if not AXE.is_file():
        pytest.skip(f"{AXE} is missing: run `npm ci --prefix Testing` (.ci/run does; under CI this skip fails)")
    with (
        web_server(tmp_path, "--weights", str(random_weights)) as url,
        browser_page(url, 1280, 800) as page,
    ):
        open_demo(page)
        wait_idle(page, 1000)
        yield page


def axe_violations(page, impacts=("serious", "critical")):
    page.add_script_tag(path=str(AXE))
    found = page.evaluate(
        """async () => (await axe.run(document)).violations.map((v) => ({
             id: v.id, impact: v.impact, nodes: v.nodes.map((n) => n.target.join(' ')) }))"""
    )
    return [v for v in found if v["impact"] in impacts]


def test_axe_finds_no_serious_violation_and_every_control_is_named(page, tmp_path):
    page.screenshot(path=str(tmp_path / "a11y-demo.png"))
    assert axe_violations(page) == []
    controls = page.evaluate(UNNAMED_CONTROLS)
    assert controls["total"] > 40, controls  # the editor, toolbar, views and panel controls were all looked at
    assert controls["unnamed"] == []
    names = page.evaluate(
        "Array.from(document.querySelectorAll('button[aria-label]')).map((b) => b.getAttribute('aria-label'))"
    )
    for expected in ("Paint", "Erase", "Add Segment", "Undo", "Reset Camera", "Open segment editor"):
        assert expected in names, names
    alts = page.evaluate("Array.from(document.querySelectorAll('img.image-display-area')).map((i) => i.alt)")
    assert sorted(alts) == ["3D view", "Axial view", "Coronal view", "Sagittal view"]

    # the same with the Paint tool's options open (more controls: brush size slider)
    page.locator(".v-card-item button:has(.mdi-brush)").first.click()
    page.wait_for_selector(".v-card-item button.v-btn--active:has(.mdi-brush)")
    wait_idle(page, 500)
    assert axe_violations(page) == []
    assert page.evaluate(UNNAMED_CONTROLS)["unnamed"] == []


def test_score_is_one_tab_away_and_focus_is_visible(page, tmp_path):
    # focus back at the page's start, as after loading it, with the case kept open (a reload would start a new
    # private session): focusing <body> moves the sequential focus navigation starting point there
    page.evaluate(
        "(() => { document.body.tabIndex = -1; document.body.focus(); document.body.removeAttribute('tabindex'); })()"
    )
    page.wait_for_selector("#dfm-score:not([disabled])")
    presses = 0
    while page.evaluate("document.activeElement?.id") != "dfm-score" and presses < 5:
        page.keyboard.press("Tab")
        presses += 1
        if page.evaluate("document.activeElement?.textContent.trim()") == "Skip to Score":
            page.screenshot(path=str(tmp_path / "a11y-skip-link.png"))
            assert page.is_visible("a.dfm-skip-link:focus")  # shown when focused
            page.keyboard.press("Enter")
    assert page.evaluate("document.activeElement?.id") == "dfm-score"
    assert presses == 1  # <= 5 asked; the skip link is the first stop
    page.screenshot(path=str(tmp_path / "a11y-score-focused.png"))
    ring = page.evaluate(
        "(() => { const s = getComputedStyle(document.activeElement);"
        " return [s.outlineStyle, parseFloat(s.outlineWidth), s.outlineColor]; })()"
    )
    assert ring[0] == "solid" and ring[1] >= 3 and ring[2] == "rgb(255, 179, 0)", ring
    page.keyboard.press("Enter")  # Score by keyboard
    page.wait_for_selector("#dfm-message:text-is('Done')", timeout=240_000)


def test_no_label_in_the_panel_is_cut(page):
    cut = page.evaluate(
        """Array.from(document.querySelectorAll('#dfm-panel .v-label, #dfm-panel .v-btn__content'))
             .filter((el) => el.getBoundingClientRect().width > 0 && el.scrollWidth > el.clientWidth + 1)
             .map((el) => el.textContent.trim())"""
    )
    assert cut == []
    labels = page.evaluate(
        "Array.from(document.querySelectorAll('#dfm-panel .v-label')).map((el) => el.textContent.trim())"
    )
    assert "Upload a CT" in labels and "Short axis (cm); empty: measured" in labels
