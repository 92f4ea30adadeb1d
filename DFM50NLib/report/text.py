"""The words and numbers of a report, once, for both the HTML and the PDF renderer."""

from __future__ import annotations

import datetime as _dt
import math

from DFM50NLib.constants import COMBINED_THRESHOLD, DEMO_LABEL, FCIB_VERSION

HIGH_COLOR = "#b3261e"
LOW_COLOR = "#1e6b34"
NOT_REPORTED = "not reported"


def fmt_num(value, digits=3, unit=""):
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "—"
    return f"{value:.{digits}f}{(' ' + unit) if unit else ''}"


def fmt_bool(value, yes="yes", no="no", none="not given"):
    return none if value is None else (yes if value else no)


def fmt_seconds(sec) -> str:
    sec = float(sec)
    return f"{sec * 1000:.0f} ms" if sec < 1 else f"{sec:.2f} s"


def fmt_vec(values, digits=1):
    if not values:
        return "—"
    return "(" + ", ".join(f"{float(v):.{digits}f}" for v in values) + ")"


def fmt_date(iso: str) -> str:
    if not iso:
        return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    try:
        t = _dt.datetime.fromisoformat(iso)
    except ValueError:
        return iso
    if t.tzinfo is not None:
        t = t.astimezone(_dt.timezone.utc)
    return t.strftime("%Y-%m-%d %H:%M UTC")


def short_hash(h: str, n=16) -> str:
    return (h[:n] + "…") if h and len(h) > n else (h or "—")


def risk_color(result) -> str:
    return HIGH_COLOR if result.high_risk else LOW_COLOR


def score_line(result) -> str:
    return f"DFM50N score {result.score:.3f}"


def combined_summary(result) -> str:
    if result.combined_probability is None:
        return f"Combined clinical model: {NOT_REPORTED} (needs {missing_clinical(result)})"
    verdict = "OLM positive" if result.combined_positive else "OLM negative"
    return (
        f"Combined clinical model: p = {result.combined_probability:.3f} (cut-off {COMBINED_THRESHOLD:.3f}) — {verdict}"
    )


CENTER_WORDS = {
    "dt_peak": "the deepest point inside the lesion",
    "centroid": "the lesion's centre of mass",
    "point": "a point chosen by the user",
}
METHOD_DOC = "docs/METHOD.md"


def missing_clinical(result) -> str:
    """Only what was actually missing ('smoking history and spiculation'), never the whole list by rote."""
    missing = [
        name
        for name, value in (
            ("smoking history", result.smoking),
            ("spiculation", result.spiculated),
            ("the short-axis diameter", result.short_axis_cm),
        )
        if value is None
    ]
    if not missing:  # all given, yet no probability: the score itself was not finite
        return "a finite DFM50N score"
    return missing[0] if len(missing) == 1 else ", ".join(missing[:-1]) + " and " + missing[-1]


def center_words(method) -> str:
    return CENTER_WORDS.get(str(method), str(method))


def plain_summary(result) -> list:
    """What the result means, in plain words, for someone who has not read the method (a few sentences)."""
    side = "at or above" if result.high_risk else "below"
    group = "higher" if result.high_risk else "lower"
    out = [
        f"The DFM50N score of this lesion is {result.score:.3f}, {side} the fixed threshold of "
        f"{result.threshold:g}: the model places it in the {group}-risk group for occult lymph-node "
        "metastasis (spread to lymph nodes that is not visible on the CT). The score is computed from "
        "the CT image of the tumour and its surroundings only."
    ]
    if result.combined_probability is None:
        out.append(f"The combined clinical model was not computed: it needs {missing_clinical(result)}.")
    else:
        verdict = "predicts" if result.combined_positive else "does not predict"
        out.append(
            f"The combined clinical model (DFM50N score plus smoking history, spiculation and short-axis "
            f"diameter; its own cut-off {COMBINED_THRESHOLD:g}) gives {result.combined_probability:.3f} and "
            f"{verdict} occult lymph-node metastasis."
        )
        note = disagreement_note(result)
        if note:
            out.append(note)
    return out


def out_of_population(result) -> bool:
    """The result carries the out-of-population warning (long axis > 50 mm or lesion not inside the cube)."""
    return any(is_out_of_population(w) for w in (result.warnings or []))


def is_out_of_population(note) -> bool:
    """This warning is the out-of-population one (shown first and highlighted in every report)."""
    return str(note).startswith("Out of population")


def models_disagree(result) -> bool:
    return result.combined_positive is not None and bool(result.combined_positive) != bool(result.high_risk)


def disagreement_note(result):
    """When DFM50N and the combined model point different ways: what each means and which the source uses."""
    if not models_disagree(result):
        return None
    return (
        "The two models disagree. DFM50N reads the tumour's CT appearance alone; the combined model "
        "weighs the same score together with three clinical factors and uses a different cut-off, so "
        "the two can fall on different sides near their thresholds. The DFM50N workflow's own "
        "documentation interprets the DFM50N score at its fixed 0.25 threshold (high vs low OLM risk) "
        "and gives no rule for the combined model overriding it; treat the combined model as "
        f"supplementary context, not as a replacement (sources in {METHOD_DOC}). Neither is a decision rule."
    )


