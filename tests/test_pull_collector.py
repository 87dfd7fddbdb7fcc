"""The HTTP pull collector in the real gateway process, polling emulated NodeMCUs on loopback."""

from __future__ import annotations

import subprocess
import sys
import time
import zlib
from collections import Counter
from pathlib import Path

import pytest
from gateway_fixtures import packet, query, records, send, wait_for

from co2unit_server.gateways.pull_collector import backoff_us, next_poll_us
from co2unit_server.records.gateway_health import read_health
from co2unit_server.records.pull_format import PullDevice
from co2unit_server.records.rawlog import ts_us as us
from co2unit_server.simulator.launcher import GatewayProcess
from co2unit_server.simulator.nodemcu import (
    Checks,
    DeviceSpec,
    FleetThread,
    PullRunSettings,
    devices_tsv,
    gateway_settings,
    now_us,
    read_pull_logs,
    read_pull_table,
    run_pull,
    verify_pull,
)

S = 1_000_000  # µs
MIXED = PullRunSettings(interval_s=1.0, seconds=8.0, timeout_s=0.8, refresh_s=0.5,
                        max_backoff_s=2.0)
MIXED_SPECS = [
    DeviceSpec("h-current"), DeviceSpec("h-old", firmware="2024-05-01"),
    DeviceSpec("h-ds18b20", firmware="2024-05-16"), DeviceSpec("h-probe", missing_probes=7),
    DeviceSpec("h-steady", steady=True),
    DeviceSpec("f-hang-1", "hang"), DeviceSpec("f-hang-2", "hang"), DeviceSpec("f-hang-3", "hang"),
    DeviceSpec("f-boot", "boot", boot_s=2.0, reboot_every_s=4.0, down_s=0.5),
    DeviceSpec("f-500", "status", status=500), DeviceSpec("f-404", "status", status=404),
    DeviceSpec("f-garbage", "garbage"), DeviceSpec("f-nan", "nan"),
    DeviceSpec("f-refuse", "refuse"), DeviceSpec("f-reset", "reset"),
    # Answers 0.6 s late: with pull_refresh_seconds 0.5 the next slot, 1 s on, is too soon.
    DeviceSpec("f-slow", "slow", delay_s=0.6),
]


@pytest.fixture(scope="module")
def mixed(tmp_path_factory):
    """One 8-second run of the real gateway process against healthy and faulty devices.

    Shared by the tests below (module scope, so GatewayProcess directly, as gateway_factory
    does): each looks at one behaviour in what that run left behind.
    """
    return run_pull(tmp_path_factory.mktemp("mixed"), MIXED, MIXED_SPECS)


def lines_of(run, device: str):
    return [line for _, line in read_pull_logs(run.base / "remote_data")[device]]


def stored(run, device: str) -> list[tuple[str, str, float]]:
    """(ts, name, value) of a device's stored values, in time order."""
    table = read_pull_table(run.base / "var" / "db.sqlite3")
    return sorted(row for source, rows in table.values.items()
                  if source.startswith(f"pull/{device}/") for row in rows)


def test_every_accepted_answer_is_stored_once_with_its_values_and_time(mixed):
    # verify_pull holds every raw log line against the answer the emulator sent: its values,
    # stored exactly once, at the collector's UTC time of the answer (within 1 s after it was
    # sent), nothing from bad or failed polls, every answer sent also logged.
    assert mixed.report.passed, mixed.report.summary()
    assert "0 over 1 s" in mixed.report.figures["healthy poll start lateness"]


def test_healthy_devices_stay_on_schedule_beside_hanging_and_failing_ones(mixed):
    for device in mixed.devices:
        if not mixed.fleet.devices[device.name].spec.healthy:
            continue
        arrivals = [a for a in mixed.fleet.devices[device.name].arrivals_us
                    if mixed.started_us <= a <= mixed.stopped_us]
        slots = device.slot_index(mixed.stopped_us + 1) - device.slot_index(mixed.started_us)
        assert abs(len(arrivals) - slots) <= 1, (device.name, len(arrivals), slots)
        # A generous bound that is the behaviour (on its slot), not a speed claim.
        assert max(device.lateness_s(a) for a in arrivals) < 1.0
        assert min(device.lateness_s(a) for a in arrivals) > -0.05


