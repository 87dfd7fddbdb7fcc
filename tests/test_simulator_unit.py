"""A simulated unit's cycle against the real server: order, chunks, budget, resync, updates."""

from __future__ import annotations

import itertools
import random
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from co2unit_server.simulator.fleet import place_update
from co2unit_server.simulator.sdcard import (
    ERRORS_DIR,
    PUSH_DIRS,
    READINGS_DIR,
    Irregularities,
    SdCard,
)
from co2unit_server.simulator.unit import FirmwareHazard, PushState, Unit
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
