"""The live page of the streaming (WebSocket) devices: /live, and its JSON feed /api/live.

Behind the admin login like /fleet. It shows each streaming device (connected or not: the
ones the database has receipts of count too), the age of its last message, its message rate
and its latest values, and the running session with Start and Stop buttons (forms that post
to /api/sessions/start and /stop, which come back here). The server renders the page with the
values of the moment; a few lines of inline JavaScript then poll /api/live every second and
update the table in place. When the gateway process does not answer, the page says so and
shows what the database has.
"""

from __future__ import annotations

import json
import sqlite3
import time
from html import escape
from typing import Any

from flask import Blueprint, Response, request

from ..core.timestamps import to_epoch
from ..database.measurement_store import latest_values, receipt_devices, receipt_stats
from ..gateways import control
from ..records import sessions
from ..records.rawlog import ts_text
from ..records.ws_format import FAMILY
from ..status.fleet_status import ago, iso_z
from .fleet_pages import page, request_db, services, sessions_section, table
from .resources import json_reply
from .sessions_api import session_json

bp = Blueprint("live", __name__)

POLL_MS = 1000
STATUS_TIMEOUT_S = 2.0  # a hung gateway must not hold a web thread for long, every second
RECENT_SESSIONS = 5
# The values right after the device: what a phone shows before scrolling sideways.
COLUMNS = ("device", "latest values", "last message", "rate", "connection")


# --- the state: the gateway's, or the database's when the gateway does not answer -------------

def live_state() -> dict[str, Any]:
    """What /api/live answers and /live renders."""
    now = time.time()
    status, gateway = _gateway_status()
    devices = {d["device"]: _from_gateway(d) for d in (status or {}).get("devices", [])}
    with request_db() as conn:
        for device, known in _from_database(conn, devices).items():
            if device in devices:  # connected since the gateway started, nothing sent yet
                devices[device]["values"] = known["values"]
            else:
                devices[device] = known
        session = (status["session"] if status is not None
                   else session_json(sessions.running(sessions.listed(conn, 1))))
    ordered = sorted(devices.values(), key=lambda d: (not d["connected"], d["device"]))
    return {"now": _z(now), "gateway": gateway, "session": session, "devices": ordered}


def _gateway_status() -> tuple[dict[str, Any] | None, dict[str, Any]]:
    """The gateway's status answer (None when it does not give one), and what to say."""
    try:
        answer = control.call(services().config.control_socket, "status", STATUS_TIMEOUT_S)
    except control.GatewayUnavailable as exc:
        # Not logged: polled every second, and the page says it.
        return None, {"running": False, "message": str(exc)}
    if not answer.get("ok"):
        return None, {"running": False, "message": str(answer.get("error"))}
    return answer, {"running": True, "message": None}


def _from_gateway(d: dict[str, Any]) -> dict[str, Any]:
    return {"device": d["device"], "connected": d["connected"], "peer": d["peer"] or None,
            "connected_since": d["connected_since"], "last_message_at": d["last_message_at"],
            "messages_per_s": d["messages_per_s"], "values": d["latest"]}


def _from_database(conn: sqlite3.Connection, gateway: dict[str, dict[str, Any]]
                   ) -> dict[str, dict[str, Any]]:
    """The streaming devices of the database that the gateway has no values of."""
    wanted = [device for device, family in receipt_devices(conn).items()
              if family == FAMILY and not (gateway.get(device) or {}).get("values")]
    if not wanted:
        return {}
    # Only the newest receipt is wanted: counting from "~" on is an empty range, no scan.
    stats = receipt_stats(conn, wanted, "~")
    latest = latest_values(conn, wanted)
    return {device: {
        "device": device, "connected": False, "peer": None, "connected_since": None,
        "last_message_at": sessions.z(stats[device].last_received) if device in stats else None,
        "messages_per_s": None,
        "values": {v.name: {"value": v.value, "ts": v.ts + "Z"} for v in latest.get(device, [])},
    } for device in wanted}


def _z(epoch: float) -> str:
    return ts_text(int(epoch * 1_000_000)) + "Z"


@bp.get("/api/live")
def live_json() -> Response:
    """The streaming devices and the session, now (polled by /live)."""
    resp = json_reply(live_state())
    resp.headers["Cache-Control"] = "no-store"
    return resp


# --- the page ---------------------------------------------------------------------------------

def age_text(seconds: float | None) -> str:
    """Seconds while they count (a stream's last message), then as the fleet page says."""
    if seconds is None:
        return "–"
    return f"{max(seconds, 0):.1f} s" if seconds < 60 else ago(seconds)


def values_text(values: dict[str, dict[str, Any]]) -> str:
    """'counter 42 · temperature 21.5' (6 significant digits, as the script writes them)."""
    return " · ".join(f"{name} {v['value']:.6g}" for name, v in sorted(values.items()))


def _seconds_between(earlier: str | None, later: str) -> float | None:
    if earlier is None:
        return None
    return _epoch(later) - _epoch(earlier)


def _epoch(text: str) -> float:
    return to_epoch(text.removesuffix("Z"))


def device_row(d: dict[str, Any], now: str) -> str:
    """A device's <tr>, as the script rebuilds it."""
    state = "connected" if d["connected"] else "disconnected"
    rate = "–" if d["messages_per_s"] is None else f"{d['messages_per_s']:.1f}/s"
    cells = [f"<td><a href='/fleet/{escape(d['device'])}'>{escape(d['device'])}</a></td>",
             f"<td class=values>{escape(values_text(d['values']) or '–')}</td>",
             f"<td class=n title='{escape(d['last_message_at'] or '')}'>"
             f"{escape(age_text(_seconds_between(d['last_message_at'], now)))}</td>",
             f"<td class=n>{escape(rate)}</td>",
             f"<td><span class='st {_BADGE[state]}'>{state}</span></td>"]
    return f"<tr data-device='{escape(d['device'])}'>{''.join(cells)}</tr>"


