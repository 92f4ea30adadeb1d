"""matplotlib drawing for reports: score bars, CT planes with contours, cube slices, histograms.

matplotlib is imported inside functions (house rule) and used through `Figure` objects, never
pyplot: no global state, no GUI backend, safe in Slicer and in worker threads.
"""

from __future__ import annotations

import io

import numpy as np

from DFM50NLib.report.text import HIGH_COLOR, LOW_COLOR

LUNG_WINDOW = (-600.0, 1500.0)  # level, width (HU)
LESION_COLOR = "#ff453a"
CUBE_COLOR = "#ffd60a"
LONG_COLOR = "#ff2d95"
SHORT_COLOR = "#32ade6"
INK = "#1c1c1e"
MUTED = "#6e6e73"


def new_figure(width_in, height_in):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width_in, height_in), dpi=100)
    fig.patch.set_facecolor("white")
    return fig


def to_png(fig, dpi=150) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, facecolor="white")
    return buf.getvalue()


def draw_score_bar(ax, value, threshold, label=None, *, positive=None, value_text=None):
    """A 0..1 track filled to `value`, threshold marked: the score at a glance."""
    from matplotlib.patches import FancyBboxPatch

    positive = value >= threshold if positive is None else positive
    color = HIGH_COLOR if positive else LOW_COLOR
    value = float(min(max(value, 0.0), 1.0))
    ax.set_xlim(-0.005, 1.005)
    ax.set_ylim(0, 1)
    ax.axis("off")
    y0, h = 0.36, 0.30
    ax.add_patch(FancyBboxPatch((0, y0), 1, h, boxstyle="round,pad=0,rounding_size=0.015", fc="#e5e5ea", ec="none"))
    ax.add_patch(
        FancyBboxPatch((0, y0), max(0.004, value), h, boxstyle="round,pad=0,rounding_size=0.015", fc=color, ec="none")
    )
    ax.plot([threshold, threshold], [y0 - 0.1, y0 + h + 0.1], color=INK, lw=1.4, ls=(0, (3, 2)))
    text = value_text or f"{value:.3f}"
    x, ha, ink = value_label_place(ax, value, threshold, text)
    ax.text(x, y0 + h / 2, text, ha=ha, va="center", fontsize=9, fontweight="bold", color=ink or color)
    ax.text(threshold, y0 - 0.14, f"threshold {threshold:g}", ha="center", va="top", fontsize=7.5, color=INK)
    for tick in (0, 0.5, 1):
        if abs(tick - threshold) > 0.14:
            ax.text(
                tick,
                y0 - 0.14,
                f"{tick:g}",
                va="top",
                fontsize=7,
                color=MUTED,
                ha="center" if 0 < tick < 1 else ("left" if tick == 0 else "right"),
            )
    if label:
        ax.text(0, 0.98, label, ha="left", va="top", fontsize=8.5, color=INK, fontweight="bold")


def value_label_place(ax, value, threshold, text, fontsize=9):
    """(x, ha, colour or None) of the value's label: right of the fill unless the threshold line would cross it
    (0.150 against 0.254), then inside the fill in white, or right of the threshold line when the fill is short."""
    inches = ax.get_position().width * ax.figure.get_size_inches()[0]
    width = len(text) * fontsize * 0.62 / 72 / max(inches, 1e-6) + 0.012  # bold digits, in axis units
    pad = 0.012
    crosses = value + pad - 0.01 < threshold < value + pad + width + 0.01
    if value > 0.82 or (crosses and value >= width + 2 * pad):
        return value - pad, "right", "white"
    if crosses:
        return threshold + pad, "left", None
    return value + pad, "left", None


