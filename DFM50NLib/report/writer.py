"""Per-case and cohort reports: self-contained HTML (base64 PNGs) and A4 PDF (matplotlib).

People look before they read: the score against its threshold, the lesion contour and the
50 mm cube on the CT, what the model actually saw, then every number needed to audit it.
Everything is drawn from what is given: in reference mode (cube only) the CT panels are skipped.
"""

from __future__ import annotations

import base64
import html
import statistics
from pathlib import Path

from DFM50NLib import atomic
from DFM50NLib.atomic import safe_stem
from DFM50NLib.constants import COMBINED_THRESHOLD, DEMO_LABEL, DISCLAIMER
from DFM50NLib.errors import InputError
from DFM50NLib.report import text as rt

FORMATS = ("html", "pdf")
FOV_MM = 120.0  # field of view of the CT planes around the lesion


def write_report(
    result, out_dir, *, ct=None, prepared_mask=None, cube=None, stability=None, diameters=None, formats=FORMATS
) -> dict:
    """Write `<case_id>_report.html` / `.pdf` into `out_dir`; returns {"report_html": Path, ...}.

    `ct` (Volume), `prepared_mask` (PreparedMask), `cube` (Cube), `stability` (StabilityResult) and
    `diameters` (Diameters, measured from the mask when absent) are all optional.
    """
    formats = _check_formats(formats)
    views = build_views(result, ct=ct, prepared_mask=prepared_mask, cube=cube, diameters=diameters)
    out_dir = Path(out_dir)
    stem = safe_stem(result.case_id)
    paths = {}
    if "html" in formats:
        paths["report_html"] = atomic.write_text(out_dir / f"{stem}_report.html", case_html(result, views, stability))
    if "pdf" in formats:
        from DFM50NLib.report.pdf import write_case_pdf

        paths["report_pdf"] = Path(
            write_case_pdf(
                out_dir / f"{stem}_report.pdf",
                result,
                views["ct"],
                views["cube"],
                views["measure"],
                stability,
                views["diameters"],
            )
        )
    return paths


def build_views(result, *, ct=None, prepared_mask=None, cube=None, diameters=None) -> dict:
    """The numeric pictures (report_views.PlaneView) for whatever inputs are present."""
    from DFM50NLib.report import views as rv

    mask_vol = getattr(prepared_mask, "volume", None)
    if diameters is None and prepared_mask is not None:
        diameters = _measure(prepared_mask)
    cube_to_ras = getattr(cube, "cube_to_ras", None)
    if cube_to_ras is None and result.cube_to_ras:
        cube_to_ras = result.cube_to_ras
    center = result.center_ras if result.center_ras else rv.cube_center_ras(cube_to_ras)
    ct_views = []
    if ct is not None or mask_vol is not None:
        ct_views = rv.ct_planes(
            center,
            ct=ct,
            mask_vol=mask_vol,
            cube_to_ras=cube_to_ras,
            cube_mask=getattr(cube, "mask", None),
            fov_mm=FOV_MM,
        )
    cube_views = [] if cube is None else rv.cube_views(cube.ct, getattr(cube, "mask", None), cube.cube_to_ras)
    measure = None
    if diameters is not None:
        measure = rv.measurement_view(diameters, ct=ct, mask_vol=mask_vol)
    return {"ct": ct_views, "cube": cube_views, "measure": measure, "diameters": diameters}


def _measure(prepared_mask):
    from DFM50NLib.geometry.diameters import axial_diameters

    try:
        return axial_diameters(prepared_mask)
    except InputError:
        return None


def _check_formats(formats):
    if isinstance(formats, str):
        formats = (formats,)
    formats = tuple(str(f).lower().lstrip(".") for f in formats)
    bad = [f for f in formats if f not in FORMATS]
    if bad or not formats:
        raise InputError(f"Unknown report format(s) {bad or formats!r}: use 'html' and/or 'pdf'.")
    return formats


# ---------------------------------------------------------------- HTML


def esc(text) -> str:
    return html.escape(str(text), quote=True)


def png_data_uri(fig, dpi=150) -> str:
    from DFM50NLib.report.figures import to_png

    return "data:image/png;base64," + base64.b64encode(to_png(fig, dpi)).decode("ascii")


def _img(fig, alt, dpi=150) -> str:
    return f'<img src="{png_data_uri(fig, dpi)}" alt="{esc(alt)}">'


