"""simulate-ws: the streaming device against a tiny ack server, and the real gateway verified."""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
from collections import Counter
from collections.abc import Awaitable, Callable
from contextlib import closing
from pathlib import Path

from websockets.asyncio.server import ServerConnection, serve

from co2unit_server.records import ws_format
from co2unit_server.records.ws_format import MessageError
from co2unit_server.simulator import ws_devices
from co2unit_server.simulator.ws_devices import (
    MALFORMED,
    Fleet,
    FleetPlan,
    SimConfig,
    StreamingDevice,
    run_fleet,
)


class AckServer:
    """A gateway stand-in: welcome, an ack for each readings message, an error for anything
    malformed. `hold_first`: the first connection acks none of its first N messages and is
    then dropped (the device must send them again)."""

    def __init__(self, hold_first: int = 0) -> None:
        self.hold_first = hold_first
        self.received: list[list[int]] = []  # the readings seqs of each connection
        self.live: set[ServerConnection] = set()

    async def handler(self, ws: ServerConnection) -> None:
        seqs: list[int] = []
        self.received.append(seqs)
        first = len(self.received) == 1
        self.live.add(ws)
        try:
            async for text in ws:
                try:
                    message = ws_format.parse(text)
                    if message["type"] == "hello":
                        await ws.send(ws_format.welcome(None))
                        continue
                    readings = ws_format.check_readings(message)
                except MessageError as exc:
                    await ws.send(ws_format.error(exc.code, str(exc)))
                    continue
                seqs.append(readings.seq)
                if first and len(seqs) <= self.hold_first:
                    if len(seqs) == self.hold_first:
                        ws.transport.abort()
                    continue
                await ws.send(ws_format.ack(readings.seq))
        finally:
            self.live.discard(ws)

    async def command(self, name: str, session: str) -> None:
        for ws in list(self.live):
            await ws.send(ws_format.command(name, session, "2026-12-06T02:00:00.000000Z"))


def run_device(server: AckServer, seconds: float, rate: float = 20.0, faults: float = 0.0,
               follow_sessions: bool = False,
               during: Callable[[AckServer], Awaitable[None]] | None = None
               ) -> StreamingDevice:
    """One device against `server` (on a free loopback port) for `seconds`, drained."""

    async def main() -> StreamingDevice:
        async with serve(server.handler, "127.0.0.1", 0) as ws_server:
            port = ws_server.sockets[0].getsockname()[1]
            plan = FleetPlan(f"ws://127.0.0.1:{port}/", rate, readings=2, faults=faults,
                             follow_sessions=follow_sessions, drain_s=5.0)
            fleet = Fleet(plan, 1)
            device = StreamingDevice("dev-1", 0, fleet)
            side = (lambda: during(server)) if during is not None else None
            await run_fleet([device], fleet, seconds, during=side)
            return device

    return asyncio.run(main())


def test_unacknowledged_messages_are_resent_oldest_first_after_a_reconnect() -> None:
    server = AckServer(hold_first=5)
    device = run_device(server, seconds=1.0)
    first, second = server.received[:2]
    assert first == [1, 2, 3, 4, 5]
    assert second[:5] == [1, 2, 3, 4, 5]  # the resends come first, oldest first
    assert second == sorted(set(second))  # then new ones, seq increasing, none twice
    assert device.resent == 5 and device.closes[0] == 1006
    assert not device.pending and sorted(device.acked) == second
    assert len(device.acked) == device.ticks == 20  # one message per tick, none lost
    assert not device.unexpected


def test_seqs_increase_and_every_reading_has_its_own_time() -> None:
    server = AckServer()
    device = run_device(server, seconds=0.5)
    assert server.received == [list(range(1, 11))]
    times = [ts for seq in sorted(device.acked)
             for ts, _, _ in ws_format.check_readings(
                 ws_format.parse(device.acked[seq].text)).rows[::3]]
    assert times == sorted(set(times))  # strictly increasing: (device, ts, name) is a key


def test_faults_take_turns_and_malformed_messages_get_errors_not_acks() -> None:
    server = AckServer()
    device = run_device(server, seconds=1.5, faults=1.0)
    counts = [device.faults[kind] for kind in ws_devices.FAULTS]
    assert min(counts) >= 2 and max(counts) - min(counts) <= 1, device.faults
    assert device.closes.count(1006) == device.faults["drop"]
    expected = Counter(MALFORMED[kind] for kind, _ in device.malformed)
    assert sum(device.errors.values()) + device.errors_lost == sum(expected.values())
    assert not device.unexpected  # every error had the code its malformed message called for
    bad_seqs = {seq for _, seq in device.malformed if seq is not None}
    assert bad_seqs and not bad_seqs & set(device.acked)
    assert not bad_seqs & {seq for seqs in server.received for seq in seqs}
    assert not device.pending and device.resent >= 1


def test_commands_are_recorded_and_followed() -> None:
    async def session(server: AckServer) -> None:
        await asyncio.sleep(0.4)
        await server.command("start", "s-1")
        await asyncio.sleep(0.5)
        await server.command("stop", "s-1")

    device = run_device(AckServer(), seconds=1.2, follow_sessions=True, during=session)
    assert [(c.command, c.session) for c in device.commands] == [
        ("welcome", None), ("start", "s-1"), ("stop", "s-1")]
    assert not device.started
    assert 6 <= len(device.acked) <= 14 < device.ticks  # measured only while started


def test_simulate_ws_against_the_real_gateway_passes() -> None:
    done = subprocess.run([sys.executable, "-m", "co2unit_server", "simulate-ws", "--devices",
                           "5", "--rate", "5", "--seconds", "4", "--faults", "0.2"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    assert done.stdout.rstrip().endswith("PASS")
    assert "closes: 1001 5" in done.stdout  # every device saw the gateway stop


def test_the_verification_finds_a_lost_row_and_a_line_logged_twice(tmp_path: Path) -> None:
    result = ws_devices.run_own_gateway(SimConfig(devices=2, rate=5, seconds=1.5, faults=0.2,
                                                  keep=tmp_path))
    assert result.passed, result.summary()
    db_path = tmp_path / "var" / "db.sqlite3"
    with closing(sqlite3.connect(db_path)) as conn, conn:
        conn.execute("DELETE FROM measurements WHERE device = 'wsim-0001' AND ts = "
                     "(SELECT min(ts) FROM measurements WHERE device = 'wsim-0001')")
    log = sorted((tmp_path / "remote_data" / "ws" / "wsim-0002").glob("*.log"))[-1]
    log.write_bytes(log.read_bytes() + log.read_bytes().splitlines(keepends=True)[-1])
    problems = ws_devices.verify(result.devices, tmp_path / "remote_data", db_path).problems
    assert any("wsim-0001" in p and "readings not in the table" in p for p in problems)
    assert any("wsim-0002" in p and "logged twice" in p for p in problems)
