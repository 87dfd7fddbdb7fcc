"""A simulated unit's cycle against the real server: order, chunks, budget, resync, updates."""

from __future__ import annotations

import itertools
import json
import random
import socket
import threading
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from co2unit_server.records.pinglog import ping_files
from co2unit_server.simulator.fleet import place_update
from co2unit_server.simulator.launcher import free_port
from co2unit_server.simulator.sdcard import (
    ERRORS_DIR,
    PUSH_DIRS,
    READINGS_DIR,
    STATE_PATH,
    Irregularities,
    SdCard,
)
from co2unit_server.simulator.unit import (
    FirmwareHazard,
    PushState,
    Unit,
    alive_path,
    signal_quality,
)
from co2unit_server.simulator.verify import verify_dir

HW_ID = "co2unit-30aea42a50bc"
DAY = datetime(2026, 1, 1)


def make_card(path: Path, days: int = 3) -> SdCard:
    card = SdCard(path, rotate_bytes=5000)
    card.format(HW_ID, "varanger-03")
    add_days(card, days)
    return card


def add_days(card: SdCard, days: int, rng: random.Random | None = None) -> None:
    rng = rng or random.Random(days)
    for day in range(days):
        start = DAY + timedelta(days=day)
        card.measure(rng, start, start + timedelta(days=1), Irregularities())
        card.log_day(rng, start, Irregularities())


def make_unit(card: SdCard, server, **kwargs) -> tuple[Unit, list[tuple[str, str, int]],
                                                       list[int]]:
    """A unit whose requests are recorded as (method, path, body length), and reply statuses."""
    unit = Unit(card, server.host, server.port, random.Random(1), timeout=10, **kwargs)
    calls: list[tuple[str, str, int]] = []
    statuses: list[int] = []
    send = unit._request

    def recording(method, path, body=None, accept=(200,)):
        calls.append((method, path, len(body or b"")))
        reply = send(method, path, body, accept)
        statuses.append(reply.status)
        return reply

    unit._request = recording
    return unit, calls, statuses


def assert_server_has_card(server, card: SdCard) -> None:
    for dirname in PUSH_DIRS:
        assert card.files(dirname) == sorted(p.name for p in
                                             (server.remote_data / HW_ID / dirname).iterdir())
        for name in card.files(dirname):
            assert (server.remote_data / HW_ID / dirname / name).read_bytes() == \
                (card.root / dirname / name).read_bytes()


def test_push_state_hazards_of_the_firmware(tmp_path):
    card = make_card(tmp_path / "card", days=3)
    names = card.files(READINGS_DIR)
    state = PushState(card.root, READINGS_DIR, names[1], 100)
    state.update_by_fname("readings-9999.tsv", 50)  # a name the unit does not have
    assert (state.fname, state.progress) == (names[0], 0)
    state.update_by_fname(names[0], 10**9)  # an offset past its own file
    with pytest.raises(FirmwareHazard):
        state.file_complete()


def test_a_cycle_in_the_units_order_and_chunks(tmp_path, uwsgi_server):
    card = make_card(tmp_path / "card")
    unit, calls, _ = make_unit(card, uwsgi_server)
    stats = unit.cycle(DAY)
    assert stats.synced and stats.failures == 0
    assert calls[0][0] == "POST" and calls[0][1].startswith(f"/ou/{HW_ID}/alive?site_code=")
    assert calls[1] == ("GET", f"/ou/{HW_ID}/updates?recursive=False", 0)
    pushed = [path.split("/")[4] for method, path, _ in calls[2:]]
    assert pushed == sorted(pushed, key=lambda d: d != "errors")  # errors, then data
    assert all(method == "PUT" and 0 < size <= 4096 for method, _, size in calls[2:])
    assert_server_has_card(uwsgi_server, card)


def test_the_time_budget_stops_a_cycle_and_the_next_resumes(tmp_path, uwsgi_server):
    card = make_card(tmp_path / "card", days=4)
    ticks = itertools.count()
    unit, _, _ = make_unit(card, uwsgi_server, budget_s=8, clock=lambda: next(ticks))
    stats = unit.cycle(DAY)
    assert stats.budget_exhausted and not stats.synced
    saved = card.load_state()["sync_states"][ERRORS_DIR]["ack_file"]
    resumed, calls, _ = make_unit(SdCard(card.root, card.rotate_bytes), uwsgi_server)
    assert resumed.cycle(DAY).synced
    first_put = next(path for method, path, _ in calls if method == "PUT")
    assert first_put.endswith(f"{ERRORS_DIR}/{saved[0]}?offset={saved[1]}") and saved[1] > 0
    assert_server_has_card(uwsgi_server, card)


