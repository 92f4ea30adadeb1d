"""The page: trame-slicer's viewer (slice views + 3D, segment editor on the left) and the DFM50N panel on the
right (case, lesion, the Slicer panel's choices, Score / Cancel, result card, scores table, report downloads).

Elements the tests and users rely on carry ids (`dfm-...`).
"""

from __future__ import annotations

from trame.widgets import client, html
from trame.widgets.vuetify3 import (
    VAlert,
    VBtn,
    VCard,
    VCardText,
    VCardTitle,
    VCheckbox,
    VChip,
    VExpansionPanel,
    VExpansionPanels,
    VExpansionPanelText,
    VExpansionPanelTitle,
    VFileInput,
    VNavigationDrawer,
    VProgressLinear,
    VSelect,
    VTextField,
)
from trame_slicer.app.ui import (
    LayoutButton,
    MprInteractionButton,
    SegmentEditorToolbarUI,
    SegmentEditorUI,
    SegmentEditorUndoRedoUI,
    ViewerLayout,
    VolumePropertyUI,
)
from trame_slicer.app.ui.control_button import ControlButton
from undo_stack import Signal

from DFM50NLib.constants import DISCLAIMER
from DFM50NLib.scene import params
from DFM50NLib.web import a11y


def choices(name) -> list:
    """The items of the select for the parameter `name`: the parameter node's values, worded as the Slicer
    panel's combo boxes word them (params.CHOICE_LABELS, one source for both front ends)."""
    return [
        {"title": title, "value": value}
        for value, title in zip(params.FIELD_BY_NAME[name].choices, params.choice_labels(name))
    ]


class _NoUpload:
    """trame-slicer's own loader is replaced by DFM50N's (size limit, private folder, DFM50N's reader checks)."""

    on_load_volume = Signal(list)

    def set_download_callback(self, _cb):
        pass


