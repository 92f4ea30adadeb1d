"""The browser app with a PACS/RT case: a zipped DICOM CT and its RTSTRUCT uploaded through the page score
exactly as the command line scores the same files; the imported ROIs are editable segments; an edit turns the
result card stale at once, the reports are refused until the lesion is scored again, and the PDF then
describes the edited lesion only; a DICOM-SEG comes in segment by segment as well."""

from __future__ import annotations

import os
import re
import subprocess
import zipfile
from pathlib import Path

import numpy as np
from test_dicomseg import ct_datasets, make_seg
from test_rtstruct import contours_of, write_rtstruct
from web_harness import browser_page, choose_effect, paint, painted_voxels, require_browser, wait_idle, web_server

SCRIBBLE = [(x, y) for y in (0.35, 0.45, 0.55, 0.65) for x in (0.15, 0.85)]  # crosses the whole axial view


def dicom_case_with_rtstruct(tmp_path):
    """The demo CT as a zipped DICOM series, an RTSTRUCT with two ROIs drawn on it: the demo lesion ('GTV-1')
    and a small box ('Node 4R'), and a DICOM-SEG of the same two ('SEG lesion', 'SEG node')."""
    from DFM50NLib.io import read_volume
    from DFM50NLib.io.demo_case import write_demo_case

    ct_path, mask_path = write_demo_case(tmp_path / "case")
    ct, mask = read_volume(ct_path), read_volume(mask_path)
    folder = tmp_path / "dicom"
    folder.mkdir()
    sources = ct_datasets(ct)
    for k, ds in enumerate(sources):
        ds.save_as(str(folder / f"ct{k:03d}.dcm"), enforce_file_format=True)
    archive = tmp_path / "LUNG_CT.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        for f in sorted(folder.iterdir()):
            zf.write(f, f"export/{f.name}")
    node = np.zeros(mask.shape, np.uint8)
    node[5:9, 6:11, 8:12] = 1
    lesion = (np.asarray(mask.array) > 0).astype(np.uint8)
    rois = {"GTV-1": contours_of(lesion, ct.ijk_to_ras), "Node 4R": contours_of(node, ct.ijk_to_ras)}
    rs = write_rtstruct(tmp_path / "RS_case.dcm", sources, rois)
    segs = {"SEG lesion": lesion, "SEG node": node}
    make_seg(sources, segs, tmp_path / "SEG_case.dcm", order=list(range(ct.shape[2])))
    return folder, archive, rs, ct


def pdf_text(page, tmp_path, name):
    with page.expect_download() as dl:
        page.click("#dfm-report-pdf")
    path = tmp_path / name
    dl.value.save_as(path)
    assert path.read_bytes()[:5] == b"%PDF-"
    return subprocess.run(["pdftotext", str(path), "-"], capture_output=True, text=True, check=True).stdout


def volumes_in(text) -> set:
    return {int(v.replace(",", "")) for v in re.findall(r"([\d,]+) mm³", text)}