CSS = """
@page { size: A4; margin: 12mm 13mm 14mm 13mm; }
* { box-sizing: border-box; }
body { font-family: "Helvetica Neue", Helvetica, Arial, "Liberation Sans", "DejaVu Sans", sans-serif;
  color: #1c1c1e; font-size: 9.5pt; line-height: 1.35; margin: 0 auto; max-width: 184mm; padding: 8mm 0;
  -webkit-print-color-adjust: exact; print-color-adjust: exact; }
header { display: flex; justify-content: space-between; align-items: flex-end;
  border-bottom: 1.5px solid #8e8e93; padding-bottom: 4px; margin-bottom: 8px; }
header h1 { font-size: 19pt; margin: 0; letter-spacing: -0.3px; }
header .sub { color: #6e6e73; font-size: 8.5pt; }
header .case { text-align: right; } header .case b { font-size: 11pt; }
.banner { background: #b3261e; color: #fff; font-weight: 700; text-align: center; padding: 5px 8px;
  border-radius: 4px; margin: 6px 0 8px; letter-spacing: 0.2px; }
.scorebox { display: grid; grid-template-columns: 44mm 1fr; gap: 4mm; align-items: center;
  border: 1px solid #e5e5ea; border-radius: 6px; padding: 6px 10px; }
.score { font-size: 34pt; font-weight: 700; line-height: 1; }
.risk { font-size: 12pt; font-weight: 700; letter-spacing: 0.4px; margin-top: 4px; }
.muted { color: #6e6e73; }
.label { font-size: 7.5pt; font-weight: 700; color: #6e6e73; letter-spacing: 0.6px; text-transform: uppercase; }
h2 { font-size: 8pt; font-weight: 700; color: #6e6e73; letter-spacing: 0.6px; text-transform: uppercase;
  margin: 12px 0 4px; border-bottom: 1px solid #d1d1d6; padding-bottom: 2px; }
img { width: 100%; display: block; }
.grid2 { display: grid; grid-template-columns: 1fr 1fr; column-gap: 8mm; }
table { border-collapse: collapse; width: 100%; }
table.kv td { padding: 2px 4px; border-bottom: 1px solid #ececf0; vertical-align: top; }
table.kv td:first-child { color: #6e6e73; width: 48%; }
td.mono, .mono { font-family: "DejaVu Sans Mono", Menlo, Consolas, monospace; font-size: 8pt;
  word-break: break-all; }
.warnings { background: #fff4e5; border-left: 4px solid #b25000; padding: 5px 10px; margin: 8px 0;
  color: #7a3a00; }
.warnings ul { margin: 2px 0; padding-left: 16px; }
.measure { display: grid; grid-template-columns: 62mm 1fr; column-gap: 6mm; align-items: start; }
table.cases th { text-align: left; font-size: 8pt; color: #6e6e73; border-bottom: 1.5px solid #8e8e93;
  padding: 3px 4px; }
table.cases td { padding: 2px 4px; border-bottom: 1px solid #ececf0; }
table.cases th, table.cases td:nth-child(-n+6) { white-space: nowrap; }
table.cases tr:nth-child(even) td { background: #f5f5f8; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
.high { color: #b3261e; font-weight: 700; } .low { color: #1e6b34; font-weight: 700; }
.meaning { margin: 8px 0 4px; } .meaning p { margin: 3px 0; font-size: 10pt; }
.meaning h2 { margin-top: 4px; }
.warnings li.oop { color: #b3261e; font-weight: 700; }
.oopflag { color: #fff; background: #b3261e; font-weight: 700; font-size: 8pt; padding: 2px 5px;
  border-radius: 3px; margin-top: 4px; display: inline-block; }
h2.appendix-title { font-size: 10pt; color: #1c1c1e; border-bottom: 1.5px solid #8e8e93; }
footer { border-top: 1px solid #d1d1d6; margin-top: 12px; padding-top: 4px; font-size: 7.5pt; color: #6e6e73; }
footer .disclaimer { color: #b3261e; font-weight: 700; font-size: 8.5pt; }
.pagebreak { break-before: page; page-break-before: always; }
figure { margin: 0; break-inside: avoid; }
figcaption { font-size: 7.5pt; color: #6e6e73; margin-top: 2px; }
@media print { body { padding: 0; } }
"""


def _page(title, body) -> str:
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta name="viewport" content="width=device-width, initial-scale=1"><title>{esc(title)}</title>'
        f"<style>{CSS}</style></head><body>\n{body}\n</body></html>\n"
    )


