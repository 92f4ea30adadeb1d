"""The report reads for a clinician: plain words before technical terms, the two voxel counts named for what
they are, the DFM50N / combined-model disagreement explained, and the out-of-population flag everywhere."""

from __future__ import annotations

import html
import re

import pytest
from test_report import build_case, make_result

from DFM50NLib.report import text as rt
from DFM50NLib.report.writer import report_html_minimal, write_report
from DFM50NLib.scoring.clinical import apply_clinical
from DFM50NLib.scoring.pipeline import population_warnings


def visible_text(page: str) -> str:
    """The words a reader sees: tags, styles and embedded images removed, entities decoded."""
    page = re.sub(r"<style>.*?</style>", " ", page, flags=re.S)
    page = re.sub(r'src="data:[^"]*"', "", page)
    return html.unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", page)))


@pytest.fixture(scope="module")
def case():
    return build_case()


def disagreeing(result):
    """DFM50N high (0.312) but combined negative: a smoker, spiculated, short axis 4 cm (p = 0.234 < 0.254)."""
    apply_clinical(result, smoking="yes", spiculated="yes", short_axis_cm=4.0)
    assert result.high_risk and result.combined_positive is False
    return result


def test_plain_words_come_first_and_technical_terms_only_in_the_appendix(case, tmp_path):
    r = case["result"]
    path = write_report(r, tmp_path, ct=case["ct"], prepared_mask=case["pm"], cube=case["cube"], formats="html")
    text = visible_text(path["report_html"].read_text(encoding="utf-8"))
    appendix = text.index("Technical appendix")
    first = text[:appendix]
    assert "What this means" in first and "deepest point inside the lesion" in first
    for term in ("dt_peak", "SHA-256", "RAS", "LPS", "Timings", "forward"):
        assert term not in first, term
        assert term in text[appendix:], term
    # the two counts, labelled for what they are, with the real numbers
    assert f"Lesion volume on the CT grid {r.mask_voxels:,} CT voxels" in first
    assert f"Lesion samples in the 1 mm cube {r.cube_mask_voxels:,} of 125,000" in first
    assert "Mask voxels" not in text and "Lesion samples in cube" not in text


def test_disagreement_is_explained_with_its_source(case, tmp_path):
    r = disagreeing(make_result())
    note = rt.disagreement_note(r)
    assert "The two models disagree" in note and "docs/METHOD.md" in note and "0.25 threshold" in note
    assert note in rt.plain_summary(r)
    text = visible_text(write_report(r, tmp_path, formats="html")["report_html"].read_text(encoding="utf-8"))
    assert "The two models disagree" in text and "does not predict occult lymph-node metastasis" in text
    assert "The two models disagree" in visible_text(report_html_minimal(r))
    # agreeing models: no such paragraph
    agree = make_result()
    apply_clinical(agree, smoking="no", spiculated="no", short_axis_cm=1.5)
    assert agree.combined_positive and rt.disagreement_note(agree) is None


def test_out_of_population_is_flagged_in_result_box_report_and_slicer_text(case, tmp_path):
    r = make_result(long_axis_mm=62.0, coverage=0.9)
    r.warnings += population_warnings(r.long_axis_mm, r.coverage)
    assert rt.out_of_population(r)
    page = write_report(r, tmp_path, formats="html")["report_html"].read_text(encoding="utf-8")
    text = visible_text(page)
    assert "OUT OF POPULATION: see warnings" in text
    assert "Out of population: its longest diameter is 62 mm (more than 50 mm) and only 90.0% of it" in text
    assert '<li class="oop">' in page
    assert "OUT OF POPULATION" in visible_text(report_html_minimal(r))
    plain = make_result()
    assert not rt.out_of_population(plain) and "OUT OF POPULATION" not in visible_text(report_html_minimal(plain))


def test_pdf_carries_the_plain_summary_and_the_appendix(case, tmp_path):
    import shutil
    import subprocess

    if not shutil.which("pdftotext"):
        pytest.skip("pdftotext (poppler-utils, installed by .ci/run) not on PATH")
    r = disagreeing(case["result"])
    r.warnings += population_warnings(55.0, 1.0)
    pdf = write_report(r, tmp_path, ct=case["ct"], prepared_mask=case["pm"], cube=case["cube"], formats="pdf")
    out = subprocess.run(["pdftotext", str(pdf["report_pdf"]), "-"], capture_output=True, text=True, check=True)
    page1, page2 = out.stdout.split("\f")[:2]
    assert "WHAT THIS MEANS" in page1 and "The two models disagree" in page1
    assert "OUT OF POPULATION" in page1 and "deepest point inside the lesion" in page1
    assert "SHA-256" not in page1 and "dt_peak" not in page1
    assert "Technical appendix" in page2 and "dt_peak" in page2 and "SHA-256" in page2


def test_pdf_words_stay_on_the_page_and_never_overlap(case, tmp_path):
    """Read back with poppler's word boxes: a long value (the unverified-weights sentence) wraps inside its column
    instead of running off the page, and the technical appendix ends above the footer instead of under it."""
    import subprocess

    r = case["result"]
    r.fcib_weights = (
        f"FCIB weights: unverified file sha256 {'7d45e408' * 8} (no publisher checksum is stored beside it: only "
        "files fetched with `weights download` can be checked); the score may not be the published model's"
    )
    pdf = write_report(r, tmp_path, ct=case["ct"], prepared_mask=case["pm"], cube=case["cube"], formats="pdf")
    out = subprocess.run(
        ["pdftotext", "-bbox", str(pdf["report_pdf"]), "-"], capture_output=True, text=True, check=True
    ).stdout
    pages = re.findall(r'<page width="([\d.]+)" height="([\d.]+)">(.*?)</page>', out, flags=re.S)
    assert len(pages) == 2
    word = re.compile(r'<word xMin="([\d.]+)" yMin="([\d.]+)" xMax="([\d.]+)" yMax="([\d.]+)">([^<]*)</word>')
    for n, (width, _height, body) in enumerate(pages, start=1):
        boxes = []
        for m in word.finditer(body):
            x0, y0, x1, y1 = map(float, m.groups()[:4])
            # poppler's boxes span the font's whole ascent and descent: compare the glyph bodies (the middle
            # 30 % of a line's height), so big type over a small heading does not count, two lines on top of
            # each other do
            boxes.append((x0 + 0.5, y0 + 0.35 * (y1 - y0), x1 - 0.5, y1 - 0.35 * (y1 - y0), m.group(5), x1))
        assert len(boxes) > 100
        outside = [b[4] for b in boxes if b[5] > float(width) or b[0] < 0]
        assert outside == [], f"page {n}: words off the page: {outside[:5]}"
        overlaps = [
            (a[4], b[4])
            for i, a in enumerate(boxes)
            for b in boxes[i + 1 :]
            if a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]
        ]
        assert overlaps == [], f"page {n}: overlapping words: {overlaps[:5]}"
    assert "unverified" in pages[1][2]
