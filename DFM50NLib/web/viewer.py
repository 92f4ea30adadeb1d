"""What a radiologist reads around the browser app's views: orientation letters on every slice view edge, the
view's name, its slice position and window/level; a layout that keeps the axial view large on a laptop and on a
desktop screen; segment colours that stand out on lung and never repeat.

trame-slicer draws only the images; the text here is HTML over each view, fed from the slice node (its
SliceToRAS matrix, read as Slicer's own annotations read it) through trame state.
"""

from __future__ import annotations

import colorsys

import numpy as np

from DFM50NLib.web.a11y import name_icon_buttons

LAYOUT_ID = "DFM50N: axial over three"
AXES = (("R", "L"), ("A", "P"), ("S", "I"))  # positive, negative direction of RAS x, y, z
VIEW_NAMES = {"Red": "Axial", "Yellow": "Sagittal", "Green": "Coronal"}

# Bright, saturated, mutually distinct colours (none yellow: the cube outline is yellow); each is readable on
# dark lung and on grey soft tissue at the editor's fill opacity.
PALETTE = (
    (1.00, 0.30, 0.30),  # red
    (0.20, 0.80, 1.00),  # sky blue
    (0.30, 1.00, 0.40),  # green
    (1.00, 0.40, 1.00),  # magenta
    (1.00, 0.60, 0.15),  # orange
    (0.55, 0.55, 1.00),  # periwinkle
    (0.10, 1.00, 0.85),  # aqua
    (1.00, 0.65, 0.75),  # pink
)
MIN_COLOUR_DISTANCE = 0.35  # RGB (0-1) distance below which two segments read as the same colour
MIN_LIGHTNESS, MIN_SATURATION = 0.45, 0.45  # HLS: darker or greyer than this vanishes on lung / soft tissue


def direction_letters(direction, share=0.35) -> str:
    """Patient-direction letters of a RAS direction (e.g. 'L', or 'LA' for an oblique one): every axis whose
    share of the direction is at least `share`, the largest first."""
    d = np.asarray(direction, dtype=float)
    norm = float(np.linalg.norm(d))
    if norm == 0:
        return ""
    d = d / norm
    order = np.argsort(-np.abs(d))
    return "".join(AXES[i][0 if d[i] > 0 else 1] for i in order if abs(d[i]) >= share)


def edge_letters(slice_to_ras) -> dict:
    """The letters at the four edges of a slice view: screen right is the slice's x axis, screen up its y axis
    (so an axial view in Slicer's default, radiological convention reads R on the left, L on the right)."""
    m = np.asarray(slice_to_ras, dtype=float)
    x, y = m[:3, 0], m[:3, 1]
    return {
        "left": direction_letters(-x),
        "right": direction_letters(x),
        "top": direction_letters(y),
        "bottom": direction_letters(-y),
    }


def slice_position(slice_to_ras) -> str:
    """Where the slice lies along its normal, as radiology viewers write it: 'S 12.0 mm', 'I 40.5 mm'."""
    m = np.asarray(slice_to_ras, dtype=float)
    normal, origin = m[:3, 2], m[:3, 3]
    axis = int(np.argmax(np.abs(normal)))
    unit = np.zeros(3)
    unit[axis] = 1.0 if normal[axis] > 0 else -1.0  # the positive side of the dominant axis, towards the viewer
    offset = float(np.dot(origin, normal)) * float(np.sign(normal[axis]) or 1.0)
    letter = AXES[axis][0 if offset >= 0 else 1]
    return f"{letter} {abs(offset):.1f} mm"


def slice_index(value, low, high, step) -> str:
    """'slice 45/120' from the view's slider range (1-based, as viewers count images)."""
    if not step or high <= low:
        return ""
    total = int(round((high - low) / step)) + 1
    index = min(max(int(round((value - low) / step)) + 1, 1), total)
    return f"slice {index}/{total}"


def is_visible_colour(rgb) -> bool:
    _h, lightness, saturation = colorsys.rgb_to_hls(*rgb)
    return lightness >= MIN_LIGHTNESS and saturation >= MIN_SATURATION


def colour_distance(a, b) -> float:
    return float(np.linalg.norm(np.subtract(a, b)))


def pick_colour(rgb, others):
    """`rgb` if it is visible on lung and distinct from every colour in `others`; else the first palette colour
    that is (an imported segment keeps its own colour when that colour works)."""

    def fits(c):
        return all(colour_distance(c, o) >= MIN_COLOUR_DISTANCE for o in others)

    if is_visible_colour(rgb) and fits(rgb):
        return tuple(rgb)
    for c in PALETTE:
        if fits(c):
            return c
    return PALETTE[len(others) % len(PALETTE)]  # more segments than palette colours: cycle


def layout():
    """Axial view large on top, sagittal, coronal and 3D in a row under it: at 1280x800 and at 1920x1080 the
    axial view is wider than tall, never a narrow column."""
    from trame_slicer.views import Layout, LayoutDirection
    from trame_slicer.views import ViewLayoutDefinition as V

    row = Layout(LayoutDirection.Horizontal, [V.sagittal_view(), V.coronal_view(), V.threed_view()])
    return Layout(LayoutDirection.Vertical, [V.axial_view(), row], flex_sizes=["2", "1"])