def _kv_table(rows, mono=False) -> str:
    cls = ' class="mono"' if mono else ""
    trs = "".join(f"<tr><td>{esc(k)}</td><td{cls}>{esc(v)}</td></tr>" for k, v in rows)
    return f'<table class="kv">{trs}</table>'


def _header(title, sub, case_line, date_line) -> str:
    return (
        f'<header><div><h1>{esc(title)}</h1><div class="sub">{esc(sub)}</div></div>'
        f'<div class="case"><b>{esc(case_line)}</b><br><span class="muted">{esc(date_line)}</span></div>'
        "</header>"
    )


def _footer(version_line) -> str:
    return f'<footer><div class="disclaimer">{esc(DISCLAIMER)}</div><div>{esc(version_line)}</div></footer>'


def case_html(result, views, stability=None) -> str:
    from DFM50NLib.report import figures as rf

    color = rt.risk_color(result)
    parts = [
        _header(
            "DFM50N report",
            "Occult lymph-node metastasis risk · resectable early small-cell lung cancer · chest CT",
            f"Case {result.case_id}",
            rt.fmt_date(result.created),
        )
    ]
    if result.classifier_is_demo:
        parts.append(f'<div class="banner">{esc(DEMO_LABEL)} — scores are not clinically meaningful</div>')
    cmp = "≥" if result.high_risk else "<"
    parts.append(
        '<section class="scorebox"><div>'
        f'<div class="label">DFM50N score</div><div class="score" style="color:{color}">{result.score:.3f}</div>'
        f'<div class="risk" style="color:{color}">{esc(result.risk_label.upper())}</div>'
        f'<div class="muted">score {cmp} threshold {result.threshold:g}</div>'
        + ('<div class="oopflag">OUT OF POPULATION: see warnings</div>' if rt.out_of_population(result) else "")
        + "</div>"
        f"<div>{_img(rf.fig_score(result, 5.2), 'Score bar against the threshold')}"
        f'<div class="muted" style="margin-top:2px">{esc(rt.combined_summary(result))}</div></div></section>'
    )
    parts.append(
        '<section class="meaning"><h2>What this means</h2>'
        + "".join(f"<p>{esc(p)}</p>" for p in rt.plain_summary(result))
        + "</section>"
    )
    notes = rt.warnings_list(result)
    if notes:
        items = "".join(
            f'<li class="oop">{esc(n)}</li>' if rt.is_out_of_population(n) else f"<li>{esc(n)}</li>" for n in notes
        )
        parts.append(f'<div class="warnings"><b>Warnings</b><ul>{items}</ul></div>')
    if views["ct"]:
        parts.append("<h2>CT through the cube centre (120 mm field of view, lung window)</h2>")
        parts.append(
            f"<figure>{_img(rf.fig_views(views['ct']), 'Axial, coronal and sagittal CT')}"
            "<figcaption>Radiological display (patient right on the image left). Red: lesion contour; "
            "yellow dashed: the 50 mm cube the model sees; +: cube centre.</figcaption></figure>"
        )
    elif views["cube"]:
        parts.append('<p class="muted">No full CT available (e.g. reference geometry): only the cube is shown.</p>')
    secs = dict(rt.sections(result, views["diameters"]))
    parts.append('<div class="grid2"><div>')
    parts.append("<h2>Result</h2>" + _kv_table(secs["Result"]))
    parts.append("<h2>Clinical inputs</h2>" + _kv_table(secs["Clinical inputs"]))
    parts.append("</div><div>")
    parts.append("<h2>Lesion</h2>" + _kv_table(secs["Lesion"]))
    parts.append("<h2>Where the model looked</h2>" + _kv_table(secs["Where the model looked"]))
    parts.append("</div></div>")
    parts.append(
        '<p class="muted">Lesion volume on the CT grid counts the CT voxels inside the lesion outline; the '
        "model's cube samples the CT every 1 mm, so it holds one lesion sample per mm³ and the two counts "
        "differ whenever the CT voxels are not 1 mm³.</p>"
    )
    parts.append('<div class="pagebreak"></div>')
    if views["cube"]:
        parts.append("<h2>What the model sees: the 50 mm cube, middle slices</h2>")
        parts.append(
            f"<figure>{_img(rf.fig_views(views['cube'], legend=False), 'Cube middle slices')}"
            "<figcaption>The exact samples the model receives (only flipped or turned for display; "
            "the axis order is in the technical appendix). Red: lesion outline in the cube; +: the cube "
            "centre.</figcaption></figure>"
        )
    if views["measure"] is not None:
        d = views["diameters"]
        rows = [
            ("Long axis", f"{d.long_mm:.1f} mm"),
            ("Short axis", f"{d.short_mm:.1f} mm"),
            ("Measured on the axial slice at", f"{d.slice_s_mm:.1f} mm (head-foot)"),
            ("Lesion volume", f"{d.volume_mm3:.0f} mm³"),
            ("Pixel size measured on", f"{d.in_plane_spacing_mm:.2f} mm"),
            ("Resampled onto axial planes", rt.fmt_bool(d.resampled)),
        ]
        fig = rf.fig_views([views["measure"]], width=2.6, height=2.75, legend=False)
        parts.append("<h2>Axial diameters (RECIST-style)</h2>")
        parts.append(
            f'<div class="measure"><figure>{_img(fig, "Axial slice with long and short axis")}</figure>'
            f'<div>{_kv_table(rows)}<p class="muted">Long axis: longest in-plane diameter over the '
            "axial slices; short axis: longest diameter perpendicular to it on the same slice. The "
            "short axis (in cm) is the combined model's default input.</p></div></div>"
        )
    if stability is not None:
        parts.append("<h2>Stability under small perturbations</h2>")
        parts.append(f"<figure>{_img(rf.fig_stability(stability, result.threshold), 'Stability panel')}</figure>")
        parts.append(_kv_table(stability_rows(stability)))
    parts.append('<section class="appendix"><h2 class="appendix-title">Technical appendix</h2>')
    parts.append(
        '<p class="muted">For audit and reproduction: exact coordinates (RAS = Slicer\'s patient axes, LPS = '
        "DICOM's), the checksums identifying the model files, and how long each step took.</p>"
    )
    parts.append("<h2>Geometry (technical)</h2>" + _kv_table(secs["Geometry (technical)"]))
    parts.append("<h2>Model provenance</h2>" + _kv_table(secs["Model provenance"], mono=True))
    if "Inputs" in secs:
        parts.append("<h2>Inputs</h2>" + _kv_table(secs["Inputs"], mono=True))
    if "Timings" in secs:
        parts.append('<div class="grid2"><div><h2>Timings</h2>' + _kv_table(secs["Timings"]) + "</div></div>")
    parts.append("</section>")
    parts.append(
        _footer(
            f"DFM50N {result.software_version} · report generated from result created {rt.fmt_date(result.created)}"
        )
    )
    return _page(f"DFM50N report — {result.case_id}", "\n".join(parts))