def test_dicom_ct_and_rtstruct_score_as_the_cli_and_an_edit_makes_the_result_stale(tmp_path, random_weights):
    require_browser()
    from DFM50NLib.scoring.pipeline import score_case

    folder, archive, rs, ct = dicom_case_with_rtstruct(tmp_path)
    seg_path = tmp_path / "SEG_case.dcm"
    threads = {"OMP_NUM_THREADS": "2", "MKL_NUM_THREADS": "2"}  # the server's torch, as this process's
    with (
        web_server(tmp_path, "--weights", str(random_weights), env=threads) as url,
        browser_page(url, width=1280, height=800) as page,
    ):
        page.set_input_files("#dfm-upload", str(archive))
        page.wait_for_selector("#dfm-case:has-text('LUNG_CT.zip')", timeout=120_000)
        page.set_input_files("#dfm-upload-lesion", str(rs))
        titles = "() => (window.trame.state.get('dfm_segments') || []).map(s => s.title)"
        page.wait_for_function(f"({titles})().length === 2")
        assert page.evaluate(titles) == ["GTV-1", "Node 4R"]  # each ROI under its own name, in file order
        # the segment editor lists them as it lists drawn ones (before the fix it showed only '+ ADD SEGMENT')
        listed = (
            "() => trame.state.get('SegmentEditorState__segment_list__SegmentListState__segments').map(s => s.name)"
        )
        assert page.evaluate(listed) == ["GTV-1", "Node 4R"]
        assert page.locator(".mdi-delete-outline").count() == 2  # two rows, each with its delete button
        names = page.locator("input").evaluate_all("els => els.filter(e => e.offsetParent).map(e => e.value)")
        assert "Node 4R" in names  # the editor's rows show the names (the panel's list shows GTV-1 only)
        page.wait_for_selector("#dfm-segment-voxels:not([data-voxels='0'])")  # counted after the list (a refresh)
        gtv_voxels = painted_voxels(page)
        page.click("#dfm-score")
        page.wait_for_selector("#dfm-message:text-is('Done')", timeout=300_000)
        page_score = float(page.get_attribute("#dfm-score-value", "data-score"))
        page_voxels = int(page.get_attribute("#dfm-lesion", "data-voxels"))
        assert page.inner_text("#dfm-result-segment") == "GTV-1"
        assert page.get_attribute("#dfm-score-value", "data-stale") == "0"
        wait_idle(page, quiet_ms=1500)
        shots = Path(os.environ.get("DFM50N_WEB_SHOTS") or tmp_path)
        page.screenshot(path=str(shots / "web-dicom-rtstruct.png"))
        first_pdf = pdf_text(page, tmp_path, "first.pdf")
        # the command line on the same files: the unzipped series and the RTSTRUCT, the same ROI
        want = score_case(folder, rs, segment="GTV-1", weights=random_weights)
        assert page_voxels == want.mask_voxels and gtv_voxels >= want.mask_voxels
        assert page_score == want.score  # exact
        voxel_mm3 = float(np.prod(ct.spacing))
        assert f"{want.score:.3f}" in first_pdf
        assert round(want.mask_voxels * voxel_mm3) in volumes_in(first_pdf)

        # an edit of the imported GTV with the brush (editable as a drawn segment): the card is stale at once
        choose_effect(page, "mdi-brush")
        edited = paint(page, SCRIBBLE)
        assert edited > gtv_voxels
        page.wait_for_selector("#dfm-result-stale", timeout=10_000)
        assert page.get_attribute("#dfm-score-value", "data-stale") == "1"
        # the report of the old score would show the new contour: refused, saying why
        page.click("#dfm-report-pdf")
        page.wait_for_selector("text=was edited after it was scored", timeout=30_000)
        page.click("#dfm-score")
        page.wait_for_selector("#dfm-message:text-is('Done')", timeout=300_000)
        page.wait_for_selector("#dfm-result-stale", state="detached")
        new_score = float(page.get_attribute("#dfm-score-value", "data-score"))
        new_voxels = int(page.get_attribute("#dfm-lesion", "data-voxels"))
        assert new_voxels > page_voxels  # the scribble joined the lesion
        second_pdf = pdf_text(page, tmp_path, "second.pdf")
        # a DICOM-SEG of the same CT: its segments come in under their own names too, voxel for voxel
        page.set_input_files("#dfm-upload-lesion", str(seg_path))
        page.wait_for_function(f"({titles})().length === 4")
        assert page.evaluate(titles) == ["GTV-1", "Node 4R", "SEG lesion", "SEG node"]
        page.wait_for_selector(f"#dfm-segment-voxels[data-voxels='{want.mask_voxels}']")  # 'SEG lesion' chosen
    assert f"{new_score:.3f}" in second_pdf
    volumes = volumes_in(second_pdf)
    assert round(new_voxels * voxel_mm3) in volumes and round(want.mask_voxels * voxel_mm3) not in volumes
    print(
        f"RTSTRUCT on the page: {page_score!r} == CLI {want.score!r}, {page_voxels} voxels; after the edit "
        f"{new_voxels} voxels, {new_score:.4f}"
    )
