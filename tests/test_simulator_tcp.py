"""simulate-tcp's stations: the firmware's buffer, deletion and faults, against a tiny reader."""

from __future__ import annotations

import asyncio
import random

import pytest

from co2unit_server.records import tcp_format
from co2unit_server.simulator.tcp_devices import (
    BUFFER_RECORDS,
    DELETED,
    GIVE_UP_S,
    SimConfig,
    Station,
    station_plan,
    wake,
)


def station(sensors: str = "varying", wake_s: int = 10, every_s: int = 1) -> Station:
    return Station(1, wake_s, every_s, sensors, random.Random(1))


class Reader:
    """A gateway stand-in: reads each connection to its end, then closes."""

    def __init__(self) -> None:
        self.packets: list[bytes] = []

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.packets.append(await reader.read())
        writer.close()


def wake_against_reader(st: Station, kind: str) -> tuple[list[bytes], float]:
    """One wake of `st` against a Reader on loopback: the packets it got, the ATtiny's wait."""
    async def run() -> tuple[list[bytes], float]:
        reader = Reader()
        server = await asyncio.start_server(reader.handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        async with server:
            waited = await wake(SimConfig(port=port), st, kind)
        return reader.packets, waited
    return asyncio.run(run())


def test_the_buffer_keeps_58_records_shifting_the_oldest_out():
    st = station()
    for k in range(BUFFER_RECORDS + 2):
        st.measure(float(k))
    assert len(st.buffer) == 58 and st.shifted_out == 2
    assert [r.seq for r in st.buffer] == list(range(2, 60))
    header = tcp_format.check(st.packet(), {})
    assert header.bytes_ready == 348  # and one more record would not fit in 350 bytes
    assert header.bytes_ready + header.record_bytes >= tcp_format.DEVICE_BUFFER_BYTES


def test_the_attinys_pace():
    st = station(wake_s=3600, every_s=120)
    assert st.per_wake == 30
    assert st.interval_s == pytest.approx(123.04)


@pytest.mark.parametrize("sensors", ["failed", "steady"])
def test_failed_and_steady_sensors_give_equal_records(sensors):
    st = station(sensors)
    st.measure(0.0)
    st.measure(1.0)
    assert st.buffer[0].raw == st.buffer[1].raw
    if sensors == "failed":
        assert st.buffer[0].raw == bytes.fromhex("0000fcfffcff")


def test_a_full_station_loses_its_first_a():
    full = Station(1, 10, 1, "failed", random.Random(1), starts_full=True)
    assert station_plan(SimConfig(packets=3, faults=0.0), full) == ["lost-a", "normal", "normal"]


@pytest.mark.parametrize("kind", ["normal", "lost-a", "cut", "esp-reset", "pieces",
                                  "outage", "wifi-timeout"])
def test_a_wake_deletes_only_on_an_a_in_time(kind):
    st = station()
    for k in range(3):
        st.measure(float(k))
    whole = st.packet()
    packets, waited = wake_against_reader(st, kind)
    assert (st.buffer == []) == (kind in DELETED)
    if kind in ("outage", "wifi-timeout"):
        assert packets == [] and st.sent == []
        assert waited == (GIVE_UP_S if kind == "wifi-timeout" else 1.0)
        return
    assert packets[0] == st.sent[0].payload
    if kind == "cut":
        assert whole.startswith(packets[0]) and len(packets[0]) < len(whole)
        assert not st.sent[0].whole
    else:
        assert packets == [whole] * (2 if kind == "esp-reset" else 1)
        assert all(s.whole and s.seqs == (0, 1, 2) for s in st.sent)
    assert waited < GIVE_UP_S


def test_a_slow_wifi_writes_after_the_attiny_gave_up():
    st = station()
    st.measure(0.0)
    packets, waited = wake_against_reader(st, "slow-wifi")
    assert packets == [st.sent[0].payload] and st.sent[0].whole
    assert waited == GIVE_UP_S and len(st.buffer) == 1  # kept: sent again at the next wake
