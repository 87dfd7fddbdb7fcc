"""The protocol resources through Flask's test client: every route, every error, table-driven."""

from __future__ import annotations

import pytest

from conftest import HW_ID

PUSH = f"/ou/{HW_ID}/push-sequential/data/readings/readings-0000.tsv"


def put(client, url, body: bytes, **kw):
    return client.put(url, data=body, **kw)


def test_alive_records_the_ping_and_answers_empty_object(client, config):
    resp = client.post(f"/ou/{HW_ID}/alive?site_code=varanger-03&rssi_raw=12&rssi_dbm=-89"
                       "&ber_raw=99")
    assert resp.status_code == 200 and resp.get_json() == {}
    line = (config.pings_dir / "pings-0000.tsv").read_text().split("\t")
    assert line[1:] == [HW_ID, "varanger-03", "12", "-89", "99\n"]


def test_alive_without_signal_fields_and_nickname_None(client, config):
    assert client.post(f"/ou/{HW_ID}/alive?site_code=None").status_code == 200
    line = (config.pings_dir / "pings-0000.tsv").read_text().rstrip("\n").split("\t")
    assert line[1:] == [HW_ID, "None", "None", "None", "None"]


def test_alive_with_garbled_signal_value_still_records_the_ping(client, config):
    assert client.post(f"/ou/{HW_ID}/alive?site_code=x&rssi_dbm=loud").status_code == 200
    assert (config.pings_dir / "pings-0000.tsv").read_text().split("\t")[4] == "None"


def test_push_reads_the_raw_body_whatever_the_content_type(client, config):
    body = b"co2unit-30aea42a50bc\tvaranger-03\t2019-07-31\t13:00:10\t23.4375\t1\n"
    resp = put(client, PUSH + "?offset=0", body,
               content_type="application/x-www-form-urlencoded")
    assert resp.status_code == 200
    assert resp.get_json() == {"ack_file": ["readings-0000.tsv", len(body), len(body)]}
    stored = config.remote_data_dir / HW_ID / "data" / "readings" / "readings-0000.tsv"
    assert stored.read_bytes() == body


def test_replies_are_json_bytes_as_the_units_were_written_for(client):
    # Built by json_reply, not Flask-RESTful: the bytes must stay what its output_json sent.
    assert client.post(f"/ou/{HW_ID}/alive").data == b"{}\n"
    resp = put(client, PUSH + "?offset=0", b"abc")
    assert resp.data == b'{"ack_file": ["readings-0000.tsv", 3, 3]}\n'
    assert resp.mimetype == "application/json"


def test_push_416_carries_error_and_ack_file(client):
    put(client, PUSH + "?offset=0", b"12345")
    resp = put(client, PUSH + "?offset=6", b"6")
    assert resp.status_code == 416
    assert resp.get_json()["error"] == "SKIPPED_PART_OF_FILE"
    assert resp.get_json()["ack_file"] == ["readings-0000.tsv", 5, 5]


@pytest.mark.parametrize("length,status,code", [("", 411, "LENGTH_REQUIRED"),
                                               ("abc", 400, "BAD_CONTENT_LENGTH"),
                                               ("-5", 400, "BAD_CONTENT_LENGTH")])
def test_push_without_usable_content_length(client, config, length, status, code):
    resp = client.put(PUSH + "?offset=0", environ_overrides={"CONTENT_LENGTH": length})
    assert resp.status_code == status and resp.get_json()["error"] == code
    assert not (config.remote_data_dir / HW_ID).exists()