def stability_rows(stab) -> list:
    rows = [
        ("Unperturbed score", f"{stab.base_score:.3f}"),
        ("Perturbed scores min / median / max", f"{stab.min:.3f} / {stab.median:.3f} / {stab.max:.3f}"),
        ("Cross the threshold", f"{stab.n_flipped} of {len(stab.perturbations)}"),
    ]
    if stab.warning:
        rows.append(("Warning", stab.warning))
    return rows


def report_html_minimal(result) -> str:
    """A small HTML fragment for Slicer's text node (Qt rich text: inline styles, simple tables)."""
    color = rt.risk_color(result)
    rows = [
        ("Threshold", f"{result.threshold:g}"),
        (
            "Combined clinical model",
            rt.NOT_REPORTED
            if result.combined_probability is None
            else f"{result.combined_probability:.3f} "
            f"({'OLM positive' if result.combined_positive else 'OLM negative'}, "
            f"cut-off {COMBINED_THRESHOLD})",
        ),
        ("Lesion inside the cube", f"{100 * result.coverage:.1f} %"),
        ("Cube centred on", rt.center_words(result.center_method)),
        ("Classifier", result.classifier_name),
    ]
    out = []
    if result.classifier_is_demo:
        out.append(
            f'<p style="background-color:#b3261e;color:white;font-weight:bold">&nbsp;{esc(DEMO_LABEL)}&nbsp;</p>'
        )
    out.append(
        f'<p><span style="font-size:large">DFM50N score <b style="color:{color}">{result.score:.3f}</b></span>'
        f' &nbsp; <b style="color:{color}">{esc(result.risk_label)}</b></p>'
    )
    if rt.out_of_population(result):
        out.append('<p style="color:#b3261e"><b>OUT OF POPULATION</b> (see the warning below)</p>')
    out.append("<table>" + "".join(f"<tr><td>{esc(k)}:&nbsp;</td><td>{esc(v)}</td></tr>" for k, v in rows) + "</table>")
    note = rt.disagreement_note(result)
    if note:
        out.append(f"<p>{esc(note)}</p>")
    for note in rt.warnings_list(result):
        out.append(f'<p style="color:#b25000">&#9650; {esc(note)}</p>')
    out.append(f'<p style="color:#b3261e"><i>{esc(DISCLAIMER)}</i></p>')
    return "\n".join(out)