def test_older_firmware_stores_what_it_has(mixed):
    old = {name for _, name, _ in stored(mixed, "h-old")}
    assert old == {"mq135.co", "mq135.co2", "mq135.alcohol", "mq135.nh4", "mq135.aceton",
                   "mq135.toulen", "bmp180.temperature", "bmp180.pressure",
                   "bmp180.seaLevelPressure", "bmp180.altitude"}
    assert {name for _, name, _ in stored(mixed, "h-ds18b20")} == old | {"ds18b20.temperature"}
    assert {line.verdict for line in lines_of(mixed, "h-old")} == {"ok"}


def test_values_keep_their_sensor_names(mixed):
    rows = stored(mixed, "h-current")
    last_ts = rows[-1][0]
    temperatures = {name: value for ts, name, value in rows
                    if ts == last_ts and name.endswith(".temperature")}
    assert set(temperatures) == {"bmp180.temperature", "ds18b20.temperature",
                                 "dht22.temperature"}
    assert len(set(temperatures.values())) == 3  # each its own sensor's value, as sent


def test_equal_consecutive_values_are_stored_with_their_times(mixed):
    rows = stored(mixed, "h-steady")
    polls = [line for line in lines_of(mixed, "h-steady") if line.verdict == "ok"]
    co2 = [(ts, value) for ts, name, value in rows if name == "mq135.co2"]
    assert len(co2) == len(polls) >= 6
    assert len({value for _, value in co2}) == 1
    assert [ts for ts, _ in co2] == sorted(line.ts for line in polls)


def test_missing_probes_leave_the_rest_of_the_answer(mixed):
    lines = lines_of(mixed, "h-probe")
    assert {line.verdict for line in lines} == {"partial"}
    assert "missing probe" in lines[0].detail
    names = {name for _, name, _ in stored(mixed, "h-probe")}
    assert "ds18b20.temperature" not in names and "dht22.temperature" in names


def test_a_rebooting_device_is_stored_once_it_has_read_its_sensors(mixed):
    lines = lines_of(mixed, "f-boot")
    verdicts = [line.verdict for line in lines]
    booting = [i for i, line in enumerate(lines) if "empty (booting)" in line.detail]
    assert booting and all(verdicts[i] == "bad" for i in booting)
    assert "ok" in verdicts[booting[0]:]  # after the boot its values come
    # The DS18B20 mean of zeroed slots ("0.00" while booting) is never stored.
    assert all(value != 0.0 for _, name, value in stored(mixed, "f-boot")
               if name == "ds18b20.temperature")
    assert len(stored(mixed, "f-boot")) == 13 * verdicts.count("ok")


@pytest.mark.parametrize("device, end, detail", [
    ("f-500", "500", "HTTP 500"), ("f-404", "404", "HTTP 404"),
    ("f-garbage", "200", ("not JSON", 'no "nodemcu" object')),
])
def test_answers_without_values_are_kept_raw_and_store_nothing(mixed, device, end, detail):
    lines = lines_of(mixed, device)
    assert lines and {(line.end, line.verdict) for line in lines} == {(end, "bad")}
    assert all(line.detail.startswith(detail) for line in lines)
    sent = {a.body for a in mixed.fleet.devices[device].answers}
    assert {line.payload for line in lines} <= sent  # the body as received
    assert stored(mixed, device) == []


def test_nan_inf_and_ovf_values_are_left_out(mixed):
    lines = lines_of(mixed, "f-nan")
    assert {line.verdict for line in lines} == {"partial"}
    assert "mq135.co2 is 'nan'" in lines[0].detail and "'ovf'" in lines[0].detail
    names = {name for _, name, _ in stored(mixed, "f-nan")}
    assert names == {"bmp180.temperature", "bmp180.pressure", "bmp180.seaLevelPressure",
                     "ds18b20.temperature", "dht22.temperature"}


@pytest.mark.parametrize("device, why", [("f-hang-1", "timeout: no answer within 0.8 s"),
                                         ("f-refuse", "connection refused"),
                                         ("f-reset", "connection reset")])
