"""What the DFM50N panel shows: `PanelView` (one value object a front end renders) and its pieces.

Built by `PanelPresenter.view()`; Qt-free, so the Slicer widget and the browser render the same thing.
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field

from DFM50NLib.constants import DEMO_LABEL
from DFM50NLib.errors import DFM50NError

IDLE, RUNNING, CANCELLING, DOWNLOADING = "idle", "running", "cancelling", "downloading"
POLL_INTERVAL_MS = 100
HIGH_COLOR, LOW_COLOR = "#b3261e", "#1e6b34"


@dataclass
class ResultLine:
    """One scored segment as the result box lists it."""

    segment: str
    score: float
    threshold: float
    risk_label: str
    high_risk: bool
    demo: bool
    combined: str = ""  # "Combined model: 0.412 (positive)" or ""


@dataclass
class PanelView:
    """Everything a front end renders; a plain value object (compare two to skip unchanged repaints)."""

    state: str = IDLE  # idle | running | cancelling | downloading
    polling: bool = False  # True while a job runs: call poll() every POLL_INTERVAL_MS
    apply_text: str = "Score"  # "Score" / "Cancel" / "Cancelling…"
    apply_enabled: bool = False
    apply_tooltip: str = ""  # why Score is disabled, or what it does
    inputs_enabled: bool = True  # selectors and options are read-only while a job runs
    progress_visible: bool = False
    progress: int = 0  # 0..100
    status: str = ""
    result_lines: list = field(default_factory=list)  # ResultLine per scored segment of the last job
    result_html: str = "Not scored yet."
    demo_html: str = ""
    warnings: str = ""
    errors: str = ""  # per-segment failures of the last job (score-all)
    error: str = ""  # the last job's failure, to show once (see `takeError`)
    show_cube_enabled: bool = False
    open_report_enabled: bool = False
    edit_segment_enabled: bool = False
    measure_enabled: bool = False
    download_visible: bool = False
    download_text: str = "Download…"
    weights_path: str = ""  # the machine setting (also set by a finished download)
    weights_status: str = ""
    classifier_status: str = ""
    table_id: str = ""  # the table the last job wrote: a front end shows it (layout with a table)
    revision: int = 0  # increases each time a job delivers results


def result_line(s) -> ResultLine:
    r = s.result
    combined = ""
    if r.combined_probability is not None:
        combined = f"Combined model: {r.combined_probability:.3f} ({'positive' if r.combined_positive else 'negative'})"
    return ResultLine(s.segment_name, r.score, r.threshold, r.risk_label, r.high_risk, r.classifier_is_demo, combined)


def line_html(line: ResultLine, named: bool) -> str:
    color = HIGH_COLOR if line.high_risk else LOW_COLOR
    name = f"{html.escape(line.segment)}: " if named else ""
    text = (
        f'{name}DFM50N score <b style="color:{color}">{line.score:.3f}</b> '
        f'(threshold {line.threshold:g}): <b style="color:{color}">{html.escape(line.risk_label)}</b>'
    )
    return text + (f"<br>{html.escape(line.combined)}" if line.combined else "")


def model_status(weights_path, classifier_folder):
    try:
        from DFM50NLib.model.weights import resolve_weights

        path = resolve_weights(weights_path)
        found, weights_text = True, f"found: {path}"
    except (DFM50NError, ImportError) as exc:
        found, weights_text = False, f"not found ({exc})"
    try:
        from DFM50NLib.model.classifier import load_classifier

        clf = load_classifier(classifier_folder)
        demo = f' <b style="color:{HIGH_COLOR}">{html.escape(DEMO_LABEL)}</b>' if clf.is_demo else ""
        classifier_text = f"{html.escape(clf.name)} (threshold {clf.threshold:g}){demo}"
    except (DFM50NError, ImportError) as exc:
        classifier_text = f'<span style="color:{HIGH_COLOR}">{html.escape(str(exc))}</span>'
    return found, weights_text, classifier_text