_BADGE = {"connected": "st-alive", "disconnected": "st-silent"}


def session_text(session: dict[str, Any] | None) -> str:
    if session is None:
        return "No session is running."
    named = f" ({session['name']})" if session.get("name") else ""
    return f"Session {session['id']}{named} running since {iso_z(session['started_at'])}."


def _controls(session: dict[str, Any] | None) -> str:
    """The Start form (with an optional name) and the Stop form; the one that does not apply
    is hidden (the script swaps them when the session changes)."""
    back = "<input type=hidden name=next value=/live>"
    start_hidden = " hidden" if session is not None else ""
    stop_hidden = " hidden" if session is None else ""
    return (f"<form id=start method=post action=/api/sessions/start{start_hidden}>{back}"
            f"<input name=name maxlength={sessions.MAX_NAME} placeholder='name (optional)' "
            "aria-label='session name'> <button>Start session</button></form>"
            f"<form id=stop method=post action=/api/sessions/stop{stop_hidden}>{back}"
            "<button>Stop session</button></form>")


def gateway_text(gateway: dict[str, Any]) -> str:
    if gateway["running"]:
        return "Gateway running."
    return f"Gateway not answering: {gateway['message']}. Values from the database."


@bp.get("/live")
def live_page() -> Response:
    """The streaming devices and the session, updating every second."""
    state = live_state()
    with request_db() as conn:
        recent = sessions.listed(conn, RECENT_SESSIONS)
    error = request.args.get("error")
    rows = [device_row(d, state["now"]) for d in state["devices"]]
    body = "".join([
        f"<p id=error class=problem>{escape(error)}</p>" if error else "",
        f"<p id=session><strong>{escape(session_text(state['session']))}</strong></p>",
        _controls(state["session"]),
        f"<p id=gateway class=note>{escape(gateway_text(state['gateway']))}</p>",
        "<h2>Streaming devices</h2>",
        table(COLUMNS, rows, sortable=False, table_id="live"),
        f"<p class=note>Updated every {POLL_MS / 1000:g} s without reloading (as of "
        f"<span id=asof>{escape(iso_z(state['now']) or '')}</span>). Rate: messages a second "
        "over the last 10 s. Times are UTC.</p>",
        sessions_section(recent, RECENT_SESSIONS),
        "<p class=note><a href='/fleet'>Fleet</a> · <a href='/api/live'>JSON</a></p>",
        f"<script>{_LIVE_JS % {'poll_ms': POLL_MS, 'badges': json.dumps(_BADGE)}}</script>"])
    return page("Live", body)


# Rebuilds the table's rows from /api/live as device_row() does (textContent only: a device's
# names and values are never read as HTML), and swaps the session forms.
_LIVE_JS = r"""(() => {
const badges = %(badges)s;
const age = s => s === null ? "–" : s < 60 ? Math.max(s, 0).toFixed(1) + " s"
  : s < 3600 ? (s / 60).toFixed(0) + " min" : s < 172800 ? (s / 3600).toFixed(1) + " h"
  : (s / 86400).toFixed(1) + " d";
const g6 = v => String(Number(v.toPrecision(6)));
const toSecond = t => t.replace(/\.\d+Z$/, "Z");
const el = (tag, text, attrs) => {
  const e = document.createElement(tag);
  if (text !== undefined) e.textContent = text;
  Object.assign(e, attrs || {});
  return e;
};
function row(d, now) {
  const tr = el("tr"); tr.dataset.device = d.device;
  const link = el("a", d.device, {href: "/fleet/" + encodeURIComponent(d.device)});
  const state = d.connected ? "connected" : "disconnected";
  const since = d.last_message_at ? (Date.parse(now) - Date.parse(d.last_message_at)) / 1000
    : null;
  const values = Object.keys(d.values).sort().map(n => n + " " + g6(d.values[n].value));
  tr.append(el("td"), el("td", values.join(" · ") || "–", {className: "values"}),
    el("td", age(since), {className: "n", title: d.last_message_at || ""}),
    el("td", d.messages_per_s === null ? "–" : d.messages_per_s.toFixed(1) + "/s",
       {className: "n"}),
    el("td"));
  tr.cells[0].append(link);
  tr.cells[4].append(el("span", state, {className: "st " + badges[state]}));
  return tr;
}
function show(state) {
  const s = state.session;
  document.querySelector("#session strong").textContent = s === null
    ? "No session is running."
    : "Session " + s.id + (s.name ? " (" + s.name + ")" : "") + " running since "
      + toSecond(s.started_at) + ".";
  document.getElementById("start").hidden = s !== null;
  document.getElementById("stop").hidden = s === null;
  document.getElementById("gateway").textContent = state.gateway.running
    ? "Gateway running."
    : "Gateway not answering: " + state.gateway.message + ". Values from the database.";
  document.getElementById("asof").textContent = toSecond(state.now);
  document.querySelector("#live tbody").replaceChildren(
    ...state.devices.map(d => row(d, state.now)));
}
async function poll() {
  try {
    const resp = await fetch("/api/live", {cache: "no-store"});
    if (resp.ok) show(await resp.json());
  } catch (e) {
    // The server restarting: the next poll tries again.
  } finally {
    setTimeout(poll, %(poll_ms)d);
  }
}
setTimeout(poll, %(poll_ms)d);
})();"""

