"""Keyboard and screen-reader access to the page: every control named, skip links to the panel and to Score, a
focus ring that can be seen on the dark theme.

trame-slicer's icon buttons carry their name only in a hover tooltip, which screen readers never get: the names
are copied onto the buttons here (server side, from the tooltip text the page is built with). What only exists in
the browser (Vuetify's slider thumbs, clickable icons in the segment list, the streamed view images) is named by a
small script that re-runs whenever the page changes.
"""

from __future__ import annotations

import json

FOCUS = "#ffb300"  # amber: > 3:1 against the dark theme's surfaces and against the blue Score button

CSS = f"""
:focus-visible {{ outline: 3px solid {FOCUS} !important; outline-offset: 2px !important; }}
.v-field--focused {{ box-shadow: 0 0 0 3px {FOCUS}; border-radius: 4px; }}
.v-selection-control--focus-visible .v-selection-control__input {{ outline: 3px solid {FOCUS}; border-radius: 50%; }}
.dfm-skip-link {{ position: absolute; left: 8px; top: -80px; z-index: 10000; padding: 8px 14px; background: #111;
  color: #fff; border: 2px solid {FOCUS}; border-radius: 4px; font: 600 14px Roboto, sans-serif; }}
.dfm-skip-link:focus {{ top: 8px; }}
"""

# Icons that are controls without any tooltip (trame-slicer's segment list): what they do.
ICON_NAMES = {
    "mdi-circle": "Segment colour",
    "mdi-eye-outline": "Hide segment",
    "mdi-eye-off-outline": "Show segment",
    "mdi-delete-outline": "Delete segment",
}

SCRIPT = """
(function () {
  const ICONS = __ICONS__;
  const hasName = (el, fromContent = true) => {
    if ((el.getAttribute('aria-label') || '').trim() || el.getAttribute('title')) return true;
    const by = el.getAttribute('aria-labelledby');
    const text = (id) => document.getElementById(id)?.textContent.trim();
    if (by && by.split(/\\s+/).some(text)) return true;
    if (el.id && document.querySelector('label[for="' + el.id + '"]')?.textContent.trim()) return true;
    return fromContent && el.tagName !== 'INPUT' && el.tagName !== 'IMG' && (el.textContent || '').trim().length > 0;
  };
  const viewName = (el) => el.closest('.layout-grid-item')?.querySelector('.dfm-view-name')?.textContent.trim();
  const name = () => {
    document.querySelectorAll('[role=button].v-icon, button.v-icon').forEach((el) => {
      const icon = Object.keys(ICONS).find((c) => el.classList.contains(c));
      const segment = el.closest('.v-list-item')?.querySelector('input')?.value;
      if (icon) el.setAttribute('aria-label', ICONS[icon] + (segment ? ' ' + segment : ''));
    });
    document.querySelectorAll('[role=slider]').forEach((el) => {
      if (hasName(el, false)) return;
      const view = viewName(el);
      const label = el.closest('.v-input')?.parentElement?.querySelector('.v-label, .text-subtitle-2, .v-card-title');
      el.setAttribute('aria-label', view ? view + ' slice' : (label?.textContent.trim() || 'Value'));
    });
    document.querySelectorAll('img.image-display-area').forEach((el) => {
      el.setAttribute('alt', (viewName(el) || 'Slicer') + ' view');
    });
    document.querySelectorAll('input').forEach((el) => {
      if (!hasName(el) && el.closest('.v-list-item')) el.setAttribute('aria-label', 'Segment name');
    });
    document.querySelectorAll('[role=progressbar]').forEach((el) => {
      if (!hasName(el, false)) el.setAttribute('aria-label', 'Server activity');
    });
    document.querySelectorAll('[role=tooltip]').forEach((el) => {
      const owner = document.querySelector('[aria-describedby="' + el.id + '"]');
      const label = owner?.getAttribute('aria-label');
      if (label && !el.getAttribute('aria-label')) el.setAttribute('aria-label', label);
    });
    document.querySelectorAll('.v-list[role=list] > .v-list-item[role=option]').forEach((el) => {
      el.setAttribute('role', 'listitem');  // a segment row holds its own buttons: a list item, not an option
      el.removeAttribute('aria-selected');
      el.setAttribute('aria-current', el.classList.contains('v-list-item--active') ? 'true' : 'false');
    });
    const meta = document.querySelector('meta[name=viewport]');
    if (meta && /maximum-scale/.test(meta.content)) meta.content = 'width=device-width,initial-scale=1';
  };
  let pending = false;
  new MutationObserver(() => {
    if (pending) return;
    pending = true;
    requestAnimationFrame(() => { pending = false; name(); });
  }).observe(document.body, { subtree: true, childList: true, attributes: true, attributeFilter: ['class', 'value'] });
  name();
})();
""".replace("__ICONS__", json.dumps(ICON_NAMES))


def name_icon_buttons(element, tooltip=None) -> int:
    """Give every icon-only button under `element` the text of its tooltip as `aria-label` (recursively);
    returns how many were named."""
    named = 0
    kind = kind_of(element)
    children = [c for c in getattr(element, "children", []) if not isinstance(c, str)]
    if kind == "vtooltip":
        tooltip = _tooltip_text(element) or tooltip
    if kind == "vbtn" and not _has_text(element):
        tips = (_tooltip_text(c) for c in children if kind_of(c) == "vtooltip")
        text = tooltip or next((t for t in tips if t), None)
        text = text or _toggle_name(element)
        if text and not any(k.startswith("_dfm_aria") for k in element._attributes):
            element._attributes["_dfm_aria"] = f'aria-label="{_attr(text)}"'
            named += 1
    for child in children:
        named += name_icon_buttons(child, tooltip if kind in ("vtooltip", "template") else None)
    return named


def _toggle_name(button):
    """trame-slicer's chevron buttons that fold an option card: named, and their state told (aria-expanded)."""
    icon = button._impl.py_attr.get("icon")
    expression = icon[0] if isinstance(icon, tuple) else str(icon or "")
    if "mdi-chevron" not in expression:
        return None
    if "?" in expression:
        button._attributes["_dfm_expanded"] = f':aria-expanded="String(!!({expression.split("?")[0].strip()}))"'
    return "Show or hide these options"


def kind_of(element) -> str:
    """'vbtn' for VBtn (trame's Python widgets) and v-btn alike."""
    return str(getattr(element, "_elem_name", "")).lower().replace("-", "")


def set_attribute(element, name, value):
    """A plain HTML attribute on a widget built elsewhere (trame-slicer's)."""
    element._attributes[f"_dfm_{name}"] = f'{name}="{_attr(value)}"'


def _has_text(element) -> bool:
    py = element._impl.py_attr
    if py.get("text") or py.get("aria_label"):
        return True
    return any(isinstance(c, str) and c.strip() and not c.strip().startswith("<") for c in element.children)


def _tooltip_text(tooltip):
    text = tooltip._impl.py_attr.get("text")
    if isinstance(text, str) and text.strip():
        return text.strip()
    for child in tooltip.children:
        if isinstance(child, str) and child.strip():
            return child.strip()
        words = [c for c in getattr(child, "children", []) if isinstance(c, str) and c.strip()]
        if words:
            return words[0].strip()
    return None


def _attr(text) -> str:
    return str(text).replace("&", "&amp;").replace('"', "&quot;").replace("<", "&lt;")
