"""Update replies that record how much of them went out (table update_downloads).

The body goes out in pieces with its Content-Length set (never chunked: units cannot read
that). The WSGI server asks for the next piece only after it wrote the previous one, so a piece
counts as sent when the iterator is resumed after it; the body is whole only when the iterator
ran to its end. uWSGI calls close() however the reply ended (also when the unit went away), and
that is when the row is queued for the batching writer.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from datetime import UTC, datetime
from typing import BinaryIO

from flask import Response

from ..database.db_writer import BatchWriter

PIECE = 4096
# Called with (bytes sent, size, whether all of it was sent).
OnClose = Callable[[int, int, bool], None]


class TrackedBody:
    """An iterable response body over `size` bytes of `source`; reports on close()."""

    def __init__(self, source: BinaryIO, size: int, on_close: OnClose | None) -> None:
        self.source = source
        self.size = size
        self.on_close = on_close
        self.sent = 0  # bytes the server has written
        self.finished = False
        self._read = 0
        self._pending = 0  # the piece handed out last, not yet known to be written
        self._closed = False

    def __iter__(self) -> TrackedBody:
        return self

    def __next__(self) -> bytes:
        # Asked for more: the server wrote the piece it had.
        self.sent += self._pending
        self._pending = 0
        # Never more than the Content-Length promised, even if the file grew meanwhile.
        piece = self.source.read(min(PIECE, self.size - self._read))
        if not piece:
            self.finished = True
            raise StopIteration
        self._read += len(piece)
        self._pending = len(piece)
        return piece

    def close(self) -> None:
        """Called once by the WSGI server when the reply is over, sent whole or not."""
        if self._closed:
            return
        self._closed = True
        self.source.close()
        if self.on_close is not None:
            # A file that shrank meanwhile ends the iteration early: not whole.
            self.on_close(self.sent, self.size, self.finished and self.sent == self.size)


def recorder(writer: BatchWriter, hw_id: str, update_name: str, file: str | None) -> OnClose:
    """on_close for one reply: queue its update_downloads row (file None: the listing)."""
    def record(sent: int, size: int, full: bool) -> None:
        ts = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")
        writer.submit((ts, update_name, file, hw_id, sent, size, int(full)))
    return record


def tracked_reply(source: BinaryIO, size: int, mimetype: str,
                  on_close: OnClose | None) -> Response:
    """A 200 streaming `source` in pieces, with the same headers a bytes body would get."""
    reply = Response(TrackedBody(source, size, on_close), mimetype=mimetype,
                     direct_passthrough=True)
    reply.headers["Content-Length"] = str(size)
    return reply


def tracked_bytes(reply: Response, on_close: OnClose) -> Response:
    """The same reply (a bytes body), sent as a tracked one."""
    body = reply.get_data()
    return tracked_reply(io.BytesIO(body), len(body), reply.mimetype, on_close)
