"""A4 PDF pages drawn with matplotlib (PdfPages): no extra dependency, prints as laid out."""

from __future__ import annotations

from DFM50NLib.constants import COMBINED_THRESHOLD, DEMO_LABEL, DISCLAIMER
from DFM50NLib.report import figures as rf
from DFM50NLib.report import text as rt

A4 = (8.27, 11.69)  # inches, portrait
MARGIN = 0.06  # figure fraction, left/right
PT = 1.0 / (A4[1] * 72.0)  # one typographic point as a fraction of the page height


def header(fig, result, title, subtitle):
    fig.text(MARGIN, 0.962, title, fontsize=17, fontweight="bold", color=rf.INK, va="baseline")
    fig.text(MARGIN, 0.946, subtitle, fontsize=8.5, color=rf.MUTED, va="baseline")
    fig.text(
        1 - MARGIN,
        0.962,
        f"Case  {result.case_id}",
        fontsize=10,
        fontweight="bold",
        ha="right",
        va="baseline",
        color=rf.INK,
    )
    fig.text(1 - MARGIN, 0.946, rt.fmt_date(result.created), fontsize=8.5, ha="right", va="baseline", color=rf.MUTED)
    fig.add_artist(_hline(0.937))
    if result.classifier_is_demo:
        _banner(fig, 0.905, DEMO_LABEL + " — scores are not clinically meaningful")
        return 0.89
    return 0.925


def footer(fig, result, page, pages):
    fig.add_artist(_hline(0.045, color="#d1d1d6"))
    fig.text(MARGIN, 0.030, DISCLAIMER, fontsize=7.5, color=rf.HIGH_COLOR, fontweight="bold")
    fig.text(
        MARGIN,
        0.017,
        f"DFM50N {result.software_version} · classifier {result.classifier_name} "
        f"{rt.short_hash(result.classifier_sha256, 12)} · FCIB {rt.short_hash(result.fcib_weights_sha256, 12)}",
        fontsize=6.5,
        color=rf.MUTED,
    )
    fig.text(1 - MARGIN, 0.030, f"page {page} / {pages}", fontsize=7, color=rf.MUTED, ha="right")


def _hline(y, color="#8e8e93"):
    from matplotlib.lines import Line2D

    return Line2D([MARGIN, 1 - MARGIN], [y, y], color=color, lw=0.8)


def _banner(fig, y, text, color=rf.HIGH_COLOR):
    from matplotlib.patches import FancyBboxPatch

    fig.add_artist(
        FancyBboxPatch(
            (MARGIN, y - 0.008),
            1 - 2 * MARGIN,
            0.024,
            boxstyle="round,pad=0.002",
            fc=color,
            ec="none",
            transform=fig.transFigure,
        )
    )
    fig.text(0.5, y + 0.004, text, ha="center", va="center", fontsize=10, fontweight="bold", color="white")


def section(fig, x, y, width, title, rows, fontsize=8.0, label_frac=0.5, mono_values=False):
    """Key/value block; returns the y below it."""
    line = fontsize * 1.55 * PT
    fig.text(x, y, title.upper(), fontsize=fontsize - 0.5, fontweight="bold", color=rf.MUTED, va="top")
    y -= line * 1.15
    fig.add_artist(_seg(x, x + width, y + line * 0.2))
    import textwrap

    value_size = fontsize - (0.8 if mono_values else 0)
    char_width = 0.6 if mono_values else 0.56  # average glyph width / font size (monospace: exactly 0.6)
    chars = max(12, int(width * (1 - label_frac) * A4[0] * 72 / (value_size * char_width)))
    for label, value in rows:
        fig.text(x, y - line * 0.2, label, fontsize=fontsize, color=rf.MUTED, va="top")
        parts = textwrap.wrap(str(value), chars) or [""]
        for part in parts:  # long values wrap inside their column instead of running into the next
            fig.text(
                x + width * label_frac,
                y - line * 0.2,
                part,
                fontsize=value_size,
                color=rf.INK,
                va="top",
                family="monospace" if mono_values else None,
            )
            y -= line
    return y - line * 0.6


