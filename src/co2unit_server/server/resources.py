"""The unit protocol's HTTP resources (PROTOCOL.md): alive, push-sequential, updates."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime

from flask import Response, current_app, request
from flask_restful import Resource
from werkzeug.exceptions import ClientDisconnected

from ..errors import ApiError, ErrorCode
from ..pinglog import Ping
from ..services import Services
from ..validate import check_hw_id, parse_bool, parse_int, parse_offset, split_path

log = logging.getLogger(__name__)
READ_BLOCK = 64 * 1024
# Oversized bodies up to this size are read and dropped; uWSGI's limit-post cuts larger ones.
DRAIN_LIMIT = 1024 * 1024


def json_reply(body: object) -> Response:
    """A 200 with the JSON body, bytes as Flask-RESTful would send them.

    Built here rather than by Flask-RESTful, which passes a Response through untouched: its
    content negotiation and make_response cost a sixth of a pushed chunk's CPU.
    """
    return Response(json.dumps(body) + "\n", mimetype="application/json")


def services() -> Services:
    return current_app.extensions["co2unit"]


def checked_hw_id(hw_id: str) -> str:
    return check_hw_id(hw_id, services().hw_id_pattern)


class Alive(Resource):
    def post(self, hw_id: str):
        """Record an alive ping; always 200 once the hw_id is valid (units accept only 200)."""
        ping = Ping(
            ts=datetime.now(UTC).replace(tzinfo=None),
            hw_id=checked_hw_id(hw_id),
            site_code=request.args.get("site_code"),
            rssi_raw=_lenient_int("rssi_raw"),
            rssi_dbm=_lenient_int("rssi_dbm"),
            ber_raw=_lenient_int("ber_raw"),
        )
        services().pings.record(ping)
        return json_reply({})


def _lenient_int(name: str) -> int | None:
    # A garbled signal field must not cost the unit its cycle: keep the ping, drop the value.
    try:
        return parse_int(name, request.args.get(name))
    except ApiError as exc:
        log.warning("alive ping from %s: %s; stored as None", request.path, exc.message)
        return None


class PushSequential(Resource):
    def put(self, hw_id: str, path: str):
        """Store one chunk of a pushed file at ?offset= and answer the directory's ack_file."""
        svc = services()
        hw_id = check_hw_id(hw_id, svc.hw_id_pattern)
        segments = split_path(path)
        svc.push_store.check_pushable(segments)
        offset = parse_offset(request.args.get("offset"))
        data = read_body(svc.config.max_body_bytes)
        ack = svc.push_store.push(hw_id, segments, offset, data)
        return json_reply({"ack_file": ack.as_json()})


def read_body(max_bytes: int) -> bytes:
    """Read the raw body (whatever its Content-Type) or refuse it before writing anything."""
    # Werkzeug reads a missing or garbled Content-Length as 0, which would ack an empty chunk.
    raw_length = request.environ.get("CONTENT_LENGTH", "").strip()
    if not raw_length:
        raise ApiError(ErrorCode.LENGTH_REQUIRED, "a PUT needs a Content-Length header")
    if not (raw_length.isascii() and raw_length.isdigit()):
        raise ApiError(ErrorCode.BAD_CONTENT_LENGTH, f"Content-Length {raw_length!r} is not a "
                       "non-negative integer")
    length = int(raw_length)
    if length > max_bytes:
        # Read (and drop) what was sent, so the client sees the 413 and not a reset.
        _read_exactly(min(length, DRAIN_LIMIT))
        raise ApiError(ErrorCode.BODY_TOO_LARGE,
                       f"body of {length} bytes is over the limit of {max_bytes}")
    body = _read_exactly(length)
    if len(body) < length:
        raise ApiError(ErrorCode.INCOMPLETE_BODY,
                       f"got {len(body)} of {length} bytes; nothing was written")
    return body


def _read_exactly(length: int) -> bytes:
    """Read up to `length` body bytes; fewer when the client went away or stalled."""
    stream = request.environ["wsgi.input"]
    chunks, remaining = [], length
    try:
        while remaining:
            chunk = stream.read(min(remaining, READ_BLOCK))
            if not chunk:
                break
            chunks.append(chunk)
            remaining -= len(chunk)
    except (OSError, ClientDisconnected):
        pass  # a dropped or timed-out link: what arrived is returned and judged by the caller
    if remaining:
        log.warning("body of %s cut short: %d of %d bytes", request.path, length - remaining,
                    length)
    return b"".join(chunks)


class Updates(Resource):
    def get(self, hw_id: str, path: str = ""):
        """List the updates tree (recursive or not) or send one of its files."""
        hw_id = checked_hw_id(hw_id)
        segments = ["updates", *split_path(path)] if path else ["updates"]
        recursive = parse_bool("recursive", request.args.get("recursive"), default=False)
        tree = services().updates
        target = tree.resolve(hw_id, segments)
        if target.is_dir():
            return json_reply(tree.listing(target, recursive))
        # Bytes with a Content-Length, never streamed: a unit installs whatever it received.
        return Response(tree.read(target), mimetype="application/octet-stream")