def draw_plane(ax, view, *, window=LUNG_WINDOW, scale_bar_mm=20.0, title=True):
    """CT (lung window) + lesion contour + cube outline + measurement lines, radiological display."""
    rows, cols = view.shape
    pr, pc = view.pixel_mm
    extent = (0, cols * pc, rows * pr, 0)
    ax.set_facecolor("black")
    if view.image is not None:
        level, width = window
        ax.imshow(
            view.image,
            cmap="gray",
            vmin=level - width / 2,
            vmax=level + width / 2,
            extent=extent,
            interpolation="bilinear",
            origin="upper",
        )
    else:
        ax.imshow(np.zeros((rows, cols)), cmap="gray", vmin=0, vmax=1, extent=extent, origin="upper")
        ax.text(cols * pc / 2, rows * pr * 0.08, "no CT available", color="#bbbbbb", ha="center", fontsize=7)
    xs = (np.arange(cols) + 0.5) * pc
    ys = (np.arange(rows) + 0.5) * pr
    if view.cube is not None and view.cube.any() and not view.cube.all():
        ax.contour(
            xs, ys, view.cube.astype(float), levels=[0.5], colors=[CUBE_COLOR], linewidths=1.0, linestyles="dashed"
        )
    elif view.cube is not None and view.cube.all():
        ax.add_patch(_rect(extent, CUBE_COLOR))
    if view.lesion is not None and view.lesion.any():
        ax.contour(xs, ys, view.lesion.astype(float), levels=[0.5], colors=[LESION_COLOR], linewidths=1.1)
    if view.center_rc is not None:
        r, c = view.center_rc
        ax.plot([(c + 0.5) * pc], [(r + 0.5) * pr], marker="+", color=CUBE_COLOR, ms=7, mew=1.0)
    for (label, (r0, c0), (r1, c1)), color in zip(view.lines, (LONG_COLOR, SHORT_COLOR, "white")):
        ax.plot(
            [(c0 + 0.5) * pc, (c1 + 0.5) * pc],
            [(r0 + 0.5) * pr, (r1 + 0.5) * pr],
            color=color,
            lw=1.6,
            solid_capstyle="butt",
            marker="|",
            ms=5,
        )
    for (label, *_), color, k in zip(view.lines, (LONG_COLOR, SHORT_COLOR), range(2)):
        ax.text(
            0.03,
            0.97 - 0.075 * k,
            label,
            transform=ax.transAxes,
            color=color,
            fontsize=7.5,
            va="top",
            fontweight="bold",
            bbox=dict(fc="black", ec="none", alpha=0.55, pad=1.2),
        )
    from matplotlib import patheffects

    outline = [patheffects.withStroke(linewidth=2.2, foreground="black")]
    left, right, top, bottom = view.letters
    style = dict(color="white", fontsize=8, fontweight="bold", transform=ax.transAxes, path_effects=outline)
    if left:
        ax.text(0.02, 0.5, left, ha="left", va="center", **style)
        ax.text(0.98, 0.5, right, ha="right", va="center", **style)
        ax.text(0.5, 0.98, top, ha="center", va="top", **style)
        ax.text(0.5, 0.02, bottom, ha="center", va="bottom", **style)
    if scale_bar_mm and cols * pc > 2 * scale_bar_mm:
        x0, y0 = cols * pc * 0.96 - scale_bar_mm, rows * pr * 0.94
        ax.plot([x0, x0 + scale_bar_mm], [y0, y0], color="white", lw=2, path_effects=outline)
        ax.text(
            x0 + scale_bar_mm / 2,
            y0 - rows * pr * 0.015,
            f"{scale_bar_mm:g} mm",
            color="white",
            fontsize=6.5,
            ha="center",
            va="bottom",
            path_effects=outline,
        )
    ax.set_xlim(0, cols * pc)
    ax.set_ylim(rows * pr, 0)
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_color("#c7c7cc")
    if title:
        ax.set_title(view.title, fontsize=8, color=INK, pad=3)


def _rect(extent, color):
    from matplotlib.patches import Rectangle

    x0, x1, y1, y0 = extent
    return Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, ec=color, lw=1.0, ls="--")


def legend_handles(lines=False):
    from matplotlib.lines import Line2D

    handles = [
        Line2D([], [], color=LESION_COLOR, lw=1.2, label="lesion contour"),
        Line2D([], [], color=CUBE_COLOR, lw=1.0, ls="--", label="50 mm cube"),
        Line2D([], [], color=CUBE_COLOR, lw=0, marker="+", ms=7, label="cube centre"),
    ]
    if lines:
        handles += [
            Line2D([], [], color=LONG_COLOR, lw=1.6, label="long axis"),
            Line2D([], [], color=SHORT_COLOR, lw=1.6, label="short axis"),
        ]
    return handles


