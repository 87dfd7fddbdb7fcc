"""Every error the server can answer, declared once: code, HTTP status, default message."""

from __future__ import annotations

from collections.abc import Mapping
from enum import Enum
from typing import Any


class ErrorCode(Enum):
    """(HTTP status, default message) of each error code in a JSON error body."""

    BAD_HW_ID = (400, "hardware ID does not match the configured pattern")
    BAD_DEVICE_ID = (400, "device names are letters, digits, '.', '_' and '-'")
    BAD_PATH = (400, "path segments must be plain names")
    BAD_OFFSET = (400, "offset must be a non-negative integer")
    BAD_QUERY = (400, "invalid query parameter")
    BAD_CONTENT_LENGTH = (400, "Content-Length must be a non-negative integer")
    INCOMPLETE_BODY = (400, "request body shorter than Content-Length; nothing was written")
    UNAUTHORIZED = (401, "admin login required (HTTP basic auth)")
    FORBIDDEN_DIR = (403, "this directory cannot be pushed to")
    UNKNOWN_UNIT = (403, "this unit is in no deployment and the server accepts known units only")
    CROSS_ORIGIN = (403, "this request came from another site's page (Origin header)")
    NOT_FOUND = (404, "no such resource")
    SESSION_CONFLICT = (409, "a session is running already, or none is running to stop")
    LENGTH_REQUIRED = (411, "Content-Length is required")
    BODY_TOO_LARGE = (413, "request body larger than allowed")
    FILE_TOO_LARGE = (413, "pushed file would grow past the allowed size")
    SKIPPED_PART_OF_FILE = (416, "offset is past the end of the server's copy")
    INTERNAL_ERROR = (500, "internal server error")
    GATEWAY_UNAVAILABLE = (503, "the gateway process is not running (see its log)")
    INSUFFICIENT_STORAGE = (507, "not enough free disk space on the server")

    @property
    def status(self) -> int:
        return self.value[0]

    @property
    def default_message(self) -> str:
        return self.value[1]


class ApiError(Exception):
    """An error answered as JSON {"error": CODE, "message": ..., **extra}, plus `headers`."""

    def __init__(self, code: ErrorCode, message: str | None = None, *,
                 headers: Mapping[str, str] | None = None, **extra: Any) -> None:
        super().__init__(message or code.default_message)
        self.code = code
        self.message = message or code.default_message
        self.headers = dict(headers or {})
        self.extra = extra

    @property
    def status(self) -> int:
        return self.code.status

    def body(self) -> dict[str, Any]:
        return {"error": self.code.name, "message": self.message, **self.extra}
