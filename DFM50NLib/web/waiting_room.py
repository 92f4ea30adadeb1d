"""What the page says while it has no session, instead of trame's endless "Loading...": its session is starting,
the server is full (it tries again by itself), the session could not start, or the session it had has ended
(crash, server stop). The launcher serves trame's static page (launcher._write_www); `adapt_page` adds this
script to it, words its spinner, and turns on the client's own retry of a launcher that answered 503
(trame-client reads `data-launcher-retry`)."""

from __future__ import annotations

import json
from pathlib import Path

from DFM50NLib.errors import DFM50NError

RETRY_SECONDS = 10
RETRIES = 60  # ten minutes of waiting for a free place; then the page asks for a reload

SCRIPT_NAME = "dfm50n-session-status.js"
TRAME_LOADING = '<div class="trame__message">Loading...</div>'
STARTING = "Starting your private session…"  # said under trame's spinner until the session answers

STATUS_JS = """
(() => {
  const RETRY_S = %(retry_s)d, RETRIES = %(retries)d, PLACES = %(places)d;
  let failures = 0, connected = false, leaving = false;
  window.addEventListener('beforeunload', () => { leaving = true; });

  function show(text, reload) {
    let box = document.getElementById('dfm-session-status');
    if (!box) {
      box = document.createElement('div');
      box.id = 'dfm-session-status';
      box.setAttribute('role', 'alert');
      box.style.cssText = 'position:fixed;top:0;left:0;right:0;z-index:100000;padding:14px 20px;' +
        'background:#fff8e1;color:#1a1a1a;border-bottom:3px solid #b26a00;font:16px/1.4 sans-serif';
      document.body.appendChild(box);
    }
    box.textContent = text + ' ';
    if (reload) {
      const b = document.createElement('button');
      b.textContent = 'Reload the page';
      b.style.cssText = 'margin-left:12px;padding:4px 12px;border:2px solid #b26a00;border-radius:4px;' +
        'background:#fff;color:#1a1a1a;font:inherit;cursor:pointer';
      b.onclick = () => window.location.reload();
      box.appendChild(b);
    }
  }
  function clear() { const box = document.getElementById('dfm-session-status'); if (box) box.remove(); }

  function launcherAnswered(xhr) {
    if (xhr.status === 200) { clear(); return; }
    const answer = xhr.response && typeof xhr.response === 'object' ? xhr.response : {};
    const error = answer.error || '';
    failures += 1;
    const again = xhr.status === 503 && failures <= RETRIES;
    const full = /resources are currently taken/.test(error);
    const why = full
      ? (PLACES === 1 ? 'The one place on this DFM50N server is in use' : `All ${PLACES} places on this DFM50N ` +
         'server are in use') + '; each user has a private session.'
      : `Your DFM50N session could not start (${error || 'HTTP ' + xhr.status}).`;
    show(again ? `${why} This page tries again every ${RETRY_S} s (try ${failures} of ${RETRIES}).`
               : `${why} Please reload the page later.`, !again);
  }

  const open = XMLHttpRequest.prototype.open;
  XMLHttpRequest.prototype.open = function (method, url, ...rest) {
    if (String(method).toUpperCase() === 'POST' && /\\/paraview\\/?$/.test(String(url))) {
      this.addEventListener('load', () => launcherAnswered(this));
      const gone = 'The DFM50N server did not answer. Please reload the page later.';
      this.addEventListener('error', () => show(gone, true));
    }
    return open.call(this, method, url, ...rest);
  };

  const NativeWebSocket = window.WebSocket;
  window.WebSocket = class extends NativeWebSocket {
    constructor(...args) {
      super(...args);
      this.addEventListener('open', () => { connected = true; });
      this.addEventListener('close', () => {
        if (leaving) return;
        show(connected
          ? 'Your DFM50N session has ended (the server stopped it or it failed). Reload the page to start a ' +
            'new one; results not yet downloaded are gone.'
          : 'Could not connect to your DFM50N session.', true);
      });
    }
  };
})();
"""


def adapt_page(www: Path, *, places: int, retry_seconds=RETRY_SECONDS, retries=RETRIES):
    """Add the status script to trame's index.html, name the page, let the client retry a full server, and say
    under the spinner that the session is starting."""
    retry = json.dumps([retry_seconds * 1000] * retries)
    _edit(
        www / "index.html",
        ('data-launcher-retry="[]"', f'data-launcher-retry="{retry}"'),
        ("<title>trame is built by Kitware</title>", "<title>DFM50N</title>"),
        ("<head>", f'<head>\n    <script src="{SCRIPT_NAME}"></script>'),  # before trame's client opens anything
    )
    _edit(www / "loading.tpl", (TRAME_LOADING, f'<div class="trame__message" role="status">{STARTING}</div>'))
    values = {"retry_s": retry_seconds, "retries": retries, "places": places}
    (www / SCRIPT_NAME).write_text(STATUS_JS % values, encoding="utf-8")


def _edit(path: Path, *edits):
    """Each (old, new) once in `path`; an `old` missing means a trame-client this page was not written for."""
    text = path.read_text(encoding="utf-8")
    for old, new in edits:
        if old not in text:
            raise DFM50NError(f"trame's page {path} has no {old!r}: this trame-client version is not supported.")
        text = text.replace(old, new, 1)
    path.write_text(text, encoding="utf-8")