def test_a_unit_that_lost_its_state_resynchronises_without_resending(tmp_path, uwsgi_server):
    card = make_card(tmp_path / "card", days=6)
    unit, _, _ = make_unit(card, uwsgi_server)
    assert unit.cycle(DAY).synced
    card.lose_state()
    add_days(card, 1, random.Random(99))
    unit, calls, _ = make_unit(card, uwsgi_server)
    assert unit.cycle(DAY + timedelta(days=7)).synced
    puts = [path for method, path, _ in calls if method == "PUT"]
    # One chunk from the start of each dir, then the server's ack_file moves it to the end.
    assert puts[0].endswith("errors-0000.txt?offset=0")
    assert sum("readings-0000.tsv?offset=0" in p for p in puts) == 1
    assert len(puts) < 8
    assert_server_has_card(uwsgi_server, card)


def test_a_new_sd_card_supersedes_the_old_copy(tmp_path, uwsgi_server):
    old = make_card(tmp_path / "card-0", days=3)
    unit, _, _ = make_unit(old, uwsgi_server)
    assert unit.cycle(DAY).synced
    new = SdCard(tmp_path / "card-1", rotate_bytes=5000)
    new.format(HW_ID, "varanger-03")
    add_days(new, 1, random.Random(5))
    unit.card = new
    assert unit.cycle(DAY + timedelta(days=4)).synced
    assert_server_has_card(uwsgi_server, new)
    superseded = list((uwsgi_server.remote_data / HW_ID / "superseded").glob("*/*"))
    assert sorted(p.name for p in superseded) == ["data", "errors"]
    for dirname in PUSH_DIRS:
        assert verify_dir(uwsgi_server.remote_data / HW_ID, dirname, [old.root, new.root],
                          drained=True) is None
        # Against the new card alone the old copy cannot be accounted for.
        assert verify_dir(uwsgi_server.remote_data / HW_ID, dirname, [new.root], True)


def test_a_nickname_update_is_pulled_and_applied(tmp_path, uwsgi_server):
    card = make_card(tmp_path / "card", days=1)
    place_update(uwsgi_server.remote_data, HW_ID, "update-2026-01-02a", "varanger-99")
    unit, calls, _ = make_unit(card, uwsgi_server)
    stats = unit.cycle(DAY)
    assert stats.updates == 1 and stats.synced
    assert ("GET", f"/ou/{HW_ID}/updates/update-2026-01-02a/conf-patch/ou-id.json", 0) in calls
    assert card.nickname == "varanger-99"
    # The cycle after an update starts with a ping that carries the new nickname.
    pings = [p for m, p, _ in calls if p.startswith(f"/ou/{HW_ID}/alive")]
    assert pings[-1].startswith(f"/ou/{HW_ID}/alive?site_code=varanger-99")
    add_days(card, 1, random.Random(7))
    last = (card.root / READINGS_DIR / card.files(READINGS_DIR)[-1]).read_bytes()
    assert last.splitlines()[-1].split(b"\t")[1] == b"varanger-99"
    assert unit.cycle(DAY + timedelta(days=1)).updates == 0


