"""Access control: admin users and basic auth, the failed-login delay, the known-units allowlist."""

from __future__ import annotations

import base64
import io
import stat
import threading
import time

import pytest

from co2unit_server.cli import main
from co2unit_server.core.config import load_config
from co2unit_server.database import db
from co2unit_server.records import users
from co2unit_server.server import auth
from co2unit_server.server.app import create_app

from conftest import HW_ID, OTHER_HW_ID

PASSWORD = "correct horse battery staple"
ADMIN_PATHS = ["/", "/metrics", "/status/alive/recent", "/status/alive/summary",
               "/data/co2/summary", "/data/co2/co2_tiered_all_hires.svg", "/fleet", "/api/units",
               "/no/such/page", "/fleet/esp8266-1", "/api/units/esp8266-1",
               "/api/units/esp8266-1/measurements?format=csv"]
PUSH = "/ou/{}/push-sequential/data/readings/readings-0000.tsv?offset=0"


def basic(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


@pytest.fixture
def cheap_hashes(monkeypatch):
    """Hashes at 1/80 of the real scrypt cost, so that the many logins below stay quick."""
    monkeypatch.setattr(users, "SCRYPT_PARAMS", {"n": 2**10, "r": 8, "p": 1})
    decoy = users.hash_password("decoy")
    monkeypatch.setattr(auth, "decoy_hash", lambda: decoy)


@pytest.fixture
def users_file(tmp_path, cheap_hashes):
    path = tmp_path / "admin-users"
    users.add_user(path, "alice", PASSWORD)
    return path


@pytest.fixture
def secured(tmp_path, users_file, monkeypatch):
    """A test client of an app behind the admin login, its failed-login sleeps recorded."""
    slept: list[float] = []
    monkeypatch.setattr(auth, "pause", slept.append)
    config = load_config({}, remote_data_dir=tmp_path / "remote_data", var_dir=tmp_path / "var",
                         min_free_bytes=0, admin_users_file=users_file)
    client = create_app(config).test_client()
    client.slept = slept
    return client


# --- the users file and add-user -------------------------------------------------------------

def test_users_file_holds_salted_scrypt_hashes_never_the_password(tmp_path):
    users_file = tmp_path / "users"
    users.add_user(users_file, "alice", PASSWORD)
    users.add_user(users_file, "bob", PASSWORD)
    text = users_file.read_text()
    assert PASSWORD not in text
    assert stat.S_IMODE(users_file.stat().st_mode) == 0o600
    found = users.parse_credentials(text)
    assert set(found) == {"alice", "bob"}
    for stored in found.values():
        scheme, params, salt, digest = stored.split("$")
        assert (scheme, params) == ("scrypt", "n=16384,r=8,p=5")
        assert len(base64.b64decode(salt)) == 16 and len(base64.b64decode(digest)) == 32
    assert found["alice"] != found["bob"]  # a random salt each
    assert users.verify_password(PASSWORD, found["bob"])
    assert not users.verify_password(PASSWORD + "x", found["bob"])
    assert not users.verify_password(PASSWORD, "plain:text")


def test_add_user_replaces_an_existing_user_and_keeps_the_others(users_file):
    users.add_user(users_file, "bob", "first")
    users.add_user(users_file, "alice", "second")
    found = users.parse_credentials(users_file.read_text())
    assert list(found) == ["bob", "alice"]
    assert users.verify_password("second", found["alice"])
    assert not list(users_file.parent.glob(".admin-users.*"))  # no temp file left


@pytest.mark.parametrize("name, password", [("", "pw"), ("a:b", "pw"), ("bob", ""),
                                            ("new\nline", "pw"), ("#root", "pw")])
def test_add_user_refuses_bad_names_and_empty_passwords(tmp_path, name, password):
    with pytest.raises(ValueError):
        users.add_user(tmp_path / "users", name, password)
    assert not (tmp_path / "users").exists()


def ini_with_users_file(tmp_path, path) -> str:
    ini = tmp_path / "server.ini"
    ini.write_text(f"[co2unit]\nadmin_users_file = {path}\n")
    return str(ini)


def test_cli_add_user_reads_the_password_from_stdin(tmp_path, monkeypatch):
    path = tmp_path / "users"
    monkeypatch.setattr("sys.stdin", io.StringIO(PASSWORD + "\n"))
    ini = ini_with_users_file(tmp_path, path)
    assert main(["add-user", "carol", "--ini", ini, "--password-stdin"]) == 0
    assert users.verify_password(PASSWORD, users.parse_credentials(path.read_text())["carol"])


def test_cli_add_user_asks_twice_on_the_terminal(tmp_path, monkeypatch, capsys):
    path = tmp_path / "users"
    ini = ini_with_users_file(tmp_path, path)
    answers = iter(["one", "two", PASSWORD, PASSWORD])
    monkeypatch.setattr(users.getpass, "getpass", lambda prompt: next(answers))
    assert main(["add-user", "dave", "--ini", ini]) == 2
    assert "differ" in capsys.readouterr().err and not path.exists()
    assert main(["add-user", "dave", "--ini", ini]) == 0
    assert "dave" in users.parse_credentials(path.read_text())


@pytest.mark.parametrize("name, stdin, message", [("eve", "\n", "empty"),
                                                  ("e:ve", "pw\n", "':'")])
def test_cli_add_user_refusals(tmp_path, monkeypatch, capsys, name, stdin, message):
    monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
    ini = ini_with_users_file(tmp_path, tmp_path / "users")
    assert main(["add-user", name, "--ini", ini, "--password-stdin"]) == 2
    assert message in capsys.readouterr().err


def test_cli_add_user_needs_the_setting(tmp_path, capsys):
    ini = tmp_path / "server.ini"
    ini.write_text("[co2unit]\n")
    assert main(["add-user", "frank", "--ini", str(ini), "--password-stdin"]) == 2
    assert "admin_users_file is not set" in capsys.readouterr().err


# --- basic auth on the admin surfaces --------------------------------------------------------

@pytest.mark.parametrize("path", ADMIN_PATHS)
def test_every_admin_surface_needs_a_login(secured, path):
    for headers in ({}, basic("alice", "wrong"), basic("mallory", PASSWORD),
                    {"Authorization": "Bearer abc"}, {"Authorization": "Basic !!!"}):
        resp = secured.get(path, headers=headers)
        assert resp.status_code == 401, (path, headers)
        assert resp.headers["WWW-Authenticate"] == 'Basic realm="co2unit-server"'
        assert resp.get_json()["error"] == "UNAUTHORIZED"
    assert secured.get(path, headers=basic("alice", PASSWORD)).status_code != 401


def test_unit_endpoints_stay_open(secured):
    assert secured.post(f"/ou/{HW_ID}/alive?site_code=x").status_code == 200
    assert secured.put(PUSH.format(HW_ID), data=b"abc").status_code == 200
    assert secured.get(f"/ou/{HW_ID}/updates?recursive=False").status_code == 404
    assert secured.get(f"/ou/{HW_ID}/nothing").status_code == 404


def test_refusals_are_logged_with_the_client_address(secured, caplog):
    secured.get("/metrics", headers=basic("alice", "guess"),
                environ_base={"REMOTE_ADDR": "203.0.113.7"})
    assert "203.0.113.7" in caplog.text and "'alice'" in caplog.text
    assert "guess" not in caplog.text


def test_a_changed_users_file_is_read_again(secured, users_file):
    assert secured.get("/", headers=basic("grace", "pw")).status_code == 401
    users.add_user(users_file, "grace", "pw")
    assert secured.get("/", headers=basic("grace", "pw")).status_code == 200


def test_a_missing_users_file_locks_the_admin_pages_not_the_units(tmp_path, caplog):
    config = load_config({}, remote_data_dir=tmp_path / "rd", var_dir=tmp_path / "var",
                         min_free_bytes=0, admin_users_file=tmp_path / "missing")
    client = create_app(config).test_client()
    assert "add-user" in caplog.text
    assert client.get("/", headers=basic("alice", PASSWORD)).status_code == 401
    assert client.post(f"/ou/{HW_ID}/alive?site_code=x").status_code == 200


# --- the failed-login delay ------------------------------------------------------------------

def test_the_delay_doubles_with_failures_and_a_success_resets_it(secured):
    remote = {"REMOTE_ADDR": "198.51.100.1"}
    for _ in range(7):
        secured.get("/", headers=basic("alice", "bad"), environ_base=remote)
    assert secured.slept == [0.0, 0.25, 0.5, 1.0, 2.0, 4.0, 4.0]
    # Another address is not slowed down by this one's failures.
    secured.get("/", headers=basic("alice", "bad"), environ_base={"REMOTE_ADDR": "192.0.2.9"})
    assert secured.slept[-1] == 0.0
    assert secured.get("/", headers=basic("alice", PASSWORD),
                       environ_base=remote).status_code == 200
    secured.get("/", headers=basic("alice", "bad"), environ_base=remote)
    assert secured.slept[-2:] == [4.0, 0.0]


def test_the_delay_is_real_time(tmp_path, users_file):
    # A bounded small config, measured with the real clock.
    gate = auth.AdminAuth(auth.UsersFile(users_file), auth.FailureThrottle(base=0.2, cap=0.4))
    app = create_app(load_config({}, remote_data_dir=tmp_path / "rd", var_dir=tmp_path / "v",
                                 min_free_bytes=0))
    app.before_request_funcs.setdefault(None, []).append(gate.before_request)
    client = app.test_client()
    took = []
    for _ in range(3):
        started = time.monotonic()
        assert client.get("/", headers=basic("alice", "bad")).status_code == 401
        took.append(time.monotonic() - started)
    # Lower bounds only (a loaded machine makes every request slower, never a delay shorter).
    assert took[1] - took[0] > 0.1 and took[2] - took[0] > 0.25


def test_failures_are_forgotten_and_memory_is_bounded():
    now = [0.0]
    throttle = auth.FailureThrottle(base=0.25, cap=4.0, forget_after=60, max_addresses=3,
                                    clock=lambda: now[0])
    for _ in range(3):
        throttle.failed("a")
    assert throttle.delay("a") == 1.0
    now[0] = 61
    assert throttle.delay("a") == 0.0
    for address in "bcdef":
        throttle.failed(address)
    assert len(throttle._failures) == 3 and throttle.delay("b") == 0.0


def test_a_flood_of_logins_holds_few_threads_and_is_not_checked(users_file, tmp_path):
    release = threading.Event()
    gate = auth.AdminAuth(auth.UsersFile(users_file), sleep=lambda s: release.wait(10))
    app = create_app(load_config({}, remote_data_dir=tmp_path / "rd", var_dir=tmp_path / "v",
                                 min_free_bytes=0))
    app.before_request_funcs.setdefault(None, []).append(gate.before_request)
    statuses: list[int] = []

    def login() -> None:
        statuses.append(app.test_client().get("/", headers=basic("alice", "bad")).status_code)

    threads = [threading.Thread(target=login) for _ in range(auth.AdminAuth.MAX_CONCURRENT_CHECKS)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 10
    while gate._slots._value and time.monotonic() < deadline:
        time.sleep(0.01)
    started = time.monotonic()
    # Every slot is held: even the right password is refused at once, unchecked.
    assert app.test_client().get("/", headers=basic("alice", PASSWORD)).status_code == 401
    assert time.monotonic() - started < 1.0  # the held slots would make it wait 10 s
    release.set()
    for thread in threads:
        thread.join(timeout=10)
    assert statuses == [401] * auth.AdminAuth.MAX_CONCURRENT_CHECKS
    assert app.test_client().get("/", headers=basic("alice", PASSWORD)).status_code == 200


def test_the_real_server_asks_for_a_login_and_logs_the_address(server_factory, users_file):
    server = server_factory(env={"CO2UNIT_ADMIN_USERS_FILE": str(users_file)})
    reply = server.request("GET", "/metrics")
    assert reply.status == 401 and reply.json()["error"] == "UNAUTHORIZED"
    assert reply.headers["www-authenticate"] == 'Basic realm="co2unit-server"'
    assert server.request("POST", f"/ou/{HW_ID}/alive?site_code=x").status == 200
    assert "admin login refused from 127.0.0.1" in server.log_path.read_text()


# --- the allowlist of known units ------------------------------------------------------------

def deploy(db_path, *hw_ids: str, status: str = "lab_check") -> None:
    conn = db.connect(db_path)
    db.init_schema(conn)
    conn.executemany("INSERT INTO deploy_durations_tiered (unit_id, status) VALUES (?, ?)",
                     [(hw_id, status) for hw_id in hw_ids])
    conn.close()


@pytest.fixture
def allowlisted(tmp_path):
    config = load_config({}, remote_data_dir=tmp_path / "remote_data", var_dir=tmp_path / "var",
                         min_free_bytes=0, known_units_only=True)
    deploy(config.db_path, HW_ID)
    return create_app(config).test_client(), config


def test_unknown_units_are_pinged_but_refused_pushes_and_updates(allowlisted, caplog):
    client, config = allowlisted
    assert client.post(f"/ou/{OTHER_HW_ID}/alive?site_code=x").status_code == 200
    assert OTHER_HW_ID in (config.pings_dir / "pings-0000.tsv").read_text()
    for resp in (client.put(PUSH.format(OTHER_HW_ID), data=b"abc"),
                 client.get(f"/ou/{OTHER_HW_ID}/updates?recursive=False"),
                 client.get(f"/ou/{OTHER_HW_ID}/updates/update-x/a.json")):
        assert resp.status_code == 403 and resp.get_json()["error"] == "UNKNOWN_UNIT"
    assert "UNKNOWN_UNIT" in caplog.text
    assert not (config.remote_data_dir / OTHER_HW_ID / "data").exists()
    # A deployed unit, and a malformed hw_id (its 400 comes first).
    assert client.put(PUSH.format(HW_ID), data=b"abc").status_code == 200
    assert client.get(f"/ou/{HW_ID}/updates?recursive=False").status_code == 404
    assert client.put(PUSH.format("not-a-unit"), data=b"abc").status_code == 400


def test_known_units_are_cached_for_a_few_seconds(tmp_path):
    now = [0.0]
    db_path = tmp_path / "db.sqlite3"
    deploy(db_path, HW_ID)
    known = auth.KnownUnits(db_path, ttl=5.0, clock=lambda: now[0])
    assert known.is_known(HW_ID) and not known.is_known(OTHER_HW_ID)
    deploy(db_path, OTHER_HW_ID, status="en_route")
    now[0] = 4.9
    assert not known.is_known(OTHER_HW_ID)  # no query within the TTL
    now[0] = 5.1
    assert known.is_known(OTHER_HW_ID)


def test_an_unreadable_database_fails_open_or_keeps_the_last_set(tmp_path, caplog):
    now = [0.0]
    db_path = tmp_path / "db.sqlite3"
    never_read = auth.KnownUnits(tmp_path / "missing.sqlite3", clock=lambda: now[0])
    assert never_read.is_known(OTHER_HW_ID)
    assert "fail open" in caplog.text
    deploy(db_path, HW_ID)
    known = auth.KnownUnits(db_path, ttl=5.0, clock=lambda: now[0])
    assert not known.is_known(OTHER_HW_ID)
    for suffix in ("", "-wal", "-shm"):
        db_path.with_name(db_path.name + suffix).unlink(missing_ok=True)
    db_path.write_bytes(b"garbage" * 1000)
    now[0] = 10
    assert known.is_known(HW_ID) and not known.is_known(OTHER_HW_ID)
    assert "the last known set" in caplog.text