def _heading(fig, x, y, text):
    """A small bold grey heading above a picture or a score block (the tables draw their own in `section`)."""
    fig.text(x, y, text, fontsize=8, color=rf.MUTED, fontweight="bold", va="top")


def _seg(x0, x1, y):
    from matplotlib.lines import Line2D

    return Line2D([x0, x1], [y, y], color="#d1d1d6", lw=0.6)


def text_block(fig, x, y, width, paragraphs, fontsize=8.5, color=rf.INK, title=None):
    """Wrapped paragraphs; returns the y below them."""
    import textwrap

    line = fontsize * 1.45 * PT
    if title:
        fig.text(x, y, title.upper(), fontsize=fontsize - 1, fontweight="bold", color=rf.MUTED, va="top")
        y -= line * 1.2
    chars = int(width * A4[0] * 72 / (fontsize * 0.52))
    for para in paragraphs:
        for part in textwrap.wrap(para, chars):
            fig.text(x, y, part, fontsize=fontsize, color=color, va="top")
            y -= line
        y -= line * 0.3
    return y - line * 0.3


def warnings_block(fig, x, y, width, notes, fontsize=8.0):
    import textwrap

    if not notes:
        return y
    line = fontsize * 1.5 * PT
    fig.text(x, y, "WARNINGS", fontsize=fontsize - 0.5, fontweight="bold", color="#b25000", va="top")
    y -= line * 1.2
    chars = int(width * A4[0] * 72 / (fontsize * 0.55))
    for note in notes:
        oop = rt.is_out_of_population(note)
        color, weight = (rf.HIGH_COLOR, "bold") if oop else ("#7a3a00", "normal")
        for i, part in enumerate(textwrap.wrap(note, int(chars * 0.9) if oop else chars)):
            fig.text(
                x, y, ("▲ " if i == 0 else "   ") + part, fontsize=fontsize, color=color, fontweight=weight, va="top"
            )
            y -= line
    return y - line * 0.5


TABLES_HEIGHT = 0.2  # the four tables of page one (Result, Clinical inputs, Lesion, Where the model looked)
MIN_VIEW_SHARE = 0.6  # CT views smaller than this share of their full size move the tables to a page of their own