class ViewerAnnotations:
    """Feeds each view's overlay (state `dfm_view_<tag>`) from its slice node and its volumes."""

    def __init__(self, server, slicer_app):
        self.server = server
        self.slicer_app = slicer_app
        self._connected = set()

    def attach(self, layout_manager, layout_state):
        from trame.widgets import html

        layout_manager.register_layout(LAYOUT_ID, layout())
        layout_state.current_layout_id = LAYOUT_ID
        for factory in self.slicer_app.view_manager._factories:  # trame-slicer keeps each view's page template
            for tag, rca in factory._views.items():
                key = f"dfm_view_{tag}"
                self.server.state[key] = {"name": VIEW_NAMES.get(tag, "3D"), "color": _hex(rca.slicer_view)}
                with rca.vuetify_view, rca.vuetify_view.root.children[0]:
                    _overlay(html, key, slice_view=tag in VIEW_NAMES)
                    name_icon_buttons(rca.vuetify_view.root)
                if tag in VIEW_NAMES and tag not in self._connected:
                    rca.slicer_view.modified.connect(lambda view, key=key: self.update(view, key))
                    self._connected.add(tag)
                    self.update(rca.slicer_view, key)

    def update(self, view, key):
        node = view.get_view_node()
        if node is None:
            return
        m = node.GetSliceToRAS()
        matrix = [[m.GetElement(r, c) for c in range(4)] for r in range(4)]
        info = dict(self.server.state[key] or {})
        info.update(edge_letters(matrix))
        info["position"] = slice_position(matrix)
        low, high = view.get_slice_range()
        info["index"] = slice_index(view.get_slice_value(), low, high, view.get_slice_step())
        info["window"] = info["level"] = ""
        foreground = self.slicer_app.scene.GetNodeByID(view.get_foreground_volume_id() or "")
        info["foreground"] = foreground.GetName() if foreground is not None else ""  # as Slicer's "F:" annotation
        volume = self.slicer_app.scene.GetNodeByID(view.get_background_volume_id() or "")
        display = volume.GetDisplayNode() if volume is not None else None
        if display is not None and hasattr(display, "GetWindow"):
            info["window"], info["level"] = f"{display.GetWindow():.0f}", f"{display.GetLevel():.0f}"
        if info != self.server.state[key]:
            self.server.state[key] = info

    def render_all(self, *_):
        """Every view drawn now (a new case: the previous case's cube and lesion must not linger)."""
        for view in self.slicer_app.view_manager.get_views():
            view.schedule_render()

    def recolour_segments(self, segmentation, known_ids):
        """New segments get a colour visible on lung and unlike every other segment's; returns the IDs seen."""
        seg = segmentation.GetSegmentation()
        ids = [seg.GetNthSegmentID(i) for i in range(seg.GetNumberOfSegments())]
        for sid in ids:
            if sid in known_ids:
                continue
            others = [seg.GetSegment(o).GetColor() for o in ids if o != sid and o in known_ids]
            colour = pick_colour(seg.GetSegment(sid).GetColor(), others)
            if colour_distance(colour, seg.GetSegment(sid).GetColor()) > 1e-6:
                seg.GetSegment(sid).SetColor(*colour)
            known_ids.add(sid)
        return set(ids)


def _hex(view):
    node = view.get_view_node()
    r, g, b = node.GetLayoutColor() if node is not None else (0.5, 0.5, 0.5)
    return f"#{int(r * 255):02x}{int(g * 255):02x}{int(b * 255):02x}"


def _overlay(html, key, slice_view):
    """Text over a view (pointer events pass through to the view): the name top right, letters at the edge
    centres, position and slice number bottom left, window/level bottom right (short lines: the small views
    are about 200 px wide at 1280 px)."""
    text = "position:absolute; color:#fff; font: 600 12px/1.25 Roboto, sans-serif; pointer-events:none; z-index:2;"
    text += "text-shadow: 0 0 3px #000, 0 0 2px #000; white-space: nowrap;"
    html.Div(
        f"{{{{ {key}.name }}}}",
        classes="dfm-view-name",
        style=(f"'{text} top:6px; right:8px; padding:0 6px; border-right: 4px solid ' + {key}.color",),
    )
    if not slice_view:
        return
    for edge, where in (
        ("left", "left:6px; top:50%; transform:translateY(-50%);"),
        ("right", "right:8px; top:50%; transform:translateY(-50%);"),
        ("top", "top:6px; left:50%; transform:translateX(-50%);"),
        ("bottom", "bottom:30px; left:50%; transform:translateX(-50%);"),
    ):
        html.Div(
            f"{{{{ {key}.{edge} }}}}",
            classes=f"dfm-orientation dfm-orientation-{edge}",
            style=text + where + "font-size:15px;",
        )
    with html.Div(classes="dfm-slice-position", style=text + "left:8px; bottom:30px;"):
        html.Div(f"{{{{ {key}.position }}}}")
        html.Div(f"{{{{ {key}.index }}}}")
    html.Div(
        f"F: {{{{ {key}.foreground }}}}",
        v_if=(f"{key}.foreground",),
        classes="dfm-foreground",
        style=text + "left:8px; bottom:62px;",
    )
    with html.Div(classes="dfm-window-level", style=text + "right:8px; bottom:30px; text-align:right;"):
        html.Div(f"W {{{{ {key}.window }}}}")
        html.Div(f"L {{{{ {key}.level }}}}")
