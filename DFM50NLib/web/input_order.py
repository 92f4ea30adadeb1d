"""One ordered queue for what the user does in the page: a click (Score, Paint, Add segment) reaches the server after
every view event (mouse press, move, release) the user gave before it, and a stroke drawn after a click reaches
it after that click.

Why: trame-rca's views send their mouse events one at a time, each waiting for the server's answer, while a
button's `trame.trigger` went at once. On a busy server a Score clicked right after a stroke overtook the stroke's
release (where Paint applies) and scored an empty segment. trame also holds state changes back while any call is
unanswered, so a choice made right before Score (smoking: yes) could reach the server after it. The server
handles its messages in the order they arrive (wslink awaits each one), so ordering the page's messages is enough.

How: a page script (`INPUT_ORDER_JS`, loaded before the views mount) gives trame's client a session whose view
events and a remote whose triggers and state updates go through one queue, sent in order; view events keep
trame-rca's backpressure (one unanswered at a time, consecutive moves merged, by trame-rca's own rule); a
trigger first pushes the state changes trame holds back. The views hand their events to the queue at once
(their own queue no longer waits for the server), so a click needs only to wait until the view input given
just before it (SETTLE_MS) has been handed over.
"""

from __future__ import annotations

import base64

SETTLE_MS = 100  # a click this soon after view input waits so long for the views to hand that input over