def test_polls_without_answer_fail_with_the_reason(mixed, device, why):
    lines = lines_of(mixed, device)
    assert lines
    assert {(line.end, line.verdict, line.detail, line.payload) for line in lines} == {
        ("-", "failed", why, b"")}
    log = (mixed.base / "gateways.log").read_text()
    assert f"pull {device} {mixed.fleet.devices[device].url}: failed: {why}" in log


def test_never_polled_sooner_than_refresh_after_the_previous_answer(mixed):
    slow = mixed.fleet.devices["f-slow"]
    sent = sorted(a.sent_us for a in slow.answers)
    gaps = [arrival - max(s for s in sent if s < arrival) for arrival in slow.arrivals_us[1:]]
    assert len(gaps) >= 2 and min(gaps) >= MIXED.refresh_s * S
    # The slot 1 s on came too soon after the late answer: skipped, not made up for.
    starts = slow.arrivals_us
    assert all(1.8 * S < b - a < 2.5 * S for a, b in zip(starts, starts[1:], strict=False))
    assert {line.verdict for line in lines_of(mixed, "f-slow")} == {"ok"}


def test_backoff_after_failures_and_back_on_schedule_after_success(tmp_path, gateway_factory):
    specs = [DeviceSpec("refuse", "refuse"), DeviceSpec("healthy"),
             DeviceSpec("boot", "boot", boot_s=4.0)]
    with FleetThread(specs) as fleet:
        devices = fleet.pull_devices(0.5)
        devices_file = tmp_path / "devices.tsv"
        devices_file.write_text(devices_tsv(devices))
        run = PullRunSettings(interval_s=0.5, timeout_s=0.5, refresh_s=0.2, max_backoff_s=2.0)
        gateway = gateway_factory(settings=gateway_settings(devices_file, run))
        started = now_us()
        time.sleep(8.0)
        stopped = now_us()
        gateway.stop()
    report = verify_pull(fleet, devices, tmp_path, started, stopped, Checks(run.refresh_s))
    assert report.passed, report.summary()
    refused = [us(line.ts) for line in lines_of_dir(tmp_path, "refuse")]
    gaps = [(b - a) / S for a, b in zip(refused, refused[1:], strict=False)]
    # interval·2^(k-1) after the k-th failure in a row, capped at pull_max_backoff_seconds.
    expected = [0.5, 1.0] + [2.0] * (len(gaps) - 2)
    assert len(gaps) >= 4 and all(abs(g - e) < 0.15 for g, e in zip(gaps, expected,
                                                                     strict=True)), gaps
    boot = lines_of_dir(tmp_path, "boot")
    first_ok = [line.verdict for line in boot].index("ok")
    assert first_ok >= 2 and all(line.verdict == "bad" for line in boot[:first_ok])
    # Back on its schedule: every poll after the success on its slot, one interval apart.
    recovered = [a for a in fleet.devices["boot"].arrivals_us if a >= us(boot[first_ok].ts)]
    boot_device = next(d for d in devices if d.name == "boot")
    assert len(recovered) >= 4
    assert all(abs(boot_device.lateness_s(a)) < 0.2 for a in recovered[1:])


def test_a_full_disk_pauses_polling_until_there_is_room(tmp_path, gateway_factory, small_fs):
    disk = small_fs(8 << 20)
    with FleetThread([DeviceSpec("healthy")]) as fleet:
        arrivals = fleet.devices["healthy"].arrivals_us
        devices_file = tmp_path / "devices.tsv"
        devices_file.write_text(devices_tsv(fleet.pull_devices(0.5)))
        run = PullRunSettings(interval_s=0.5, timeout_s=0.5, refresh_s=0.2, max_backoff_s=2.0)
        gateway = gateway_factory(settings={**gateway_settings(devices_file, run),
                                            "min_free_bytes": str(2 << 20)}, base=disk.path)
        assert wait_for(lambda: len(arrivals) >= 2)
        disk.fill(leave=1 << 20)
        time.sleep(1.5)  # the collector looks at the disk once a second
        paused_at = len(arrivals)
        time.sleep(3.0)
        polled_while_full = len(arrivals) - paused_at
        disk.empty()
        assert wait_for(lambda: len(arrivals) >= paused_at + 2), "no polls after recovery"
        gateway.stop()
    assert polled_while_full == 0
    log = gateway.log_text()
    assert log.count("pull collector: storage full") == 1, log
    assert log.count("pull collector: storage recovered") == 1, log


