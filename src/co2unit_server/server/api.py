"""The JSON API for admins' tools: /api/units, /api/units/<id>[/readings|/measurements],
/api/pings.

/api/units lists the CO2 units and the gateways' devices (TCP weather stations, polled
NodeMCUs), each with its `id` and `family` (co2unit, tcp, pull); `<id>` is a unit's hardware ID
or a device's name. Times are ISO UTC with Z. Errors use the app's format {"error": CODE,
"message": ...}; every bad parameter is a 400 before anything is read.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterator
from contextlib import ExitStack

from flask import Blueprint, Response, request

from ..core.errors import ApiError, ErrorCode
from ..core.validate import check_device_id, check_hw_id
from ..database.measurement_store import MEASUREMENTS, measurement_batches
from ..database.research_tables import READINGS, batches
from ..database.tables import TEXTS, ResearchError, parse_time, time_range
from ..status import fleet_status, gateway_status
from ..status.fleet_status import UnitDetail, UnitRow, iso_z
from ..status.gateway_status import DeviceDetail, DeviceRow
from .fleet_pages import is_hw_id, request_db, services, unknown_id
from .resources import json_reply

bp = Blueprint("api", __name__, url_prefix="/api")

PINGS_LIMIT, PINGS_MAX_LIMIT = 100, 1000
MIMETYPES = {"csv": "text/csv", "json": "application/json"}


def bad_query(message: str) -> ApiError:
    """A 400 for a query parameter."""
    return ApiError(ErrorCode.BAD_QUERY, message)


def unit_json(row: UnitRow) -> dict:
    """A unit of /api/units."""
    return {"id": row.hw_id, "family": "co2unit", "hw_id": row.hw_id, "nickname": row.nickname,
            "site": row.site, "tier": row.tier,
            "deployment": row.deployment, "status": row.status,
            "last_ping": iso_z(row.last_ping), "last_push": iso_z(row.last_push),
            "last_reading": iso_z(row.last_reading), "rssi_dbm": row.rssi_dbm,
            "rssi_dbm_median_7d": row.rssi_median, "bytes_7d": row.bytes_7d,
            "error_entries_7d": row.errors_7d,
            "updates": [{"name": u.name, "state": u.state} for u in row.updates]}


def detail_json(detail: UnitDetail) -> dict:
    """A unit with its history: deployments, last 30 days of pings, files, updates."""
    body = unit_json(detail.row)
    body["deployments"] = [{**d, "start_ts": iso_z(d["start_ts"]), "end_ts": iso_z(d["end_ts"])}
                           for d in detail.deployments]
    body["pings"] = [_ping_json(p) for p in detail.pings]
    body["files"] = [{"directory": f.directory, "name": f.name, "size": f.size,
                      "last_write": iso_z(f.mtime)} for f in detail.files]
    body["updates"] = [{"name": u.name, "state": u.state, "published": iso_z(u.published),
                        "delivered": iso_z(u.delivered), "confirmed": iso_z(u.confirmed),
                        "files": u.files, "files_sent": u.files_sent}
                       for u in detail.row.updates]
    return body


def device_json(row: DeviceRow) -> dict:
    """A gateway device of /api/units; its values by name, each with its time."""
    return {"id": row.device, "family": row.family, "status": row.status,
            "interval_s": row.interval_s, "last_data": iso_z(row.last_data),
            "last_received": iso_z(row.last_received), "received_7d": row.received_7d,
            "refused_7d": row.refused_7d, "watched": row.watched,
            "values": {v.name: {"value": v.value, "time": v.ts + "Z"} for v in row.values}}


def device_detail_json(detail: DeviceDetail) -> dict:
    """A device with its newest receipts (one per packet or poll), newest first."""
    body = device_json(detail.row)
    body["receipts"] = [{"time": r.ts + "Z", "verdict": r.verdict, "stored": r.stored,
                         "expected_s": r.expected_s, "detail": r.detail or None,
                         "source": r.source} for r in detail.receipts]
    return body


def _ping_json(p: dict) -> dict:
    return {"time": p["ping_ts"] + "Z", **{k: v for k, v in p.items() if k != "ping_ts"}}


@bp.get("/units")
def units() -> Response:
    """Every unit ever seen with its status, problems first; then the gateway devices."""
    cfg = services().config
    with request_db() as conn:
        rows = fleet_status.fleet(conn, cfg)
        devices = gateway_status.fleet_devices(conn, cfg)
    return json_reply({"units": [unit_json(row) for row in rows]
                       + [device_json(row) for row in devices]})


@bp.get("/units/<ident>")
def unit(ident: str) -> Response:
    """One unit with its history, or one gateway device with its newest receipts."""
    svc = services()
    if not is_hw_id(ident):
        with request_db() as conn:
            device = gateway_status.device_detail(conn, svc.config, ident)
        if device is None:
            raise unknown_id(ident)
        return json_reply(device_detail_json(device))
    with request_db() as conn:
        detail = fleet_status.unit_detail(conn, svc.config, ident)
    if detail is None:
        raise _unknown(ident)
    return json_reply(detail_json(detail))


def _unknown(hw_id: str) -> ApiError:
    return ApiError(ErrorCode.NOT_FOUND, f"no unit {hw_id} has pinged, pushed or been deployed")


@bp.get("/units/<hw_id>/readings")
def readings(hw_id: str) -> Response:
    """The unit's imported readings with their deployment, streamed as JSON or CSV."""
    svc = services()
    hw_id = check_hw_id(hw_id, svc.hw_id_pattern)
    fmt = _format()
    start, end = request.args.get("from"), request.args.get("to")
    with ExitStack() as stack:
        conn = stack.enter_context(request_db())
        try:
            time_range(start, end, ("from", "to"))
            rows = batches(conn, READINGS, hw_id, start, end, encoding=fmt)
        except ResearchError as exc:
            raise bad_query(str(exc)) from exc
        if not fleet_status.seen(conn, svc.config, hw_id):
            raise _unknown(hw_id)
        # The connection now belongs to the response: closed when the stream ends.
        return Response(_closing(TEXTS[fmt](READINGS, rows), stack.pop_all()),
                        mimetype=MIMETYPES[fmt])


