"""The unit protocol's HTTP resources (docs/unit-protocol.md): alive, push-sequential, updates."""

from __future__ import annotations

import json
import logging
import time
from datetime import UTC, datetime

from flask import Response, current_app, request
from flask_restful import Resource
from werkzeug.exceptions import ClientDisconnected

from ..core.errors import ApiError, ErrorCode
from ..core.validate import check_hw_id, parse_bool, parse_int, parse_offset, split_path
from ..records import push_stats
from ..records.pinglog import Ping
from . import downloads
from .services import Services

log = logging.getLogger(__name__)
READ_BLOCK = 64 * 1024
# An oversized body is read and dropped before its 413 goes out, up to this many bytes or
# seconds, whichever comes first: a reply while the client is still sending ends in a reset
# that discards the reply. uWSGI's limit-post (server.ini.example) must stay above it.
DRAIN_MAX_BYTES = 16 * 1024 * 1024
DRAIN_MAX_S = 10.0


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
        """Record an alive ping: 200 once the hw_id is valid (units accept only 200), 507
        when the disk is full and the ping could not be recorded."""
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
        ack, stored = svc.push_store.store(hw_id, segments, offset, data)
        push_stats.record(svc.push_stats, hw_id, segments, stored)
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
        _drain(length)
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


def _drain(length: int) -> None:
    """Read and drop up to `length` body bytes, within DRAIN_MAX_BYTES and DRAIN_MAX_S."""
    stream = request.environ["wsgi.input"]
    deadline = time.monotonic() + DRAIN_MAX_S
    remaining = min(length, DRAIN_MAX_BYTES)
    try:
        # Checked between reads: a stalled read is ended by uWSGI's socket-timeout.
        while remaining and time.monotonic() < deadline:
            chunk = stream.read(min(remaining, READ_BLOCK))
            if not chunk:
                break
            remaining -= len(chunk)
    except (OSError, ClientDisconnected):
        pass  # the client went away: nobody is left to read the 413
    if length > DRAIN_MAX_BYTES or remaining:
        log.warning("oversized body of %s: %d of %d bytes drained before the 413", request.path,
                    min(length, DRAIN_MAX_BYTES) - remaining, length)


class Updates(Resource):
    def get(self, hw_id: str, path: str = ""):
        """List the updates tree (recursive or not) or send one of its files."""
        hw_id = checked_hw_id(hw_id)
        segments = ["updates", *split_path(path)] if path else ["updates"]
        recursive = parse_bool("recursive", request.args.get("recursive"), default=False)
        svc = services()
        tree = svc.updates
        target = tree.resolve(hw_id, segments)
        if target.is_dir():
            reply = json_reply(tree.listing(target, recursive))
            if not (recursive and len(segments) == 2):
                return reply
            # An update's file list: the unit is downloading it (delivery tracking).
            return downloads.tracked_bytes(
                reply, downloads.recorder(svc.downloads, hw_id, segments[1], None))
        # In pieces with a Content-Length, never chunked: a unit installs whatever it received.
        source, size = tree.open_file(target)
        record = (downloads.recorder(svc.downloads, hw_id, segments[1], "/".join(segments[2:]))
                  if len(segments) > 2 else None)
        return downloads.tracked_reply(source, size, "application/octet-stream", record)