def page_one(result, ct_views, diam):
    """Score, plain words, warnings, CT views, tables; returns (figure, tables_moved).

    Long text (combined model, disagreement, several warnings) used to shrink the CT views to thumbnails to keep
    the tables on the page: now the views keep their size and the tables go to `tables_page` when they do not fit.
    """
    fig = rf.new_figure(*A4)
    y = header(
        fig,
        result,
        "DFM50N report",
        "Occult lymph-node metastasis risk · resectable early small-cell lung cancer · chest CT",
    )
    # score block
    color = rt.risk_color(result)
    _heading(fig, MARGIN, y - 0.012, "DFM50N SCORE")
    fig.text(MARGIN, y - 0.062, f"{result.score:.3f}", fontsize=34, fontweight="bold", color=color, va="baseline")
    fig.text(
        MARGIN + 0.2, y - 0.043, result.risk_label.upper(), fontsize=12, fontweight="bold", color=color, va="baseline"
    )
    fig.text(
        MARGIN + 0.2,
        y - 0.060,
        f"score {'≥' if result.high_risk else '<'} threshold {result.threshold:g}",
        fontsize=8.5,
        color=rf.MUTED,
        va="baseline",
    )
    if rt.out_of_population(result):
        fig.text(
            MARGIN + 0.2,
            y - 0.077,
            "OUT OF POPULATION - see warnings",
            fontsize=8.5,
            color=rf.HIGH_COLOR,
            fontweight="bold",
            va="baseline",
        )
    rf.draw_score_bar(
        fig.add_axes([0.48, y - 0.068, 1 - MARGIN - 0.48, 0.05]),
        result.score,
        result.threshold,
        positive=result.high_risk,
    )
    y -= 0.095
    if result.combined_probability is not None:
        rf.draw_score_bar(
            fig.add_axes([0.48, y - 0.066, 1 - MARGIN - 0.48, 0.05]),
            result.combined_probability,
            COMBINED_THRESHOLD,
            positive=result.combined_positive,
        )
        verdict = "OLM POSITIVE" if result.combined_positive else "OLM negative"
        ccol = rf.HIGH_COLOR if result.combined_positive else rf.LOW_COLOR
        _heading(fig, MARGIN, y - 0.02, "COMBINED CLINICAL MODEL")
        fig.text(
            MARGIN,
            y - 0.048,
            f"p = {result.combined_probability:.3f}  ·  {verdict}",
            fontsize=12,
            fontweight="bold",
            color=ccol,
            va="baseline",
        )
        fig.text(
            MARGIN,
            y - 0.062,
            f"smoking {rt.fmt_bool(result.smoking)} · spiculated "
            f"{rt.fmt_bool(result.spiculated)} · short axis {result.short_axis_cm:.2f} cm "
            f"({result.short_axis_source})",
            fontsize=8,
            color=rf.MUTED,
            va="baseline",
        )
        y -= 0.08
    else:
        fig.text(MARGIN, y - 0.01, rt.combined_summary(result), fontsize=8.5, color=rf.MUTED, va="top")
        y -= 0.03
    fig.add_artist(_seg(MARGIN, 1 - MARGIN, y))
    y = text_block(fig, MARGIN, y - 0.008, 1 - 2 * MARGIN, rt.plain_summary(result), title="What this means")
    y = warnings_block(fig, MARGIN, y, 1 - 2 * MARGIN, rt.warnings_list(result))
    # orthogonal CT views
    tables_moved = False
    if ct_views:
        _heading(fig, MARGIN, y - 0.012, "CT THROUGH THE CUBE CENTRE (120 mm field of view, lung window)")
        w = (1 - 2 * MARGIN - 0.02) / 3
        full = w * A4[0] / A4[1]
        room = y - 0.045 - 0.035 - 0.055  # below the heading, above the legend and the footer
        h = min(full, room - TABLES_HEIGHT)
        if h < MIN_VIEW_SHARE * full:  # the views keep their size; the tables get a page of their own
            h, tables_moved = min(full, room), True
        w_img = h * A4[1] / A4[0]
        top = y - 0.045
        for i, view in enumerate(ct_views):
            # a shrunk picture stays centred in its full-width slot: its title keeps the slot's width
            ax = fig.add_axes([MARGIN + i * (w + 0.01) + (w - w_img) / 2, top - h, w_img, h])
            rf.draw_plane(ax, view)
        fig.legend(
            handles=rf.legend_handles(),
            loc="upper center",
            bbox_to_anchor=(0.5, top - h - 0.002),
            ncol=3,
            fontsize=7.5,
            frameon=False,
        )
        y = top - h - 0.035
    if not tables_moved:
        result_tables(fig, result, diam, y)
    return fig, tables_moved


def tables_page(result, diam):
    """Page one's tables, when page one's text left them no room beside full-size CT views."""
    fig = rf.new_figure(*A4)
    y = header(fig, result, "DFM50N report", "Result, clinical inputs and lesion")
    result_tables(fig, result, diam, y - 0.01)
    return fig


def result_tables(fig, result, diam, y):
    secs = dict(rt.sections(result, diam, full_paths=False))
    col_w = (1 - 2 * MARGIN - 0.05) / 2
    yl = section(fig, MARGIN, y, col_w, "Result", secs["Result"], label_frac=0.48)
    section(fig, MARGIN, yl, col_w, "Clinical inputs", secs["Clinical inputs"], label_frac=0.48)
    x2 = MARGIN + col_w + 0.05
    yr = section(fig, x2, y, col_w, "Lesion", secs["Lesion"], label_frac=0.6)
    section(fig, x2, yr, col_w, "Where the model looked", secs["Where the model looked"], label_frac=0.3)