class DFM50NAppUI:
    def __init__(self, server, layout_manager, app):
        self.app = app
        self.server = server
        self.tool_registry = {}
        self.load_volume_items_buttons = _NoUpload()
        self.download_scene_button = _NoUpload()
        ctrl = server.controller

        with ViewerLayout(server, title="DFM50N", is_drawer_visible=False) as self.layout:
            self.layout.title.set_text("DFM50N — occult lymph-node metastasis risk (research use only)")
            with self.layout.drawer:
                self._register_tool_ui(SegmentEditorUI)
                self._register_tool_ui(VolumePropertyUI)
            with self.layout.toolbar:
                self._tool_button("mdi-tune-variant", "Volume Properties", VolumePropertyUI)
                self.layout_button = LayoutButton(classes="mt-1", disabled=(f"!{self.name.is_volume_loaded}",))
                self.mpr_interaction_button = MprInteractionButton(
                    classes="mt-1", disabled=(f"!{self.name.is_volume_loaded}",)
                )
                self._tool_button("mdi-brush", "segment editor", SegmentEditorUI)
                SegmentEditorToolbarUI(editor_ui=self.tool_registry[SegmentEditorUI])
            with self.layout.undo_redo:
                SegmentEditorUndoRedoUI(
                    editor_ui=self.tool_registry[SegmentEditorUI],
                    v_if=(f"{self.name.active_tool} === 'SegmentEditorUI'",),
                )
            with self.layout.content:
                layout_manager.initialize_layout_grid(self.layout)
            with VNavigationDrawer(location="right", permanent=True, width=380, id="dfm-panel", aria_label="DFM50N"):
                self._panel(ctrl)
            client.Style(a11y.CSS)
            client.Script(a11y.SCRIPT)
            client.Script(SHOW_NEW_RESULT_JS)
            skip = [
                html.A(
                    f"Skip to {what}",
                    href=f"#{target}",
                    classes="dfm-skip-link",
                    click=f"$event.preventDefault(); $event.target.ownerDocument.getElementById('{target}').focus()",
                )
                for what, target in (("Score", "dfm-score"), ("the case panel", "dfm-open-demo"))
            ]
        root = self.layout.root.children
        for link in reversed(skip):  # first in the page, so the first Tab reaches them
            root.remove(link)
            root.insert(0, link)
        self.layout.drawer.width = 300  # trame-slicer's 350 px editor leaves the views too little at 1280 px
        self._name_landmarks()
        a11y.name_icon_buttons(self.layout.root)
        self.layout.flush_content()

    # ------------------------------------------------------------------ trame-slicer's tool drawer

    def _name_landmarks(self):
        """The page title is its heading; each side bar says what it holds (screen-reader landmarks)."""
        a11y.set_attribute(self.layout.title, "role", "heading")
        a11y.set_attribute(self.layout.title, "aria-level", "1")
        a11y.set_attribute(self.layout.drawer, "aria-label", "Segment editor")
        for child in self.layout.root.children:
            if a11y.kind_of(child) == "vnavigationdrawer" and child is not self.layout.drawer:
                if not child._impl.py_attr.get("aria_label"):
                    a11y.set_attribute(child, "aria-label", "Tools")

    @property
    def data(self):
        return self.layout.typed_state.data

    @property
    def name(self):
        return self.layout.typed_state.name

    def _register_tool_ui(self, tool_ui_type):
        self.tool_registry[tool_ui_type] = tool_ui_type(
            v_if=(f"{self.name.active_tool} === '{tool_ui_type.__name__}'",)
        )

    def _tool_button(self, icon, name, tool_ui_type):
        def toggle():
            visible = not self.data.is_drawer_visible or self.data.active_tool != tool_ui_type.__name__
            self.data.is_drawer_visible = visible
            self.data.active_tool = tool_ui_type.__name__ if visible else None

        ControlButton(
            icon=icon,
            name=f"Open {name}",
            click=toggle,
            active=(f"{self.name.active_tool} === '{tool_ui_type.__name__}'",),
            disabled=(f"!{self.name.is_volume_loaded}",),
            classes="mt-1",
        )

    # ------------------------------------------------------------------ DFM50N panel

    def _panel(self, ctrl):
        app = self.app
        upload = self.server.trigger_name(app.upload_chunk)
        lesion_upload = self.server.trigger_name(app.upload_lesion_chunk)
        report = self.server.trigger_name(self._download_report)
        seg_dl = self.server.trigger_name(self._download_segmentation)
        self._sr_dl = self.server.trigger_name(self._download_dicom_sr)
        with html.Div(classes="pa-3 d-flex flex-column", style="gap: 10px;"):
            VAlert(
                v_if=("dfm_weights_missing",),
                type="warning",
                title="FCIB weights not found: scoring is off",
                text=("dfm_weights_missing",),
                id="dfm-weights-missing",
                density="compact",
            )
            html.H2("1. Case", classes="text-subtitle-1")
            VBtn(
                "Open demo case",
                id="dfm-open-demo",
                click=app.open_demo,
                disabled=("dfm_busy",),
                prepend_icon="mdi-flask-outline",
                size="small",
                style="align-self: flex-start;",
            )
            _file_input("dfm-upload", "Upload a CT", ".nii,.gz,.nrrd,.nhdr,.mha,.zip", upload)
            html.Div("NIfTI (.nii, .nii.gz), NRRD or a zipped DICOM series (.zip)", classes="text-caption")
            VSelect(
                v_if=("dfm_data_files.length",),
                id="dfm-data-file",
                label="Or open a file from the server's data folder",
                items=("dfm_data_files",),
                density="compact",
                hide_details=True,
                disabled=("dfm_busy",),
                update_modelValue=(app.open_data_file, "[$event]"),
            )
            html.Div("{{ dfm_case_name }}", id="dfm-case", classes="text-caption")
            lesion = ("dfm-upload-lesion", "Add an existing lesion", ".nii,.gz,.nrrd,.dcm")
            _file_input(*lesion, lesion_upload, v_if=("dfm_case_name",))
            html.Div(
                "a label map, a Slicer .seg.nrrd, a DICOM-SEG or an RTSTRUCT (.dcm)",
                v_if=("dfm_case_name",),
                classes="text-caption",
            )

            html.H2("2. Lesion", classes="text-subtitle-1")
            VSelect(
                id="dfm-segment",
                label="Lesion segment (draw it on the left)",
                items=("dfm_segments",),
                v_model=("dfm_segment_id",),
                update_modelValue=(app.segment_chosen, "[$event]"),
                density="compact",
                hide_details=True,
                disabled=("dfm_busy",),
                no_data_text="No segment: open the segment editor and Add a segment",
            )
            html.Div(
                "{{ dfm_segment_voxels }} voxels drawn",
                id="dfm-segment-voxels",
                classes="text-caption",
                raw_attrs=[':data-voxels="dfm_segment_voxels"'],
            )
            VSelect(
                label="Cube centre",
                items=("dfm_centers", choices("centerMethod")),
                v_model=("dfm_center",),
                density="compact",
                hide_details=True,
            )
            with html.Div(classes="d-flex", style="gap: 6px;"):
                VSelect(
                    label="Smoking",
                    id="dfm-smoking",
                    items=("dfm_yes_no", choices("smoking")),
                    v_model=("dfm_smoking",),
                    density="compact",
                    hide_details=True,
                )
                VSelect(
                    label="Spiculated",
                    id="dfm-spiculated",
                    items=("dfm_yes_no",),
                    v_model=("dfm_spiculated",),
                    density="compact",
                    hide_details=True,
                )
            VTextField(
                label="Short axis (cm); empty: measured",
                v_model=("dfm_short_axis",),
                density="compact",
                hide_details=True,
                id="dfm-short-axis",
            )
            with VExpansionPanels(variant="accordion"), VExpansionPanel():
                VExpansionPanelTitle("Advanced")
                with VExpansionPanelText():
                    VSelect(
                        label="Orientation",
                        items=("dfm_orients", choices("orientation")),
                        v_model=("dfm_orientation",),
                        density="compact",
                    )
                    VSelect(
                        label="Geometry",
                        items=("dfm_geoms", choices("geometry")),
                        v_model=("dfm_geometry",),
                        density="compact",
                    )
                    VSelect(
                        label="Device",
                        items=("dfm_devices", choices("device")),
                        v_model=("dfm_device",),
                        density="compact",
                    )
            VCheckbox(label="Show the 50 mm cube", v_model=("dfm_show_cube",), density="compact", hide_details=True)

            with html.Div(classes="d-flex", style="gap: 8px;"):
                VBtn(
                    "Score",
                    id="dfm-score",
                    color="primary",
                    click=app.score,
                    disabled=("dfm_busy || !!dfm_weights_missing || !dfm_segment_id",),
                    prepend_icon="mdi-calculator",
                )
                VBtn("Cancel", id="dfm-cancel", click=app.cancel, disabled=("!dfm_busy",), prepend_icon="mdi-cancel")
            VProgressLinear(
                v_show=("dfm_busy",), model_value=("dfm_progress",), color="primary", height=6, id="dfm-progress"
            )
            html.Div("{{ dfm_message }}", id="dfm-message", classes="text-caption")
            VAlert(
                v_if=("dfm_error",),
                type="error",
                text=("dfm_error",),
                id="dfm-error",
                density="compact",
                closable=True,
                click_close="dfm_error = ''",
            )
            self._result_card(report)
            self._table()
            VBtn(
                "Download segmentation (.seg.nrrd)",
                id="dfm-download-seg",
                size="small",
                variant="text",
                disabled=("!dfm_segments.length",),
                click=_download("'lesion.seg.nrrd'", f"trigger('{seg_dl}')", "application/octet-stream"),
            )
            html.Div(DISCLAIMER, classes="text-caption text-grey")

    def _result_card(self, report):
        with VCard(v_if=("dfm_result",), id="dfm-result", variant="tonal", border=True):
            with VCardTitle(classes="d-flex align-center", style="gap: 8px;"):
                html.Span(
                    "{{ dfm_result.score }}",
                    id="dfm-score-value",
                    raw_attrs=[':data-score="dfm_result.score_exact"', ':data-stale="dfm_result.stale ? 1 : 0"'],
                    classes="text-h4",
                    style=("dfm_result.stale ? 'text-decoration: line-through' : ''",),
                )
                VChip(
                    "{{ dfm_result.risk }}",
                    id="dfm-risk",
                    color=("dfm_result.high ? 'red' : 'green'",),
                    variant="flat",
                )
                VChip("DEMO", v_if=("dfm_result.demo",), id="dfm-demo", color="orange", variant="flat", size="small")
            with VCardText():
                VAlert(
                    "Stale: the lesion was edited after this score. Score again; until then reports are refused.",
                    v_if=("dfm_result.stale",),
                    id="dfm-result-stale",
                    type="warning",
                    density="compact",
                    classes="mb-2",
                )
                html.Div("{{ dfm_result.segment }}", id="dfm-result-segment", classes="text-subtitle-2")
                html.Div("DFM50N score; high risk at ≥ {{ dfm_result.threshold }} · {{ dfm_result.classifier }}")
                html.Div(
                    "Lesion {{ dfm_result.mask_voxels }} voxels ({{ dfm_result.mask_volume }}), cube centre "
                    "{{ dfm_result.center }} (RAS mm, {{ dfm_result.center_method }})",
                    id="dfm-lesion",
                    raw_attrs=[':data-voxels="dfm_result.mask_voxels"'],
                )
                html.Div(
                    "Combined model: {{ dfm_result.combined }}",
                    v_if=("dfm_result.combined",),
                    id="dfm-combined",
                    raw_attrs=[':data-combined="dfm_result.combined_exact"'],
                )
                with html.Ul(v_if=("dfm_result.warnings.length",), id="dfm-warnings", classes="text-orange"):
                    html.Li("{{ w }}", v_for="w in dfm_result.warnings")
                with html.Div(classes="d-flex flex-wrap mt-2", style="gap: 8px;"):  # 3 buttons: wrap, never clip
                    for fmt, mime in (("html", "text/html"), ("pdf", "application/pdf")):
                        VBtn(
                            f"Report {fmt.upper()}",
                            id=f"dfm-report-{fmt}",
                            size="small",
                            prepend_icon="mdi-download",
                            click=_download(
                                f"dfm_result.case + '_report.{fmt}'", f"trigger('{report}', ['{fmt}'])", mime
                            ),
                        )
                    VBtn(
                        "DICOM SR",
                        v_if=("dfm_result.dicom_sr",),
                        id="dfm-dicom-sr",
                        size="small",
                        prepend_icon="mdi-download",
                        click=_download(
                            "dfm_result.case + '_dicom_sr.zip'", f"trigger('{self._sr_dl}')", "application/zip"
                        ),
                    )

    def _table(self):
        with html.Div(v_if=("dfm_rows.length",), id="dfm-table"):
            html.H2("Scores", classes="text-subtitle-1")
            with html.Table(classes="text-caption", style="width: 100%; border-collapse: collapse;"):
                with html.Tr():
                    for h in ("Volume", "Segment", "Score", "Risk", "Notes"):
                        html.Th(h, style="text-align: left;")
                with html.Tr(
                    v_for="r in dfm_rows",
                    key="r.key",
                    raw_attrs=[':data-stale="r.stale ? 1 : 0"', ':data-earlier="r.earlier ? 1 : 0"'],
                ):
                    html.Td("{{ r.volume }}")
                    html.Td("{{ r.segment }}")
                    html.Td("{{ r.score }}", style=("r.stale ? 'text-decoration: line-through' : ''",))
                    html.Td("{{ r.risk }}")
                    with html.Td():
                        VChip("stale: score again", v_if=("r.stale && !r.earlier",), color="orange", size="x-small")
                        VChip("earlier case", v_if=("r.earlier",), size="x-small")
                        VChip("DEMO", v_if=("r.demo && !r.stale",), size="x-small")

    # ------------------------------------------------------------------ downloads

    def _download_report(self, fmt):
        try:
            return self.server.protocol.addAttachment(self.app.report_bytes(fmt))
        except Exception as exc:
            self.app.state.dfm_error = f"Report: {exc}"
            return None

    def _download_dicom_sr(self):
        try:
            return self.server.protocol.addAttachment(self.app.dicom_sr_bytes())
        except Exception as exc:
            self.app.state.dfm_error = f"DICOM SR: {exc}"
            return None

    def _download_segmentation(self):
        try:
            return self.server.protocol.addAttachment(self.app.segmentation_bytes())
        except Exception as exc:
            self.app.state.dfm_error = f"Segmentation: {exc}"
            return None