def test_a_server_behind_the_unit_answers_416_and_gets_the_bytes_again(tmp_path, uwsgi_server):
    card = make_card(tmp_path / "card", days=6)
    unit, _, _ = make_unit(card, uwsgi_server)
    assert unit.cycle(DAY).synced
    last = uwsgi_server.remote_data / HW_ID / READINGS_DIR / card.files(READINGS_DIR)[-1]
    with open(last, "r+b") as f:  # as if restored from an older backup
        f.truncate(last.stat().st_size // 2)
    add_days(card, 1, random.Random(8))
    unit, _, statuses = make_unit(card, uwsgi_server)
    assert unit.cycle(DAY + timedelta(days=7)).synced
    assert 416 in statuses
    assert_server_has_card(uwsgi_server, card)


def test_a_failed_request_ends_the_wake_without_a_retry(tmp_path):
    """comm_sequence logs the error and goes on to NTP and sleep: no second try that day."""
    card = make_card(tmp_path / "card", days=1)
    port = free_port()  # nothing listens: the connection is refused
    unit = Unit(card, "127.0.0.1", port, random.Random(1), timeout=5)
    stats = unit.cycle(DAY)
    assert (stats.requests, stats.failures, stats.synced) == (1, 1, False)
    errors = (card.root / ERRORS_DIR / card.files(ERRORS_DIR)[-1]).read_text()
    headline = [line for line in errors.splitlines() if line.startswith("----- ")][-1]
    assert headline.endswith(f"EXC   Error transmitting to http://127.0.0.1:{port}")
    assert (card.root / STATE_PATH).is_file()  # saved, as comm_sequence's finally does


def test_a_silent_link_is_a_watchdog_reset_that_saves_nothing(tmp_path, uwsgi_server):
    """No socket timeout on the unit: the watchdog resets it, the comm state of that wake is
    never written, and the next boot's crash recovery is what the error log shows."""
    card = make_card(tmp_path / "card", days=2)
    unit, _, _ = make_unit(card, uwsgi_server)
    assert unit.cycle(DAY).synced
    add_days(card, 1, random.Random(3))
    saved = (card.root / STATE_PATH).read_bytes()
    with socket.socket() as silent:  # accepts nothing, answers nothing
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        stalled = Unit(card, "127.0.0.1", silent.getsockname()[1], random.Random(2), timeout=0.5)
        stats = stalled.cycle(DAY + timedelta(days=3))
    assert (stats.watchdog_resets, stats.failures, stats.synced) == (1, 0, False)
    assert (card.root / STATE_PATH).read_bytes() == saved
    log = (card.root / ERRORS_DIR / card.files(ERRORS_DIR)[-1]).read_text().splitlines()
    assert "WARN  CRASH RECOVERY. Running recovery procedure (attempt 1). Watchdog reset?" \
        in log[-2]
    assert "INFO  Run log leading up to this..." in log[-1]
    # The next wake resumes from the last saved position and catches up.
    unit, _, _ = make_unit(card, uwsgi_server)
    assert unit.cycle(DAY + timedelta(days=4)).synced
    assert_server_has_card(uwsgi_server, card)


def test_the_modem_s_signal_outcomes_and_the_ping_that_carries_them():
    """pycom_util.lte_signal_quality: a dict whenever AT+CSQ answered, with None for what it
    could not parse and rssi_dbm None for the modem's 99 ("not known"); no dict if it raised."""
    draws = [signal_quality(random.Random(seed)) for seed in range(3000)]
    assert None in draws
    assert {"rssi_raw": None, "ber_raw": None, "rssi_dbm": None} in draws
    assert {"rssi_raw": 99, "ber_raw": 99, "rssi_dbm": None} in draws
    measured = [d for d in draws if d and d["rssi_raw"] not in (None, 99)]
    assert {d["rssi_raw"] for d in measured} == set(range(32))
    assert all(d["rssi_dbm"] == -113 + 2 * d["rssi_raw"] for d in measured)
    ou_id = {"hw_id": HW_ID, "site_code": None}
    assert alive_path(ou_id, None) == f"/ou/{HW_ID}/alive?site_code=None"
    unknown = {"rssi_raw": 99, "ber_raw": 99, "rssi_dbm": None}
    assert alive_path(ou_id, unknown) == (
        f"/ou/{HW_ID}/alive?site_code=None&rssi_raw=99&rssi_dbm=None&ber_raw=99")


@pytest.mark.parametrize("signal", [None, {"rssi_raw": None, "ber_raw": None, "rssi_dbm": None},
                                    {"rssi_raw": 99, "ber_raw": 99, "rssi_dbm": None}])
def test_the_server_records_every_ping_the_firmware_can_send(uwsgi_server, signal):
    reply = uwsgi_server.request("POST", alive_path({"hw_id": HW_ID, "site_code": None}, signal))
    assert reply.status == 200
    fields = ping_files(uwsgi_server.var_dir / "pings")[-1].read_text().splitlines()[-1].split("\t")
    assert fields[1:5] == [HW_ID, "None", str((signal or {}).get("rssi_raw")), "None"]


def place_update_files(remote_data: Path, name: str, files: dict[str, bytes]) -> None:
    for rel, content in files.items():
        path = remote_data / HW_ID / "updates" / name / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)