def page_two(result, cube_views, measure_view, stab, diam):
    fig = rf.new_figure(*A4)
    y = header(fig, result, "DFM50N report", "Model input, measurements and provenance")
    # pictures at 0.8 of square: the technical appendix below needs the room above the footer
    w = (1 - 2 * MARGIN - 0.02) / 3
    h = 0.8 * w * A4[0] / A4[1]
    if cube_views:
        _heading(
            fig,
            MARGIN,
            y - 0.012,
            "WHAT THE MODEL SEES: THE 50 MM CUBE, MIDDLE SLICES (axis order in the technical appendix)",
        )
        top = y - 0.045
        for i, view in enumerate(cube_views):
            rf.draw_plane(fig.add_axes([MARGIN + i * (w + 0.01), top - h, w, h]), view, scale_bar_mm=10)
        y = top - h - 0.02
    if measure_view is not None or stab is not None:
        top = y - 0.012
        if measure_view is not None:
            _heading(fig, MARGIN, top, "AXIAL DIAMETERS (RECIST-STYLE)")
            rf.draw_plane(fig.add_axes([MARGIN, top - 0.033 - h, w, h]), measure_view, scale_bar_mm=10)
        x2 = MARGIN + (w + 0.03 if measure_view is not None else 0)
        if stab is not None:
            _heading(fig, x2, top, "STABILITY UNDER SMALL PERTURBATIONS")
            ax = fig.add_axes([x2 + 0.16, top - 0.025 - h * 0.72, 1 - MARGIN - x2 - 0.17, h * 0.72])
            rf.draw_stability(ax, stab, result.threshold)
            import textwrap

            wrapped = "\n".join(textwrap.fill(part, 78) for part in stability_summary(stab).split("\n"))
            fig.text(
                x2,
                top - 0.07 - h * 0.75,
                wrapped,
                fontsize=7.5,
                color=rf.HIGH_COLOR if stab.n_flipped else rf.INK,
                va="top",
            )
        elif measure_view is not None and diam is not None:
            rows = [
                ("Long axis", f"{diam.long_mm:.1f} mm"),
                ("Short axis", f"{diam.short_mm:.1f} mm"),
                ("Axial slice at", f"{diam.slice_s_mm:.1f} mm (head-foot)"),
                ("Lesion volume", f"{diam.volume_mm3:.0f} mm³"),
                ("Pixel size", f"{diam.in_plane_spacing_mm:.2f} mm"),
                ("Resampled to axial", rt.fmt_bool(diam.resampled)),
            ]
            section(fig, x2, top, 1 - MARGIN - x2, "Measurement", rows, label_frac=0.45)
        y = top - 0.06 - h
    secs = dict(rt.sections(result, diam))
    fig.text(MARGIN, y, "Technical appendix", fontsize=11, fontweight="bold", color=rf.INK, va="top")
    y -= 0.022
    y = section(fig, MARGIN, y, 1 - 2 * MARGIN, "Geometry (technical)", secs["Geometry (technical)"], label_frac=0.3)
    y = section(
        fig, MARGIN, y, 1 - 2 * MARGIN, "Model provenance", secs["Model provenance"], label_frac=0.3, mono_values=True
    )
    if "Inputs" in secs:
        y = section(
            fig,
            MARGIN,
            y,
            1 - 2 * MARGIN,
            "Inputs",
            [(k, _ellipsize(v, 95)) for k, v in secs["Inputs"]],
            label_frac=0.3,
        )
    if "Timings" in secs:
        line = " · ".join(f"{stage} {t}" for stage, t in secs["Timings"])
        y = text_block(fig, MARGIN, y, 1 - 2 * MARGIN, [line], fontsize=7.5, color=rf.MUTED, title="Timings")
    return fig


def stability_summary(stab) -> str:
    text = (
        f"{len(stab.perturbations)} perturbations: min {stab.min:.3f} · median {stab.median:.3f} · "
        f"max {stab.max:.3f}; {stab.n_flipped} cross the threshold."
    )
    return text + ("\n" + stab.warning if stab.warning else "")


def _truncate(text, n):
    return text if len(text) <= n else text[: n - 1] + "…"


def _ellipsize(text, n):
    return text if len(text) <= n else "…" + text[-(n - 1) :]