def sections(result, diameters=None, full_paths=True) -> list:
    """[(title, [(label, value), ...]), ...] in reading order; values are plain strings.

    Plain-language sections first ("Result", "Lesion", "Clinical inputs", "Where the model looked");
    the technical appendix after ("Geometry (technical)", "Model provenance", "Inputs", "Timings").
    """
    short = "not available"
    if result.short_axis_cm is not None:
        short = f"{result.short_axis_cm:.2f} cm ({result.short_axis_source or 'given'})"
    long_mm = result.long_axis_mm if result.long_axis_mm is not None else getattr(diameters, "long_mm", None)
    measured_short = getattr(diameters, "short_mm", None)
    reference = result.geometry == "reference"
    out = [
        (
            "Result",
            [
                ("DFM50N score", f"{result.score:.3f}"),
                ("High-risk threshold", f"{result.threshold:.2f}"),
                ("DFM50N result", result.risk_label),
                (
                    "Combined model probability",
                    NOT_REPORTED if result.combined_probability is None else f"{result.combined_probability:.3f}",
                ),
                (
                    "Combined model result",
                    NOT_REPORTED
                    if result.combined_positive is None
                    else (
                        f"OLM positive (p ≥ {COMBINED_THRESHOLD})"
                        if result.combined_positive
                        else f"OLM negative (p < {COMBINED_THRESHOLD})"
                    ),
                ),
            ],
        ),
        (
            "Lesion",
            [
                ("Lesion volume", f"{result.mask_volume_mm3:.0f} mm³ ({result.mask_volume_mm3 / 1000:.2f} mL)"),
                ("Lesion volume on the CT grid", f"{result.mask_voxels:,} CT voxels"),
                (
                    "Lesion samples in the model's cube" if reference else "Lesion samples in the 1 mm cube",
                    f"{result.cube_mask_voxels:,} of 125,000",
                ),
                ("Part of the lesion inside the cube", f"{100 * result.coverage:.1f} %"),
                ("Lesion reaches the cube's edge", fmt_bool(result.touches_border)),
                ("Separate mask pieces ignored", str(result.components_dropped)),
            ],
        ),
        (
            "Clinical inputs",
            [
                ("Smoking history", fmt_bool(result.smoking)),
                ("Spiculation", fmt_bool(result.spiculated)),
                ("Short axis (model input)", short),
                ("Measured long / short axis", f"{fmt_num(long_mm, 1, 'mm')} / {fmt_num(measured_short, 1, 'mm')}"),
            ],
        ),
        (
            "Where the model looked",
            [
                ("Cube centred on", center_words(result.center_method)),
                (
                    "Cube",
                    "as the upstream scripts cut it (reference geometry)"
                    if reference
                    else "50 mm wide, sampled every 1 mm",
                ),
            ],
        ),
        (
            "Geometry (technical)",
            [
                ("Centre method", result.center_method),
                ("Centre RAS (mm)", fmt_vec(result.center_ras)),
                ("Centre LPS (mm)", fmt_vec(result.center_lps)),
                ("Orientation code of the cube axes", result.orientation),
                ("Geometry mode", result.geometry),
            ],
        ),
        (
            "Model provenance",
            [
                ("Classifier", result.classifier_name + (" (DEMO)" if result.classifier_is_demo else "")),
                ("Classifier SHA-256", result.classifier_sha256 or "—"),
                ("FCIB weights", weights_provenance(result)),
                ("Software version", f"DFM50N {result.software_version}"),
                ("Configuration hash", result.config_hash or "—"),
                ("Device", result.device),
            ],
        ),
    ]
    inputs = []
    if result.image_path:
        inputs.append(("CT image", result.image_path if full_paths else _basename(result.image_path)))
    if result.mask_path:
        inputs.append(("Lesion mask", result.mask_path if full_paths else _basename(result.mask_path)))
    if result.label is not None:
        inputs.append(("Label / segment", str(result.label)))
    if inputs:
        out.append(("Inputs", inputs))
    if result.timings:
        out.append(("Timings", timing_rows(result.timings)))
    return out


PARALLEL_STAGES = ("fcib_process_import", "fcib_process_load")  # the FCIB child process, started with the command


def timing_rows(timings) -> list:
    """The total's parts, the total, then what ran beside it: the FCIB child process imports torch and loads the
    weights in parallel from the command's start, so its times are not parts of the total (they may exceed it)."""
    parts = [(stage, fmt_seconds(sec)) for stage, sec in timings.items() if stage not in PARALLEL_STAGES + ("total",)]
    if "total" in timings:
        parts.append(("total", fmt_seconds(timings["total"])))
    beside = [
        (f"{stage} (in parallel, not part of the total)", fmt_seconds(timings[stage]))
        for stage in PARALLEL_STAGES
        if stage in timings
    ]
    return parts + beside


def weights_provenance(result) -> str:
    """The provenance row: the verified text, or (when the unverified sentence is already among the warnings) just
    the SHA-256 with a pointer, so the report does not say the same long sentence twice."""
    text = getattr(result, "fcib_weights", "")
    if text and text in (result.warnings or []):
        return f"unverified (see Warnings): SHA-256 {result.fcib_weights_sha256 or '—'}"
    return text or f"FCIB v{FCIB_VERSION} weights SHA-256 {result.fcib_weights_sha256 or '—'}"


def warnings_list(result) -> list:
    """Warnings to show, the DEMO label excluded (it has its own banner)."""
    return [w for w in (result.warnings or []) if w != DEMO_LABEL]


def _basename(path: str) -> str:
    return str(path).replace("\\", "/").rsplit("/", 1)[-1]