def test_a_half_fetched_update_is_completed_not_cut_short(tmp_path, uwsgi_server):
    """pull_last_dir skips a file already in tmp/ and fetches the rest (fixed in 2020-02)."""
    card = make_card(tmp_path / "card", days=1)
    files = {"conf-patch/ou-id.json": json.dumps({"site_code": "varanger-77"}).encode(),
             "flash/lib/extra.py": b"# new code\n" * 50}
    place_update_files(uwsgi_server.remote_data, "update-2026-01-05a", files)
    listed = uwsgi_server.request(
        "GET", f"/ou/{HW_ID}/updates/update-2026-01-05a?recursive=True").json()
    kept = card.root / "tmp" / "updates" / "update-2026-01-05a" / listed[0]
    kept.parent.mkdir(parents=True)
    kept.write_bytes(files[listed[0]])  # the wake before fetched the first file, then died
    unit, calls, _ = make_unit(card, uwsgi_server)
    stats = unit.cycle(DAY)
    got = [p for m, p, _ in calls if "/updates/update-2026-01-05a/" in p]
    assert got == [f"/ou/{HW_ID}/updates/update-2026-01-05a/{listed[1]}"]
    for rel, content in files.items():
        assert (card.root / "updates" / "update-2026-01-05a" / rel).read_bytes() == content
    assert stats.updates == 1 and card.nickname == "varanger-77"


def test_an_update_pulled_but_not_installed_is_installed_at_the_next_wake(tmp_path, uwsgi_server):
    """CheckForUpdates installs the newest update-* dir on the card unless it is recorded as
    installed, whether or not this wake pulled it; the unit then communicates again."""
    card = make_card(tmp_path / "card", days=1)
    update = card.root / "updates" / "update-2026-01-03a" / "conf-patch"
    update.mkdir(parents=True)
    (update / "ou-id.json").write_text(json.dumps({"site_code": "varanger-42"}))
    place_update_files(uwsgi_server.remote_data, "update-2026-01-03a",
                       {"conf-patch/ou-id.json": (update / "ou-id.json").read_bytes()})
    unit, calls, _ = make_unit(card, uwsgi_server)
    stats = unit.cycle(DAY)
    assert stats.updates == 1 and stats.synced and card.nickname == "varanger-42"
    assert not [p for m, p, _ in calls if "/updates/update-" in p]  # nothing fetched again
    pings = [p for m, p, _ in calls if m == "POST"]
    assert len(pings) == 2 and pings[1].startswith(f"/ou/{HW_ID}/alive?site_code=varanger-42")
    assert card.read_json("var/updates-state.json") == {"installed": "updates/update-2026-01-03a"}
    assert unit.cycle(DAY + timedelta(days=1)).updates == 0


def test_a_200_cut_short_by_a_clean_close_counts_as_delivered(tmp_path):
    """urequests reads the status line, then headers up to the close: a 200 whose connection
    closes inside its headers advances the unit's position before its JSON fails (as behind a
    proxy whose upstream died after answering)."""
    card = make_card(tmp_path / "card", days=1)
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(8)

        def answer() -> None:
            for _ in range(3):  # ping, updates list, the first chunk
                conn, _ = server.accept()
                with conn:
                    head = conn.recv(65536)
                    conn.sendall(b"HTTP/1.0 404 NOT FOUND\r\n\r\n{}" if b" /ou/" in head
                                 and b"/updates?" in head else b"HTTP/1.0 200 OK\r\nContent-Ty")

        thread = threading.Thread(target=answer)
        thread.start()
        unit = Unit(card, "127.0.0.1", server.getsockname()[1], random.Random(1), timeout=5)
        stats = unit.cycle(DAY)
        thread.join(timeout=10)
    first = card.files(ERRORS_DIR)[0]
    assert (stats.requests, stats.failures) == (3, 1)
    data = (card.root / ERRORS_DIR / first).read_bytes()
    sent = data.rindex(b"\n----- ") + 1  # all of it but the failure's entry, logged after
    assert card.load_state()["sync_states"][ERRORS_DIR]["ack_file"][:2] == [first, sent]