def lines_of_dir(base: Path, device: str):
    return [line for _, line in read_pull_logs(base / "remote_data")[device]]


# --- the devices file ------------------------------------------------------------------------

def arrivals_since(fleet, name: str, since_us: int) -> list[int]:
    return [a for a in fleet.devices[name].arrivals_us if a >= since_us]


def log_count(gateway: GatewayProcess, text: str) -> int:
    return gateway.log_text().count(text)


def test_an_interval_under_the_refresh_is_polled_at_the_refresh_and_warned_once(
        tmp_path, gateway_factory):
    with FleetThread([DeviceSpec("fast-1"), DeviceSpec("fast-2"), DeviceSpec("slow")]) as fleet:
        devices = fleet.pull_devices(1.0)  # ahttpdc's default interval
        devices[2] = PullDevice("slow", devices[2].url, 3.0)
        path = tmp_path / "devices.tsv"
        path.write_text(devices_tsv(devices))
        gateway = gateway_factory(settings={"pull_devices_file": str(path)})
        started = now_us()
        time.sleep(7.0)
        # A reload of the same devices (a comment added) warns no more.
        path.write_text(devices_tsv(devices) + "# edited\n")
        time.sleep(3.0)
        stopped = now_us()
        assert gateway.stop() == 0
    for name in ("fast-1", "fast-2"):
        warning = (f"pull {name}: interval 1 s is below pull_refresh_seconds (1.3 s), the "
                   "device's values would not have changed: polled every 1.3 s")
        assert log_count(gateway, warning) == 1, gateway.log_text()[-3000:]
        arrivals = [a for a in fleet.devices[name].arrivals_us if started <= a <= stopped]
        gaps = [(b - a) / S for a, b in zip(arrivals, arrivals[1:], strict=False)]
        # Every refresh interval (1.3 s, the emulator's clock), never at the file's 1 s.
        assert len(gaps) >= 5 and all(1.25 < gap < 1.6 for gap in gaps), gaps
    assert "pull slow:" not in gateway.log_text()  # 3 s: polled as written, no warning
    assert len(lines_of_dir(tmp_path, "fast-1")) >= 6


def test_a_devices_file_edited_bad_or_removed_keeps_the_last_good_devices_polled(
        tmp_path, gateway_factory):
    with FleetThread([DeviceSpec("first"), DeviceSpec("added")]) as fleet:
        first, added = fleet.pull_devices(0.5)
        path = tmp_path / "devices.tsv"
        path.write_text(devices_tsv([first]))
        gateway = gateway_factory(settings={"pull_devices_file": str(path),
                                            "pull_refresh_seconds": "0.2"})
        health = gateway.var_dir / "gateways-health.json"
        assert wait_for(lambda: arrivals_since(fleet, "first", 0))

        # A malformed line (spaces for tabs), beside the new device's good one.
        path.write_text(devices_tsv([first, added]) + f"bad {first.url} 5\n")
        error = f"{path}:4: expected name<TAB>URL<TAB>interval seconds, found 1 tab-separated"
        assert wait_for(lambda: error in gateway.log_text()), gateway.log_text()[-2000:]
        edited = now_us()
        time.sleep(3.0)
        assert len(arrivals_since(fleet, "first", edited)) >= 4  # the last good version's
        assert fleet.devices["added"].arrivals_us == []  # the bad version is not taken
        assert log_count(gateway, error) == 1  # once per change, not per check
        assert error in read_health(health)[0][2]

        path.write_text(devices_tsv([first, added]))  # fixed
        assert wait_for(lambda: arrivals_since(fleet, "added", 0))
        assert wait_for(lambda: read_health(health) == [])

        path.unlink()
        gone = f"pull_devices_file {path}: cannot read it"
        assert wait_for(lambda: gone in gateway.log_text())
        removed = now_us()
        time.sleep(3.0)
        for name in ("first", "added"):
            assert len(arrivals_since(fleet, name, removed)) >= 4, name
        assert log_count(gateway, gone) == 1
        assert [(about, level) for about, level, _ in read_health(health)] == [
            ("pull devices file", "warning")]
        assert gateway.stop() == 0
    assert not health.exists()  # no process, nothing to report