def write_case_pdf(path, result, ct_views, cube_views, measure_view, stab, diam):
    from matplotlib.backends.backend_pdf import PdfPages

    from DFM50NLib.atomic import atomic_path

    with atomic_path(path) as tmp:
        with PdfPages(
            tmp, metadata={"Title": f"DFM50N report {result.case_id}", "Creator": "DFM50N", "Subject": DISCLAIMER}
        ) as pdf:
            first, tables_moved = page_one(result, ct_views, diam)
            figs = [first] + ([tables_page(result, diam)] if tables_moved else [])
            figs.append(page_two(result, cube_views, measure_view, stab, diam))
            for n, fig in enumerate(figs, 1):
                footer(fig, result, n, len(figs))
                pdf.savefig(fig)
    return path


def write_cohort_pdf(path, results, rows, threshold, n_failed=0):
    """Histogram page + as many table pages as needed (38 rows each), then every case's warnings in full.

    The table only counts a case's warnings (and flags OUT OF POPULATION): the words themselves follow on
    pages of their own, wrapped, never cut. `n_failed`: cases not scored (errors.csv), said in every header.
    """
    from matplotlib.backends.backend_pdf import PdfPages

    from DFM50NLib.atomic import atomic_path

    per_page = 38
    chunks = [rows[i : i + per_page] for i in range(0, max(1, len(rows)), per_page)] or [[]]
    notes = _warning_pages(rows)
    pages = len(chunks) + len(notes)
    with atomic_path(path) as tmp:
        with PdfPages(
            tmp, metadata={"Title": "DFM50N cohort summary", "Creator": "DFM50N", "Subject": DISCLAIMER}
        ) as pdf:
            for n, chunk in enumerate(chunks, 1):
                fig = rf.new_figure(*A4)
                y = _cohort_header(fig, results, threshold, n_failed)
                if n == 1:
                    ax = fig.add_axes([MARGIN + 0.05, y - 0.25, 1 - 2 * MARGIN - 0.05, 0.22])
                    rf.draw_histogram(ax, [r.score for r in results], threshold)
                    y -= 0.3
                _table(fig, y, chunk)
                _cohort_footer(fig, results, n, pages)
                pdf.savefig(fig)
            for n, lines in enumerate(notes, len(chunks) + 1):
                fig = rf.new_figure(*A4)
                y = _cohort_header(fig, results, threshold, n_failed)
                _warning_lines(fig, y, lines)
                _cohort_footer(fig, results, n, pages)
                pdf.savefig(fig)
    return path


WARNING_FONT = 7.5
WARNING_LINE = WARNING_FONT * 1.5 * PT


def _warning_pages(rows) -> list:
    """Every case's warnings as wrapped lines [(text, is_case_heading, out_of_population)], split into pages."""
    import textwrap

    chars = int((1 - 2 * MARGIN) * A4[0] * 72 / (WARNING_FONT * 0.52)) - 4
    shared = [n for n in rows[0]["notes"] if all(n in row["notes"] for row in rows)] if len(rows) > 1 else []
    blocks = [("Every case", shared)] if shared else []
    blocks += [
        (f"{row['case_id']}  ({row['score']}, {row['risk']})", [n for n in row["notes"] if n not in shared])
        for row in rows
    ]
    lines = []
    for title, notes in blocks:
        if not notes:
            continue
        lines.append((title, True, False))
        for note in notes:
            oop = rt.is_out_of_population(note)
            for i, part in enumerate(textwrap.wrap(note, chars)):
                lines.append((("▲ " if i == 0 else "   ") + part, False, oop))
    if not lines:
        return []
    per_page = int((0.88 - 0.06 - 0.04) / WARNING_LINE)
    return [lines[i : i + per_page] for i in range(0, len(lines), per_page)]


def _warning_lines(fig, y, lines):
    fig.text(MARGIN, y, "WARNINGS PER CASE (in full)", fontsize=8, fontweight="bold", color="#b25000", va="top")
    y -= WARNING_LINE * 1.6
    for text, heading, oop in lines:
        if heading:
            y -= WARNING_LINE * 0.4
        color = rf.INK if heading else (rf.HIGH_COLOR if oop else "#7a3a00")
        weight = "bold" if heading or oop else "normal"
        fig.text(MARGIN, y, text, fontsize=WARNING_FONT, color=color, fontweight=weight, va="top")
        y -= WARNING_LINE
    return y