SHOW_NEW_RESULT_JS = """
(() => {  // a new score scrolls its card into view: under Score, it is below the fold at 1280x800
  let shown = null;
  new MutationObserver(() => {
    const value = document.getElementById('dfm-score-value');
    const segment = document.getElementById('dfm-result-segment');
    const key = value && `${value.dataset.score}|${segment ? segment.textContent : ''}`;
    if (key && key !== shown) document.getElementById('dfm-result').scrollIntoView({block: 'nearest'});
    shown = key;
  }).observe(document.body, {subtree: true, childList: true, attributes: true, attributeFilter: ['data-score']});
})();
"""


def _file_input(element_id, label, accept, trigger, **kwargs):
    """A file field whose file streams to the server in pieces (`trigger`, web/streaming.py; capped there at every
    piece), or is refused at once over the limit."""
    return VFileInput(
        id=element_id,
        label=label,
        density="compact",
        hide_details=True,
        disabled=("dfm_busy",),
        accept=accept,
        change=(
            "const f = $event.target.files;"
            "if (f.length && f[0].size > dfm_max_upload_mb * 1048576) {"
            "  dfm_error = 'The file is over the server upload limit of ' + dfm_max_upload_mb + ' MB.';"
            "} else if (f.length) {"
            f"  window.dfm_stream_upload(f[0], '{trigger}');"
            "}"
        ),
        **kwargs,
    )


def _download(name_js, content_js, mime) -> str:
    """Client code saving what the server sends as a file; nothing when the server sends nothing (it failed
    and put its message on the page), instead of trame's download of a file holding "null"."""
    return f"{content_js}.then((c) => {{ if (c) utils.download({name_js}, c, '{mime}'); }})"