INPUT_ORDER_JS = """
(function () {
  const SETTLE_MS = @SETTLE_MS@;
  const VIEW_EVENT = "trame.rca.event";
  const MERGE_IGNORES = new Set(["x", "y", "positions", "rotation", "translation", "factor"]);  // as trame-rca
  const queue = [];  // not yet sent, in the user's order: {session, args} (a view event) or {run} (an action)
  const settling = [];  // actions that came right after view input: the views may still hold some of it
  let inFlight = false, lastViewInput = -1e9, lastHandover = -1e9, settleTimer = null, busyClient = null;
  // for the tests: counts, and what is still to be sent or answered
  const order = (window.dfmInputOrder = {
    sent: 0, merged: 0, waited: 0, heldState: 0, pending: () => queue.length + settling.length + (inFlight ? 1 : 0),
  });

  for (const type of ["pointerdown", "pointermove", "pointerup", "wheel"]) {
    window.addEventListener(type, (e) => {
      if (e.target.closest && e.target.closest(".remote-controlled-area")) lastViewInput = performance.now();
    }, true);
  }

  function mergeable(a, b) {  // trame-rca's rule for merging queued events: moves differing only in position
    if (a.type === "MouseWheel" || b.type === "MouseWheel") return false;
    const keys = Object.keys(a);
    return keys.length === Object.keys(b).length && keys.every((k) => MERGE_IGNORES.has(k) || a[k] === b[k]);
  }

  function pump() {
    while (queue.length) {
      const head = queue[0];
      if (head.run) {
        queue.shift();
        head.run();
        continue;
      }
      if (inFlight) return;  // backpressure: the next view event waits for the server's answer to this one
      queue.shift();
      inFlight = true;
      order.sent += 1;
      Promise.resolve(head.session.call(VIEW_EVENT, head.args))
        .catch((e) => console.error("DFM50N view event", e))
        .finally(() => { inFlight = false; pump(); });
    }
  }

  function queueViewEvent(session, args) {
    lastHandover = performance.now();
    const tail = queue[queue.length - 1];
    if (tail && tail.session === session && tail.args[0] === args[0] && tail.args[1] === args[1] &&
        mergeable(tail.args[2], args[2])) {
      tail.args = args;
      order.merged += 1;
    } else {
      queue.push({ session, args });
    }
    pump();
    return Promise.resolve();  // the view's own queue hands over its next event at once
  }

  function releaseSettled() {
    settleTimer = null;
    const now = performance.now();
    const first = settling[0];
    const inputDone = now - first.inputAt >= SETTLE_MS;
    // input given after the click is not waited for; input from before it may still be arriving on a slow page
    const drained = lastViewInput > first.at || now - lastHandover >= SETTLE_MS / 2;
    if (!(inputDone && drained)) {
      settleTimer = setTimeout(releaseSettled, 10);
      return;
    }
    for (const item of settling.splice(0)) queue.push(item);
    pump();
  }

  function queueAction(send) {
    return new Promise((resolve, reject) => {
      const client = busyClient;
      if (client) client.beginBusy();  // trame__busy covers the wait, as it covers the call
      const item = {
        run() {
          try {
            Promise.resolve(send()).then(resolve, reject);
          } catch (e) {
            reject(e);
          } finally {
            if (client) client.endBusy();
          }
        },
      };
      const now = performance.now();
      if (settling.length || now - lastViewInput < SETTLE_MS) {
        order.waited += 1;
        Object.assign(item, { at: now, inputAt: lastViewInput });
        settling.push(item);
        if (!settleTimer) settleTimer = setTimeout(releaseSettled, Math.max(0, lastViewInput + SETTLE_MS - now));
      } else {
        queue.push(item);
        pump();
      }
    });
  }

  const wrapped = new WeakMap();
  function once(raw, make) {
    if (!raw) return raw;
    if (!wrapped.has(raw)) wrapped.set(raw, make(raw));
    return wrapped.get(raw);
  }
  const wrapSession = (raw) => once(raw, (s) => ({
    ...s,
    call: (method, args = [], kwargs = {}) =>
      method === VIEW_EVENT ? queueViewEvent(s, args) : s.call(method, args, kwargs),
  }));
  const wrapConnection = (raw) => once(raw, (c) => ({ ...c, getSession: () => wrapSession(c.getSession()) }));
  // trame holds state changes back while the client is busy (any call unanswered, its own state pushes too) and
  // sends them once it is idle: a click right after a choice (smoking: yes) would reach the server before that
  // choice. A trigger first pushes the changes still held, and goes after them.
  let pushingHeldState = false, stateQueued = null, triggersQueued = Promise.resolve();  // triggers keep their order
  function pushHeldState() {
    const state = window.trame.state;
    if (!state || !state.dirtyKeys || !state.dirtyKeys.size) return Promise.resolve();
    order.heldState += 1;
    return new Promise((resolve) => {
      stateQueued = resolve;  // once the held keys' update is in the queue (or nothing was sent)
      pushingHeldState = true;
      try {
        Promise.resolve(state.flush()).catch(() => {}).finally(resolve);  // takes the held keys now
      } finally {
        pushingHeldState = false;
      }
    });
  }
  const wrapRemote = (raw) => once(raw, (r) => ({
    ...r,
    Trame: {
      ...r.Trame,
      trigger: (...a) => {
        let sent;
        triggersQueued = triggersQueued.then(pushHeldState).then(() => {
          sent = queueAction(() => r.Trame.trigger(...a));
        });
        return triggersQueued.then(() => sent);
      },
      updateState: (...a) => {
        const sent = queueAction(() => r.Trame.updateState(...a));
        if (stateQueued) {
          const queued = stateQueued;
          stateQueued = null;
          queued();
        }
        return sent;
      },
    },
  }));
  const wrapClient = (raw) => once(raw, (c) => ({
    ...c,
    isBusy: () => !pushingHeldState && c.isBusy(),
    getConnection: () => wrapConnection(c.getConnection()),
    getRemote: () => wrapRemote(c.getRemote()),
  }));

  // trame's client object and its state's copy of it (the client is frozen: wrap, do not patch)
  const trame = window.trame;
  let client = trame.client;
  busyClient = client;
  Object.defineProperty(trame, "client", {
    configurable: true,
    enumerable: true,
    get: () => wrapClient(client),
    set: (c) => { client = c; busyClient = c; },
  });
  if (trame.state) trame.state.client = trame.client;
})();
""".replace("@SETTLE_MS@", str(SETTLE_MS))


def install(server):
    """Load INPUT_ORDER_JS in the page after trame connects and before the views mount (a module script: trame
    loads those first), so the views take their session from the wrapped client."""
    source = base64.b64encode(INPUT_ORDER_JS.encode()).decode()
    server.enable_module({"scripts": [f"data:text/javascript;base64,{source}"]})