@bp.get("/units/<ident>/measurements")
def measurements(ident: str) -> Response:
    """A gateway device's values, a row per value (time, device, name, value), streamed as
    JSON or CSV; `name` (repeatable, or comma-separated) picks values by name."""
    check_device_id(ident)
    fmt = _format()
    start, end = request.args.get("from"), request.args.get("to")
    names = _names(request.args.getlist("name"))
    with ExitStack() as stack:
        conn = stack.enter_context(request_db())
        try:
            rows = measurement_batches(conn, ident, start, end, names, encoding=fmt)
        except ResearchError as exc:
            raise bad_query(str(exc)) from exc
        if not gateway_status.fleet_devices(conn, services().config, devices=[ident]):
            if services().hw_id_pattern.fullmatch(ident):
                raise ApiError(ErrorCode.NOT_FOUND, f"{ident} is a CO2 unit: its values are "
                               f"at /api/units/{ident}/readings")
            raise unknown_id(ident)
        return Response(_closing(TEXTS[fmt](MEASUREMENTS, rows), stack.pop_all()),
                        mimetype=MIMETYPES[fmt])


def _format() -> str:
    fmt = request.args.get("format", "json")
    if fmt not in TEXTS:
        raise bad_query(f"unknown format {fmt!r}: use {' or '.join(TEXTS)}")
    return fmt


def _names(given: list[str]) -> list[str] | None:
    """The names of `name=a&name=b,c`; None (all) when not given."""
    if not given:
        return None
    names = [n.strip() for value in given for n in value.split(",") if n.strip()]
    if not names:
        raise bad_query("name is empty: give value names (temperature, mq135.co2, ...) or "
                        "leave it out for all")
    return names


def _closing(texts: Iterator[str], stack: ExitStack) -> Iterator[str]:
    with stack:
        yield from texts


@bp.get("/pings")
def pings() -> Response:
    """Pings in time order, `limit` at a time from `since`; `next` is the cursor to go on."""
    limit = _limit(request.args.get("limit"))
    cursor = request.args.get("cursor")
    position = (_decode_cursor(cursor) if cursor is not None
                else (_since(request.args.get("since")), -1))
    with request_db() as conn:
        found = conn.execute(
            "SELECT rowid, ping_ts, unit_id, nickname, rssi_raw, rssi_dbm, ber_raw FROM pings "
            "WHERE ping_ts >= :ts AND (ping_ts > :ts OR rowid > :rowid) "
            "ORDER BY ping_ts, rowid LIMIT :n",
            {"ts": position[0], "rowid": position[1], "n": limit + 1}).fetchall()
    page, more = found[:limit], len(found) > limit
    return json_reply({
        "pings": [{"time": ts + "Z", "hw_id": unit, "nickname": nick, "rssi_raw": raw,
                   "rssi_dbm": dbm, "ber_raw": ber} for _, ts, unit, nick, raw, dbm, ber in page],
        "next": _encode_cursor(page[-1][1], page[-1][0]) if more else None})


def _limit(raw: str | None) -> int:
    if raw is None:
        return PINGS_LIMIT
    if not (raw.isascii() and raw.isdigit()) or not 1 <= int(raw) <= PINGS_MAX_LIMIT:
        raise bad_query(f"limit must be an integer from 1 to {PINGS_MAX_LIMIT}, got {raw!r}")
    return int(raw)


def _since(raw: str | None) -> str:
    """The bound as pings store time ('' for the beginning)."""
    try:
        since = parse_time(raw, "since")
    except ResearchError as exc:
        raise bad_query(str(exc)) from exc
    return "" if since is None else since.isoformat(timespec="microseconds")


def _encode_cursor(ping_ts: str, rowid: int) -> str:
    return base64.urlsafe_b64encode(json.dumps([ping_ts, rowid]).encode()).decode().rstrip("=")


def _decode_cursor(raw: str) -> tuple[str, int]:
    try:
        ts, rowid = json.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))
        if not (isinstance(ts, str) and type(rowid) is int and parse_time(ts)):
            raise ValueError
    except (ValueError, TypeError, binascii.Error, ResearchError, UnicodeDecodeError):
        raise bad_query(f"cursor {raw[:40]!r} is not one this server gave out (pass `next` "
                        "back unchanged)") from None
    return ts, rowid