BAD_REQUESTS = [
    # (method, url, body, status, error code)
    ("PUT", "/ou/co2unit-XYZ/push-sequential/data/r.tsv?offset=0", b"x", 400, "BAD_HW_ID"),
    ("PUT", f"/ou/{HW_ID}/push-sequential/data/../../etc/passwd?offset=0", b"x", 400,
     "BAD_PATH"),
    ("PUT", f"/ou/{HW_ID}/push-sequential/data/%2e%2e/x?offset=0", b"x", 400, "BAD_PATH"),
    ("PUT", f"/ou/{HW_ID}/push-sequential/data/a%5cb?offset=0", b"x", 400, "BAD_PATH"),
    ("PUT", f"/ou/{HW_ID}/push-sequential/data/a%00b?offset=0", b"x", 400, "BAD_PATH"),
    ("PUT", f"/ou/{HW_ID}/push-sequential/data//x?offset=0", b"x", 400, "BAD_PATH"),
    ("PUT", f"/ou/{HW_ID}/push-sequential/data/r.tsv?offset=-1", b"x", 400, "BAD_OFFSET"),
    ("PUT", f"/ou/{HW_ID}/push-sequential/data/r.tsv?offset=abc", b"x", 400, "BAD_OFFSET"),
    ("PUT", f"/ou/{HW_ID}/push-sequential/data/r.tsv", b"x", 400, "BAD_OFFSET"),
    ("PUT", f"/ou/{HW_ID}/push-sequential/updates/update-x/flash/main.py?offset=0", b"x", 403,
     "FORBIDDEN_DIR"),
    ("PUT", f"/ou/{HW_ID}/push-sequential/r.tsv?offset=0", b"x", 403, "FORBIDDEN_DIR"),
    ("PUT", f"/ou/{HW_ID}/push-sequential/data/r.tsv?offset=0", b"x" * 65537, 413,
     "BODY_TOO_LARGE"),
    ("PUT", f"/ou/{HW_ID}/push-sequential/data/r.tsv?offset=100", b"xyz", 416,
     "SKIPPED_PART_OF_FILE"),
    ("PUT", f"/ou/{HW_ID}/push-sequential/data/r.tsv?offset=33554432", b"xyz", 413,
     "FILE_TOO_LARGE"),
    ("POST", "/ou/co2unit-30aea42a50b/alive", None, 400, "BAD_HW_ID"),
    ("POST", "/ou/../alive", None, 400, "BAD_HW_ID"),
    ("GET", f"/ou/{HW_ID}/updates/../data/readings?recursive=True", None, 400, "BAD_PATH"),
    ("GET", f"/ou/{HW_ID}/updates/%2e%2e/data?recursive=True", None, 400, "BAD_PATH"),
    ("GET", f"/ou/{HW_ID}/updates?recursive=perhaps", None, 400, "BAD_QUERY"),
    ("GET", f"/ou/{HW_ID}/data/readings", None, 404, "NOT_FOUND"),
    ("GET", f"/ou/{HW_ID}/updates", None, 404, "NOT_FOUND"),
    ("GET", f"/ou/{HW_ID}/alive", None, 405, "METHOD_NOT_ALLOWED"),
    ("DELETE", f"/ou/{HW_ID}/push-sequential/data/r.tsv?offset=0", None, 405,
     "METHOD_NOT_ALLOWED"),
    ("GET", "/nothing/here", None, 404, "NOT_FOUND"),
]


@pytest.mark.parametrize("method,url,body,status,code", BAD_REQUESTS)
def test_bad_requests_get_json_errors_and_write_nothing(client, config, method, url, body,
                                                       status, code):
    resp = client.open(url, method=method, data=body)
    assert resp.status_code == status
    assert resp.is_json
    assert resp.get_json()["error"] == code
    assert resp.get_json()["message"]
    assert list(config.remote_data_dir.rglob("*")) == []


def test_updates_listing_recursive_listing_and_download(client, config):
    update = config.remote_data_dir / HW_ID / "updates" / "update-2020-01-14a"
    (update / "conf-patch").mkdir(parents=True)
    (update / "conf-patch" / "ou-id.json").write_bytes(b'{"site_code": "varanger-03"}')
    base = f"/ou/{HW_ID}/updates"
    assert client.get(base + "?recursive=False").get_json() == ["update-2020-01-14a"]
    assert client.get(base + "/update-2020-01-14a?recursive=True").get_json() == [
        "conf-patch/ou-id.json"]
    resp = client.get(base + "/update-2020-01-14a/conf-patch/ou-id.json")
    assert resp.status_code == 200
    assert resp.data == b'{"site_code": "varanger-03"}'
    assert resp.headers["Content-Length"] == str(len(resp.data))


def test_internal_errors_are_json_not_a_traceback(client, config, monkeypatch):
    from co2unit_server.records import pushstore

    def broken(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(pushstore.PushStore, "store", broken)
    resp = put(client, PUSH + "?offset=0", b"x")
    assert resp.status_code == 500
    assert resp.get_json()["error"] == "INTERNAL_ERROR"
    assert b"Traceback" not in resp.data and b"boom" not in resp.data


def test_every_route_answers_without_a_server_error(client):
    """Guards the Flask / Werkzeug / Flask-RESTful pins: each rule is reachable and handled."""
    app = client.application
    samples = {"hw_id": HW_ID, "ident": "esp8266-1", "path": "data/readings/r.tsv",
               "name": "x.svg", "filename": "x.css"}
    for rule in app.url_map.iter_rules():
        url = rule.rule
        for arg in rule.arguments:
            url = url.replace(f"<path:{arg}>", samples[arg]).replace(f"<{arg}>", samples[arg])
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            resp = client.open(url + "?offset=0", method=method, data=b"x")
            # 503: the session commands need the gateway process, not running here.
            handled = resp.status_code < 500 or resp.get_json() == {
                "error": "GATEWAY_UNAVAILABLE", "message": resp.get_json()["message"]}
            assert handled, (method, url, resp.data)
