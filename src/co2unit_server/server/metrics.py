"""Prometheus metrics at GET /metrics: requests, latency, pings, pushed bytes, refusals, ping ages.

Under uWSGI each worker process counts in files of its own (prometheus_client's multiprocess
mode, which it picks when first imported: the entry points set PROMETHEUS_MULTIPROC_DIR to
`config.metrics_dir` before that) and /metrics adds up every process's files. In a plain
process (tests, the Flask test client) each app counts in a registry of its own.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

from flask import Flask, Response, g, request
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    values,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector

from ..core.config import Config
from ..core.headroom import storage
from ..database import db
from .resources import Alive, PushSequential

log = logging.getLogger(__name__)

# Flask-RESTful names a resource's endpoint after its class, lowercased.
ALIVE_ENDPOINT = Alive.__name__.lower()
PUSH_ENDPOINT = PushSequential.__name__.lower()
# Requests that matched no route (404, 405): one label value, never the raw path.
UNMATCHED = "unmatched"
# From a ping (about 1 ms) to a chunk trickling in over CAT-M1 (seconds).
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                   30.0)
_STARTED = "metrics_started"


def multiprocess_mode() -> bool:
    """Whether prometheus_client counts in per-process files (decided when it was imported)."""
    return values.ValueClass is not values.MutexValue


class RequestMetrics:
    """The counters and the histogram the request hooks update."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter(
            "co2unit_http_requests", "HTTP requests answered, by Flask endpoint and status.",
            ("endpoint", "status"), registry=registry)
        self.latency = Histogram(
            "co2unit_http_request_duration_seconds",
            "Time from the request's arrival in the app to its response, by Flask endpoint.",
            ("endpoint",), buckets=LATENCY_BUCKETS, registry=registry)
        self.pings = Counter("co2unit_pings", "Alive pings recorded.", registry=registry)
        self.push_bytes = Counter(
            "co2unit_push_bytes",
            "Bytes of pushed chunks acknowledged with 200 (a re-sent chunk counts again).",
            registry=registry)
        self.push_refused = Counter(
            "co2unit_push_refused", "Pushed chunks refused, by the JSON error code.",
            ("reason",), registry=registry)
        # (endpoint, status) -> the labelled counter and histogram: labels() costs as much as
        # the update itself. Bounded, as the label values are.
        self._children: dict[tuple[str, int], tuple[Counter, Histogram]] = {}

    def count(self, endpoint: str, status: int, seconds: float | None,
              response: Response) -> None:
        """Count one answered request."""
        children = self._children.get((endpoint, status))
        if children is None:
            children = (self.requests.labels(endpoint, str(status)),
                        self.latency.labels(endpoint))
            self._children[endpoint, status] = children
        children[0].inc()
        if seconds is not None:
            children[1].observe(seconds)
        if endpoint == ALIVE_ENDPOINT and status == 200:
            self.pings.inc()
        elif endpoint == PUSH_ENDPOINT:
            if status == 200:
                self.push_bytes.inc(request.content_length or 0)
            else:
                self.push_refused.labels(error_code(response)).inc()


def error_code(response: Response) -> str:
    """The `error` of a JSON error body (a bounded set of codes), else HTTP_<status>."""
    body = response.get_json(silent=True) if response.is_json else None
    code = body.get("error") if isinstance(body, dict) else None
    return code if isinstance(code, str) else f"HTTP_{response.status_code}"


class PingAgeCollector:
    """Seconds since each unit's last ping, read from the pings table at scrape time."""

    # One statement that seeks the (unit_id, ping_ts) index once per unit: a plain
    # GROUP BY scans every ping (206 ms for 1,000 units x 3 years of pings; this 8.5 ms).
    QUERY = """
        WITH RECURSIVE units(id) AS (
            SELECT min(unit_id) FROM pings
            UNION ALL
            SELECT (SELECT min(unit_id) FROM pings WHERE unit_id > units.id)
            FROM units WHERE units.id IS NOT NULL)
        SELECT id, (julianday('now') - julianday(
            (SELECT max(ping_ts) FROM pings WHERE unit_id = id))) * 86400.0
        FROM units WHERE id IS NOT NULL"""

    def __init__(self, db_path: Path) -> None:
        self.db_path = db_path

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(
            "co2unit_seconds_since_last_ping", "Seconds since the unit's last alive ping.",
            labels=("hw_id",))
        for hw_id, age in self._ages():
            family.add_metric((hw_id,), age)
        yield family

    def _ages(self) -> list[tuple[str, float]]:
        if not self.db_path.exists():
            return []  # no ping yet; opening it would create it
        try:
            conn = db.connect_readonly(self.db_path, timeout_s=1.0)
            try:
                return conn.execute(self.QUERY).fetchall()
            finally:
                conn.close()
        except sqlite3.Error as exc:
            log.warning("metrics: cannot read the pings of %s: %s", self.db_path, exc)
            return []


class StorageCollector:
    """Free space and the full state (below min_free_bytes) of remote_data and var, read at
    scrape time: the truth whichever process refuses data, with no file of its own to write."""

    def __init__(self, config: Config) -> None:
        self.config = config

    def collect(self) -> Iterator[Metric]:
        full = GaugeMetricFamily(
            "co2unit_storage_full", "1 while the directory's filesystem has less than "
            "min_free_bytes free (new data refused), else 0.", labels=("path",))
        free = GaugeMetricFamily(
            "co2unit_storage_free_bytes", "Bytes free on the directory's filesystem.",
            labels=("path",))
        for shown in storage(self.config):
            full.add_metric((str(shown.path),), int(shown.full))
            free.add_metric((str(shown.path),), shown.free)
        yield full
        yield free


def scrape_registry(app_registry: CollectorRegistry, config: Config) -> CollectorRegistry:
    """What /metrics exports: every worker's files in multiprocess mode, else this app's."""
    if multiprocess_mode():
        registry = CollectorRegistry()
        config.metrics_dir.mkdir(parents=True, exist_ok=True)
        MultiProcessCollector(registry, path=str(config.metrics_dir))
    else:
        registry = app_registry
    registry.register(PingAgeCollector(config.db_path))
    registry.register(StorageCollector(config))
    return registry


def init_app(app: Flask, config: Config) -> None:
    """Count every request of `app` and serve GET /metrics."""
    app_registry = CollectorRegistry()
    metrics = RequestMetrics(app_registry)
    exported = scrape_registry(app_registry, config)

    def start_timer() -> None:
        setattr(g, _STARTED, time.perf_counter())

    def count(response: Response) -> Response:
        started = g.pop(_STARTED, None)
        seconds = None if started is None else time.perf_counter() - started
        metrics.count(request.endpoint or UNMATCHED, response.status_code, seconds, response)
        return response

    def metrics_page() -> Response:
        return Response(generate_latest(exported), content_type=CONTENT_TYPE_LATEST)

    # Registered before any other hook, so the latency includes access control.
    app.before_request(start_timer)
    app.after_request(count)
    app.add_url_rule("/metrics", "metrics", metrics_page, methods=["GET"])