def _cohort_header(fig, results, threshold, n_failed=0):
    import statistics

    fig.text(MARGIN, 0.962, "DFM50N cohort summary", fontsize=17, fontweight="bold", color=rf.INK)
    scores = [r.score for r in results]
    high = sum(r.high_risk for r in results)
    stats = (
        f"{len(results)} cases scored · {high} high risk (score ≥ {threshold:g}) · median score "
        f"{statistics.median(scores):.3f}"
        if scores
        else "no cases scored"
    )
    if n_failed:
        stats += f" · {n_failed} case(s) failed, not shown (see errors.csv)"
    fig.text(MARGIN, 0.946, stats, fontsize=8.5, color=rt.HIGH_COLOR if n_failed else rf.MUTED)
    fig.add_artist(_hline(0.937))
    demo = sum(r.classifier_is_demo for r in results)
    if demo:
        _banner(fig, 0.905, f"{DEMO_LABEL} ({demo} of {len(results)} cases)")
        return 0.88
    return 0.92


def _cohort_footer(fig, results, page, pages):
    fig.add_artist(_hline(0.045, color="#d1d1d6"))
    fig.text(MARGIN, 0.030, DISCLAIMER, fontsize=7.5, color=rf.HIGH_COLOR, fontweight="bold")
    versions = sorted({r.software_version for r in results})
    fig.text(MARGIN, 0.017, "DFM50N " + ", ".join(versions), fontsize=6.5, color=rf.MUTED)
    fig.text(1 - MARGIN, 0.030, f"page {page} / {pages}", fontsize=7, color=rf.MUTED, ha="right")


COHORT_COLUMNS = (
    ("Case", 0.0, "left"),
    ("Score", 0.30, "right"),
    ("Risk", 0.32, "left"),
    ("Combined p", 0.53, "right"),
    ("Coverage", 0.63, "right"),
    ("Model", 0.65, "left"),
    ("Warnings (in full: last pages)", 0.72, "left"),
)


def warning_count(row) -> str:
    """The table's Warnings cell: how many (in full on the last pages), out of population first."""
    notes = row["notes"]
    if not notes:
        return "—"
    count = f"{len(notes)} ▸"
    return ("OUT OF POPULATION · " + count) if any(rt.is_out_of_population(n) for n in notes) else count


def _table(fig, y, rows, fontsize=7.5):
    width = 1 - 2 * MARGIN
    line = fontsize * 1.75 * PT
    for name, x, ha in COHORT_COLUMNS:
        fig.text(MARGIN + x * width, y, name, fontsize=fontsize, fontweight="bold", color=rf.MUTED, ha=ha, va="top")
    y -= line
    fig.add_artist(_seg(MARGIN, 1 - MARGIN, y + line * 0.25))
    for i, row in enumerate(rows):
        if i % 2:
            from matplotlib.patches import Rectangle

            fig.add_artist(
                Rectangle(
                    (MARGIN, y - line * 0.8), width, line, fc="#f2f2f7", ec="none", transform=fig.transFigure, zorder=0
                )
            )
        color = rt.HIGH_COLOR if row["high_risk"] else rt.LOW_COLOR
        values = (
            _truncate(row["case_id"], 30),
            row["score"],
            row["risk"],
            row["combined"],
            row["coverage"],
            "DEMO" if row["demo"] else "",
            warning_count(row),
        )
        for (name, x, ha), value in zip(COHORT_COLUMNS, values):
            fig.text(
                MARGIN + x * width,
                y - line * 0.1,
                value,
                fontsize=fontsize,
                ha=ha,
                va="top",
                color=color if name in ("Score", "Risk") else (rf.HIGH_COLOR if name == "Model" else rf.INK),
                fontweight="bold" if name == "Score" else None,
            )
        y -= line
    return y
