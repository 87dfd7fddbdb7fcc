"""GET /metrics: in one process (test client) and added up over uWSGI's two worker processes."""

from __future__ import annotations

import json
import socket
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

from prometheus_client.parser import text_string_to_metric_families

from co2unit_server.core.config import SHM_DIR, load_config
from co2unit_server.core.headroom import free_bytes
from co2unit_server.database import db
from co2unit_server.serve import METRICS_DIR_ENV, metrics_environ
from co2unit_server.server.app import create_app
from co2unit_server.server.metrics import PingAgeCollector
from co2unit_server.simulator.launcher import free_port

from conftest import HW_ID

CHUNK = 4096


def unit(i: int) -> str:
    return f"co2unit-{i:012x}"


def push_url(hw_id: str, offset: int, directory: str = "data/readings") -> str:
    return f"/ou/{hw_id}/push-sequential/{directory}/readings-0000.tsv?offset={offset}"


def samples(text: str) -> dict[tuple[str, frozenset], float]:
    """Every sample of an exposition, keyed by (sample name, labels)."""
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(found: dict, name: str, **labels: str) -> float:
    return found.get((name, frozenset(labels.items())), 0.0)


# The requests each test sends, with what they must add to the counters.
PINGS = 60
PUSH_UNITS, CHUNKS_EACH = 6, 4
# (method, url, body, expected status, refusal reason)
REFUSALS = [
    ("PUT", push_url(unit(900), 10), b"x", 416, "SKIPPED_PART_OF_FILE"),
    ("PUT", push_url(unit(901), 10), b"x", 416, "SKIPPED_PART_OF_FILE"),
    ("PUT", push_url(unit(902), 0), b"x" * (64 * 1024 + 1), 413, "BODY_TOO_LARGE"),
    ("PUT", push_url(unit(903), 0, "updates/evil"), b"x", 403, "FORBIDDEN_DIR"),
]


def workload() -> list[tuple[str, str, bytes | None]]:
    """Pings of 12 units, then each push unit's chunks in order (one lane per unit)."""
    return [("POST", f"/ou/{unit(i % 12)}/alive?site_code=s", None) for i in range(PINGS)]


def assert_counted(found: dict) -> None:
    assert value(found, "co2unit_pings_total") == PINGS
    assert value(found, "co2unit_http_requests_total", endpoint="alive", status="200") == PINGS
    assert value(found, "co2unit_http_request_duration_seconds_count", endpoint="alive") == PINGS
    pushes = PUSH_UNITS * CHUNKS_EACH
    assert value(found, "co2unit_http_requests_total", endpoint="pushsequential",
                 status="200") == pushes
    assert value(found, "co2unit_push_bytes_total") == pushes * CHUNK
    reasons = Counter(reason for *_, reason in REFUSALS)
    for reason, count in reasons.items():
        assert value(found, "co2unit_push_refused_total", reason=reason) == count
    for hw_id in map(unit, range(12)):
        age = value(found, "co2unit_seconds_since_last_ping", hw_id=hw_id)
        assert 0 <= age < 120, (hw_id, age)


def test_metrics_count_requests_pings_bytes_and_refusals(client, config):
    for method, url, body in workload():
        assert client.open(url, method=method, data=body).status_code == 200
    for i in range(PUSH_UNITS):
        for k in range(CHUNKS_EACH):
            resp = client.put(push_url(unit(100 + i), k * CHUNK), data=b"r" * CHUNK)
            assert resp.status_code == 200
    for method, url, body, status, _ in REFUSALS:
        assert client.open(url, method=method, data=body).status_code == status
    client.get("/no/such/page")
    app = client.application
    app.extensions["co2unit"].pings.table.flush()  # the pings table's writer thread

    resp = client.get("/metrics")
    assert resp.status_code == 200 and resp.mimetype == "text/plain"
    found = samples(resp.get_data(as_text=True))
    assert_counted(found)
    # 404s are one label value, never the raw path.
    assert value(found, "co2unit_http_requests_total", endpoint="unmatched", status="404") == 1
    assert not any("/no/such" in str(labels) for _, labels in found)


def test_each_app_counts_in_a_registry_of_its_own(tmp_path):
    apps = [create_app(load_config({}, var_dir=tmp_path / f"var{i}",
                                   remote_data_dir=tmp_path / "rd", min_free_bytes=0))
            for i in range(2)]
    apps[0].test_client().post(f"/ou/{HW_ID}/alive?site_code=x")
    counts = [value(samples(app.test_client().get("/metrics").get_data(as_text=True)),
                    "co2unit_pings_total") for app in apps]
    assert counts == [1, 0]


def test_storage_full_and_free_bytes_of_each_data_directory(tmp_path):
    dirs = {"remote_data_dir": tmp_path / "rd", "var_dir": tmp_path / "var"}
    for floor, full in ((0, 0), (free_bytes(tmp_path) + (1 << 30), 1)):
        app = create_app(load_config({}, min_free_bytes=floor, **dirs))
        found = samples(app.test_client().get("/metrics").get_data(as_text=True))
        for path in dirs.values():
            assert value(found, "co2unit_storage_full", path=str(path)) == full
            assert abs(value(found, "co2unit_storage_free_bytes", path=str(path))
                       - free_bytes(tmp_path)) < 64 << 20