def test_a_bad_devices_file_at_start_stops_no_gateway(tmp_path, gateway_factory):
    """Standalone or under uWSGI, the process never exits on it: uWSGI would respawn it for
    ever. The TCP gateway beside it runs; once the file is good its devices are polled."""
    with FleetThread([DeviceSpec("lab-1")]) as fleet:
        (device,) = fleet.pull_devices(0.5)
        path = tmp_path / "devices.tsv"
        path.write_text(devices_tsv([device]) + "lab-2\thttp://10.0.0.8/x\tsoon\n")
        gateway = gateway_factory(settings={"pull_devices_file": str(path),
                                            "pull_refresh_seconds": "0.2"}, tcp=True)
        assert (f"{path}:3: interval 'soon' is not a number of seconds (still polling the 0 "
                "device(s) of its last good version)") in gateway.log_text()
        assert send(gateway.tcp_port, packet(records(100, 3)))
        assert wait_for(lambda: query(gateway, "SELECT count(*) FROM measurements "
                                      "WHERE family = 'tcp'") == [(9,)])
        assert fleet.devices["lab-1"].arrivals_us == []
        path.write_text(devices_tsv([device]))
        assert wait_for(lambda: fleet.devices["lab-1"].arrivals_us)
        assert gateway.stop() == 0
    assert "Traceback" not in gateway.log_text()


# --- the schedule ----------------------------------------------------------------------------

def test_phases_spread_a_large_fleet_over_the_interval():
    devices = [PullDevice(f"nodemcu-{i:04d}", "http://x/", 10.0) for i in range(1000)]
    per_second = Counter(d.phase_us // S for d in devices)
    assert len(per_second) == 10 and max(per_second.values()) < 140
    assert devices[0].phase_us == zlib.crc32(b"nodemcu-0000") * 10 * S >> 32  # stable


def test_next_poll_is_the_next_slot_and_skips_missed_ones():
    device = PullDevice("d", "http://x/", 10.0)
    slot = device.slot_us(1000)
    assert next_poll_us(device, slot, slot + S // 10, 0, 1.3, 300) == device.slot_us(1001)
    # Overran by two slots: the next slot after the end, not a burst of the missed ones.
    assert next_poll_us(device, slot, slot + 25 * S, 0, 1.3, 300) == device.slot_us(1003)
    # Ended 9.5 s into the interval: the next slot is sooner than refresh, so skipped.
    assert next_poll_us(device, slot, slot + 95 * S // 10, 0, 1.3, 300) == device.slot_us(1002)
    # Polled at the refresh (its interval was shorter): as often as the refresh allows, not
    # every other slot.
    fast = PullDevice("f", "http://x/", 1.0).polled_every(1.3)
    at = fast.slot_us(50)
    assert next_poll_us(fast, at, at + S // 20, 0, 1.3, 300) == at + S // 20 + 13 * S // 10


def test_backoff_doubles_from_the_interval_up_to_the_cap():
    device = PullDevice("d", "http://x/", 10.0)
    assert [backoff_us(device, k, 300) // S for k in range(1, 8)] == [10, 20, 40, 80, 160,
                                                                        300, 300]
    assert backoff_us(device, 1000, 300) == 300 * S
    assert backoff_us(device, 3, 5) == 10 * S  # never sooner than its own interval
    slot = device.slot_us(7)
    assert next_poll_us(device, slot, slot + 5 * S, 2, 1.3, 300) == slot + 20 * S
    # A poll that failed slowly still leaves pull_refresh_seconds before the next.
    short = PullDevice("s", "http://x/", 1.5)
    assert next_poll_us(short, 0, 2 * S, 1, 1.3, 300) == 33 * S // 10


def test_simulate_pull_passes(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "co2unit_server", "simulate-pull", "--devices", "10",
         "--interval", "1", "--refresh", "0.5", "--timeout", "0.6", "--seconds", "5",
         "--faults", "0.8", "--seed", "3", "--keep", str(tmp_path / "run")],
        capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "\nPASS\n" in done.stdout
    assert (tmp_path / "run" / "remote_data" / "pull" / "nodemcu-0000").is_dir()