# ---------------------------------------------------------------- cohort


def cohort_rows(results) -> list:
    rows = []
    for r in results:
        notes = rt.warnings_list(r)
        rows.append(
            {
                "case_id": str(r.case_id),
                "score": f"{r.score:.3f}",
                "risk": r.risk_label,
                "high_risk": bool(r.high_risk),
                "combined": "—" if r.combined_probability is None else f"{r.combined_probability:.3f}",
                "coverage": f"{100 * r.coverage:.0f} %",
                "demo": bool(r.classifier_is_demo),
                "warnings": "; ".join(notes),
                "notes": notes,
            }
        )
    return rows


def write_cohort_summary(results, out_dir, *, formats=FORMATS, n_failed=0) -> dict:
    """`cohort_summary.html` / `.pdf`: score histogram with the threshold line and a table of cases.

    `n_failed`: cases of the cohort that were not scored (errors.csv); both summaries say how many.
    """
    from DFM50NLib.report.pdf import write_cohort_pdf

    formats = _check_formats(formats)
    results = list(results)
    if not results:
        raise InputError("No results to summarise: score at least one case first.")
    thresholds = {float(r.threshold) for r in results}
    threshold = results[0].threshold
    rows = cohort_rows(results)
    out_dir = Path(out_dir)
    paths = {}
    if "html" in formats:
        paths["cohort_html"] = atomic.write_text(
            out_dir / "cohort_summary.html", cohort_html(results, rows, threshold, len(thresholds) > 1, n_failed)
        )
    if "pdf" in formats:
        paths["cohort_pdf"] = Path(write_cohort_pdf(out_dir / "cohort_summary.pdf", results, rows, threshold, n_failed))
    return paths


def cohort_html(results, rows, threshold, mixed_thresholds=False, n_failed=0) -> str:
    from DFM50NLib.report import figures as rf

    scores = [r.score for r in results]
    high = sum(r.high_risk for r in results)
    created = max((r.created for r in results if r.created), default="")
    parts = [
        _header(
            "DFM50N cohort summary",
            f"{len(results)} cases scored · {high} high risk (score ≥ {threshold:g}) · "
            f"median score {statistics.median(scores):.3f}"
            + (f" · {n_failed} case(s) failed, not shown (see errors.csv)" if n_failed else ""),
            f"{len(results)} cases",
            rt.fmt_date(created),
        )
    ]
    demo = sum(r.classifier_is_demo for r in results)
    if demo:
        parts.append(f'<div class="banner">{esc(DEMO_LABEL)} ({demo} of {len(results)} cases)</div>')
    if mixed_thresholds:
        parts.append(
            '<div class="warnings">The cases were scored with different thresholds (classifiers); '
            f"the histogram shows {threshold:g}.</div>"
        )
    parts.append("<h2>Score distribution</h2>")
    parts.append(f"<figure>{_img(rf.fig_histogram(scores, threshold), 'Histogram of DFM50N scores')}</figure>")
    parts.append("<h2>Cases</h2>")
    head = (
        '<tr><th>Case</th><th class="num">Score</th><th>Risk</th><th class="num">Combined p</th>'
        '<th class="num">Coverage</th><th>Demo</th><th>Warnings</th></tr>'
    )
    body = []
    for row in rows:
        cls = "high" if row["high_risk"] else "low"
        body.append(
            f'<tr><td>{esc(row["case_id"])}</td><td class="num {cls}">{esc(row["score"])}</td>'
            f'<td class="{cls}">{esc(row["risk"])}</td><td class="num">{esc(row["combined"])}</td>'
            f'<td class="num">{esc(row["coverage"])}</td><td>{"DEMO" if row["demo"] else ""}</td>'
            f"<td>{esc(row['warnings'])}</td></tr>"
        )
    parts.append(f'<table class="cases">{head}{"".join(body)}</table>')
    versions = ", ".join(sorted({r.software_version for r in results}))
    parts.append(_footer(f"DFM50N {versions}"))
    return _page("DFM50N cohort summary", "\n".join(parts))