def test_the_workers_counting_files_are_kept_off_the_data_disk(tmp_path):
    """prometheus_client's files are sparse and memory-mapped: on a full data disk a worker
    touching a new page of one dies of SIGBUS. By default they live in RAM, one directory
    per var_dir."""
    config = load_config({}, var_dir=tmp_path / "var")
    assert config.metrics_dir.parent == SHM_DIR
    assert load_config({}, var_dir=tmp_path / "var2").metrics_dir != config.metrics_dir
    chosen = load_config({}, var_dir=tmp_path / "var", metrics_files_dir=tmp_path / "m")
    assert chosen.metrics_dir == tmp_path / "m"


def test_without_metrics_there_are_no_hooks_and_no_page(config):
    app = create_app(config, with_metrics=False)
    assert app.test_client().get("/metrics").status_code == 404


def test_seconds_since_last_ping_is_one_query_per_scrape_per_unit(tmp_path):
    db_path = tmp_path / "db.sqlite3"
    conn = db.connect(db_path)
    db.init_schema(conn)
    now = datetime.now(UTC).replace(tzinfo=None)
    rows = [(unit(u), now - timedelta(hours=u, days=d)) for u in range(1, 4) for d in range(5)]
    conn.executemany("INSERT INTO pings (ping_ts, ping_date, ping_time, unit_id) "
                     "VALUES (?, '', '', ?)",
                     [(ts.isoformat(timespec="microseconds"), hw_id) for hw_id, ts in rows])
    conn.close()
    (family,) = PingAgeCollector(db_path).collect()
    ages = {s.labels["hw_id"]: s.value for s in family.samples}
    assert set(ages) == {unit(1), unit(2), unit(3)}
    for u in range(1, 4):
        assert abs(ages[unit(u)] - u * 3600) < 60
    assert list(PingAgeCollector(tmp_path / "missing.sqlite3").collect())[0].samples == []
    assert not (tmp_path / "missing.sqlite3").exists()


def test_server_start_empties_the_metrics_dir(tmp_path):
    metrics_dir = tmp_path / "var" / "metrics"
    metrics_dir.mkdir(parents=True)
    (metrics_dir / "counter_123.db").write_bytes(b"old")
    (metrics_dir / "notes.txt").write_text("not ours")
    env = metrics_environ({"PATH": "/bin"}, metrics_dir)
    assert env[METRICS_DIR_ENV] == str(metrics_dir) and env["PATH"] == "/bin"
    assert sorted(p.name for p in metrics_dir.iterdir()) == ["notes.txt"]
    metrics_environ({}, tmp_path / "new" / "metrics")
    assert (tmp_path / "new" / "metrics").is_dir()


def uwsgi_stats(port: int) -> dict:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        return json.loads(b"".join(iter(lambda: sock.recv(65536), b"")))


def run_concurrently(server, requests: list[tuple[str, str, bytes | None]]) -> list[int]:
    with ThreadPoolExecutor(max_workers=16) as pool:
        return list(pool.map(lambda r: server.request(*r).status, requests))


def push_unit(server, hw_id: str) -> list[int]:
    return [server.request("PUT", push_url(hw_id, k * CHUNK), b"r" * CHUNK).status
            for k in range(CHUNKS_EACH)]


def test_metrics_add_up_both_uwsgi_workers(server_factory):
    stats_port = free_port()
    server = server_factory(uwsgi_options=(f"stats=127.0.0.1:{stats_port}",))
    assert run_concurrently(server, workload()) == [200] * PINGS
    with ThreadPoolExecutor(max_workers=PUSH_UNITS) as pool:
        statuses = list(pool.map(lambda i: push_unit(server, unit(100 + i)), range(PUSH_UNITS)))
    assert statuses == [[200] * CHUNKS_EACH] * PUSH_UNITS
    assert run_concurrently(server, [r[:3] for r in REFUSALS]) == [r[3] for r in REFUSALS]

    workers = uwsgi_stats(stats_port)["workers"]
    assert len(workers) == 2
    assert all(w["requests"] > 0 for w in workers), [w["requests"] for w in workers]
    # Each worker counts in files of its own pid; /metrics adds them up.
    pids = {w["pid"] for w in workers}
    files = {p.name for p in server.metrics_dir.iterdir()}
    assert all(f"counter_{pid}.db" in files for pid in pids), (pids, files)

    found: dict = {}
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # the pings table lags the replies by milliseconds
        reply = server.request("GET", "/metrics")
        assert reply.status == 200
        found = samples(reply.body.decode())
        if all(value(found, "co2unit_seconds_since_last_ping", hw_id=unit(i)) for i in range(12)):
            break
        time.sleep(0.1)
    assert_counted(found)


def test_an_unreadable_database_leaves_out_the_ping_ages_only(client, config, caplog):
    config.db_path.write_bytes(b"this is not a database" * 100)
    client.get("/no/such/page")
    resp = client.get("/metrics")
    assert resp.status_code == 200
    found = samples(resp.get_data(as_text=True))
    assert value(found, "co2unit_http_requests_total", endpoint="unmatched", status="404") == 1
    assert not any(name == "co2unit_seconds_since_last_ping" for name, _ in found)
    assert "cannot read the pings" in caplog.text