def fig_score(result, width=7.0):
    """Score bar (and the combined model's bar when it was computed)."""
    from DFM50NLib.constants import COMBINED_THRESHOLD

    two = result.combined_probability is not None
    fig = new_figure(width, 0.8 if not two else 1.6)
    gs = fig.add_gridspec(2 if two else 1, 1, left=0.02, right=0.98, top=0.98, bottom=0.02, hspace=0.1)
    draw_score_bar(fig.add_subplot(gs[0]), result.score, result.threshold, "DFM50N score", positive=result.high_risk)
    if two:
        draw_score_bar(
            fig.add_subplot(gs[1]),
            result.combined_probability,
            COMBINED_THRESHOLD,
            "Combined clinical model",
            positive=result.combined_positive,
        )
    return fig


def fig_views(views, width=7.2, height=2.75, legend=True, lines=False):
    n = len(views)
    fig = new_figure(width, height)
    gs = fig.add_gridspec(1, n, left=0.01, right=0.99, top=0.9, bottom=0.12 if legend else 0.02, wspace=0.04)
    for i, view in enumerate(views):
        draw_plane(fig.add_subplot(gs[i]), view)
    if legend:
        fig.legend(handles=legend_handles(lines), loc="lower center", ncol=5, fontsize=7, frameon=False)
    return fig


def draw_stability(ax, stab, threshold):
    """One dot per perturbed score, base score and threshold marked."""
    labels = [p.label for p in stab.perturbations]
    scores = [p.score for p in stab.perturbations]
    y = np.arange(len(labels))[::-1]
    colors = [HIGH_COLOR if s >= threshold else LOW_COLOR for s in scores]
    lo = min(scores + [stab.base_score, threshold])
    hi = max(scores + [stab.base_score, threshold])
    pad = max(0.03, 0.1 * (hi - lo))
    ax.axvline(threshold, color=INK, lw=1.1, ls=(0, (3, 2)))
    ax.axvline(stab.base_score, color=MUTED, lw=1.0)
    ax.scatter(scores, y, c=colors, s=22, zorder=3)
    ax.set_yticks(y)
    ax.set_yticklabels(labels, fontsize=7)
    ax.set_xlim(max(0.0, lo - pad), min(1.0, hi + pad))
    ax.tick_params(axis="x", labelsize=7)
    ax.set_xlabel("DFM50N score (dashed: threshold, grey: unperturbed)", fontsize=7)
    for spine in ("top", "right"):
        ax.spines[spine].set_visible(False)


def fig_stability(stab, threshold, width=7.0):
    fig = new_figure(width, 0.35 + 0.2 * len(stab.perturbations))
    ax = fig.add_axes([0.2, 0.28, 0.76, 0.68])
    draw_stability(ax, stab, threshold)
    return fig


def draw_histogram(ax, scores, threshold):
    bins = np.linspace(0, 1, 21)
    hist_hi = [s for s in scores if s >= threshold]
    hist_lo = [s for s in scores if s < threshold]
    ax.hist(
        [hist_lo, hist_hi],
        bins=bins,
        stacked=True,
        color=[LOW_COLOR, HIGH_COLOR],
        label=[f"low risk ({len(hist_lo)})", f"high risk ({len(hist_hi)})"],
        edgecolor="white",
        linewidth=0.6,
    )
    ax.axvline(threshold, color=INK, lw=1.3, ls=(0, (3, 2)))
    ax.text(threshold, ax.get_ylim()[1] * 0.97, f" threshold {threshold:g}", fontsize=7.5, va="top", color=INK)
    ax.set_xlim(0, 1)
    ax.set_xlabel("DFM50N score", fontsize=8)
    ax.set_ylabel("cases", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.yaxis.get_major_locator().set_params(integer=True)
    ax.legend(fontsize=7, frameon=False, loc="upper right")
    for spine in ("top", "right"):
        ax.spines[spine].set_visible(False)


def fig_histogram(scores, threshold, width=7.0, height=2.6):
    fig = new_figure(width, height)
    ax = fig.add_axes([0.08, 0.2, 0.9, 0.72])
    draw_histogram(ax, scores, threshold)
    return fig
