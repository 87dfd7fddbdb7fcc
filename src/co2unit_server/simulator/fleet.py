"""A fleet of simulated units: simulated days, units waking at once, and the final verdict."""

from __future__ import annotations

import random
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from ..updates.publish import UpdateContent, publish
from .proxy import FaultProxy
from .sdcard import COMM_WAKE, PUSH_DIRS, ROTATE_BYTES, Irregularities, SdCard
from .unit import BUDGET_S, TIMEOUT_S, CycleStats, Unit
from .unitclient import request
from .verify import verify_dir

DRAIN_ROUNDS = 20
# A drain round against a server that is down (restarting) would only use up the rounds.
SERVER_WAIT_S = 60.0


class FleetError(Exception):
    """The fleet cannot run as configured."""


@dataclass
class FleetConfig:
    """Everything a fleet run can be told (the `simulate` options)."""

    host: str = "127.0.0.1"
    port: int = 8080
    remote_data: Path | None = None   # the server's data dir, for verification
    units: int = 10
    days: int = 30
    faults: float = 0.0
    seed: int = 1
    kbps: float | None = None
    workdir: Path | None = None       # where the SD cards live; a temp dir when None
    concurrency: int = 0              # units waking at once; 0 means all of them
    budget_s: float = BUDGET_S
    timeout: float = TIMEOUT_S
    rotate_bytes: int = ROTATE_BYTES
    lose_state_rate: float = 0.0      # per unit and day: the saved sync state is lost
    swap_rate: float = 0.0            # per unit and day: a new SD card
    irregularities: Irregularities = field(default_factory=Irregularities)
    start: datetime = datetime(2026, 1, 1)
    drain: bool = True                # after the days, cycle without faults until all pushed
    nickname_updates: list[tuple[int, int, str]] = field(default_factory=list)  # unit, day, nick
    raw_share: float = 0.5            # units on firmware writing 21-field rows (2020-01-14 on)
    on_cycle: Callable[[int], None] | None = None  # called with the count of finished cycles


def unit_ids(count: int, seed: int) -> list[str]:
    """The fleet's hardware IDs, the same for the same seed."""
    rng = random.Random(f"hw_ids:{seed}")
    return [f"co2unit-{rng.getrandbits(48):012x}" for _ in range(count)]


def nickname_for(index: int) -> str:
    # Every seventh unit is not configured yet, as in the field.
    return f"sim-{index:03d}" if index % 7 != 6 else "simNICK"


def place_update(remote_data: Path, hw_id: str, name: str, nickname: str) -> Path:
    """Publish a conf-patch setting a new nickname, as `co2unit-server publish-update` does."""
    plan = publish(remote_data, [hw_id], UpdateContent(nickname=nickname), name=name)
    return plan.target(hw_id) / "conf-patch" / "ou-id.json"


class SimUnit:
    """One unit of the fleet: its cards (oldest first), its firmware, its own random stream."""

    def __init__(self, index: int, hw_id: str, base: Path, cfg: FleetConfig) -> None:
        self.index = index
        self.hw_id = hw_id
        self.base = base
        self.cfg = cfg
        self.rng = random.Random(f"unit:{cfg.seed}:{hw_id}")
        self.cards: list[Path] = []
        self.lost_states = 0
        self.synced = False
        self.unit = Unit(self._format_card(nickname_for(index)), cfg.host, cfg.port, self.rng,
                         budget_s=cfg.budget_s, timeout=cfg.timeout)

    @property
    def card(self) -> SdCard:
        return self.unit.card

    @property
    def writes_raw_values(self) -> bool:
        """True for the share of units on current firmware, spread evenly over the fleet."""
        share = self.cfg.raw_share
        return (self.index + 1) * share // 1 > self.index * share // 1

    def _format_card(self, nickname: str | None) -> SdCard:
        path = self.base / self.hw_id / f"card-{len(self.cards):03d}"
        card = SdCard(path, self.cfg.rotate_bytes)
        card.format(self.hw_id, nickname)
        self.cards.append(path)
        return card

    def swap_card(self) -> None:
        """Put a freshly formatted card in (the old one is kept for verification)."""
        self.unit.card = self._format_card(self.card.nickname)

    def live_day(self, day: datetime, since: datetime, wake: datetime) -> None:
        """A day in the field up to the wake: maybe a lost state or a new card, then what it
        measured since the last wake (so the wake pushes the night's readings too) and logged."""
        if self.rng.random() < self.cfg.swap_rate:
            self.swap_card()
        elif self.rng.random() < self.cfg.lose_state_rate:
            self.card.lose_state()
            self.lost_states += 1
        self.card.measure(self.rng, since, wake, self.cfg.irregularities, self.writes_raw_values)
        self.card.log_day(self.rng, day, self.cfg.irregularities)

    def cycle(self, now: datetime) -> CycleStats:
        stats = self.unit.cycle(now)
        self.synced = stats.synced
        return stats

    def verify(self, remote_data: Path, drained: bool) -> str | None:
        for dirname in PUSH_DIRS:
            problem = verify_dir(remote_data / self.hw_id, dirname, self.cards, drained)
            if problem:
                return f"{self.hw_id} {dirname}: {problem}"
        return None


@dataclass
class FleetResult:
    """The figures of a fleet run and its verdict."""

    units: int = 0
    days: int = 0
    cycles: int = 0
    requests: int = 0
    bytes_sent: int = 0
    bytes_received: int = 0
    failures: int = 0
    watchdog_resets: int = 0
    faults_injected: int = 0
    lost_states: int = 0
    swaps: int = 0
    updates: int = 0
    budget_exhausted: int = 0
    cycle_wall_s: float = 0.0       # summed over days: from wake until the last unit finished
    longest_cycle_s: float = 0.0
    drained: bool = False
    drain: FleetResult | None = None  # the fault-free wakes after the last day
    latencies: list[float] = field(default_factory=list)
    hazards: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    verified: bool = False

    @property
    def passed(self) -> bool:
        return self.verified and not self.problems and not self.all_hazards

    @property
    def all_hazards(self) -> list[str]:
        return self.hazards + (self.drain.hazards if self.drain else [])

    def add(self, stats: CycleStats, seconds: float) -> None:
        self.cycles += 1
        self.requests += stats.requests
        self.bytes_sent += stats.bytes_sent
        self.bytes_received += stats.bytes_received
        self.watchdog_resets += stats.watchdog_resets
        self.failures += stats.failures
        self.updates += stats.updates
        self.budget_exhausted += stats.budget_exhausted
        self.latencies += stats.latencies
        self.hazards += stats.hazards
        self.longest_cycle_s = max(self.longest_cycle_s, seconds)

    def percentile(self, q: float) -> float:
        if not self.latencies:
            return 0.0
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    def summary(self) -> str:
        verdict = "PASS" if self.passed else ("FAIL" if self.verified or self.all_hazards
                                              else "UNVERIFIED (no --remote-data)")
        rate = self.requests / self.cycle_wall_s if self.cycle_wall_s else 0.0
        drain = self.drain or FleetResult()
        lines = [
            f"units {self.units}  days {self.days}  cycles {self.cycles}  requests "
            f"{self.requests}  (then {drain.cycles} fault-free drain cycles, "
            f"{drain.requests} requests)",
            f"bytes sent {self.bytes_sent}  received {self.bytes_received}  "
            f"failed transmissions {self.failures}  watchdog resets {self.watchdog_resets}  "
            f"faults injected {self.faults_injected}",
            f"lost states {self.lost_states}  new SD cards {self.swaps}  updates {self.updates}  "
            f"out of budget {self.budget_exhausted}",
            f"cycle wall time {self.cycle_wall_s:.2f} s  {rate:.0f} requests/s  latency p50 "
            f"{self.percentile(0.5) * 1000:.1f} ms  p99 {self.percentile(0.99) * 1000:.1f} ms  "
            f"longest cycle {self.longest_cycle_s:.1f} s",
        ]
        lines += [f"firmware hazard: {h}" for h in self.all_hazards[:3]]
        lines += [f"first mismatch: {self.problems[0]}"] if self.problems else []
        lines.append(verdict)
        return "\n".join(lines)


class Fleet:
    """Runs `cfg.units` units for `cfg.days` days against one server."""

    def __init__(self, cfg: FleetConfig) -> None:
        self.cfg = cfg
        if cfg.workdir and cfg.workdir.exists() and any(cfg.workdir.iterdir()):
            # Old cards would mix with the new run's and make the verification meaningless.
            raise FleetError(f"workdir {cfg.workdir} is not empty")
        self._tmp = None if cfg.workdir else tempfile.mkdtemp(prefix="co2unit-sim-")
        self.workdir = Path(cfg.workdir or self._tmp)
        self.units = [SimUnit(i, hw_id, self.workdir, cfg)
                      for i, hw_id in enumerate(unit_ids(cfg.units, cfg.seed))]
        self.result = FleetResult(units=cfg.units, days=cfg.days)
        self._lock = threading.Lock()

    def run(self) -> FleetResult:
        """Simulate every day, drain if asked, verify; the SD cards stay in a given workdir."""
        cfg = self.cfg
        proxy = None
        if cfg.faults or cfg.kbps:
            proxy = FaultProxy((cfg.host, cfg.port), cfg.faults, cfg.seed, cfg.kbps,
                               stall_s=cfg.timeout * 1.5).start()
        try:
            try:
                self._set_route(proxy.host if proxy else cfg.host,
                                proxy.port if proxy else cfg.port)
                for day in range(cfg.days):
                    self._day(day)
                    if proxy and not proxy.wait_idle(cfg.timeout + 30):
                        self.result.problems.append(f"day {day}: proxy connections never ended")
            finally:
                if proxy:
                    proxy.stop()
                    self.result.faults_injected = proxy.stats.faults_injected
            if cfg.drain:
                self._set_route(cfg.host, cfg.port)
                self._drain()
            self._verify()
        finally:
            if self._tmp:
                shutil.rmtree(self._tmp, ignore_errors=True)
        return self.result

    def _set_route(self, host: str, port: int) -> None:
        for sim in self.units:
            sim.unit.host, sim.unit.port = host, port

    def _wake_time(self, day: int) -> datetime:
        """The wake that ends simulated day `day` (the next morning's Communicate)."""
        return self.cfg.start + timedelta(days=day + 1) + COMM_WAKE

    def _day(self, day: int) -> None:
        date = self.cfg.start + timedelta(days=day)
        since = self._wake_time(day - 1) if day else self.cfg.start
        for sim in self.units:
            cards = len(sim.cards)
            sim.live_day(date, since, self._wake_time(day))
            self.result.swaps += len(sim.cards) - cards
        for index, when, nickname in self.cfg.nickname_updates:
            if when == day and self.cfg.remote_data:
                place_update(self.cfg.remote_data, self.units[index].hw_id,
                             f"update-{date:%Y-%m-%d}a", nickname)
        self._wake(self.units, self._wake_time(day), self.result)

    def _wake(self, units: list[SimUnit], now: datetime, result: FleetResult) -> None:
        """All `units` wake at once (up to `concurrency` at a time) and run their cycle."""
        started = time.monotonic()
        with ThreadPoolExecutor(max_workers=self.cfg.concurrency or len(units)) as pool:
            list(pool.map(lambda sim: self._cycle(sim, now, result), units))
        result.cycle_wall_s += time.monotonic() - started

    def _cycle(self, sim: SimUnit, now: datetime, result: FleetResult) -> None:
        started = time.monotonic()
        stats = sim.cycle(now)
        with self._lock:
            result.add(stats, time.monotonic() - started)
            done = result.cycles
        if self.cfg.on_cycle and result is self.result:
            self.cfg.on_cycle(done)

    def _drain(self) -> None:
        """Wake the units that still have data to push, without faults, until all are done."""
        now = self._wake_time(self.cfg.days)
        self.result.drain = FleetResult(units=self.cfg.units)
        for _ in range(DRAIN_ROUNDS):
            pending = [sim for sim in self.units if not sim.synced]
            if not pending or not self._server_answers():
                break
            self._wake(pending, now, self.result.drain)
        self.result.drained = all(sim.synced for sim in self.units)
        if not self.result.drained:
            self.result.problems.append(
                f"units still not fully pushed after {DRAIN_ROUNDS} fault-free wakes: "
                f"{[sim.hw_id for sim in self.units if not sim.synced][:5]}")

    def _server_answers(self) -> bool:
        """Wait (bounded) until the server answers at all; record a problem if it never does."""
        deadline = time.monotonic() + SERVER_WAIT_S
        while time.monotonic() < deadline:
            try:
                request(self.cfg.host, self.cfg.port, "GET", "/", timeout=5)
                return True
            except OSError:
                time.sleep(0.2)
        self.result.problems.append(f"the server did not answer for {SERVER_WAIT_S:.0f} s")
        return False

    def _verify(self) -> None:
        self.result.lost_states = sum(sim.lost_states for sim in self.units)
        if not self.cfg.remote_data:
            return
        self.result.verified = True
        for sim in self.units:
            problem = sim.verify(self.cfg.remote_data, self.result.drained)
            if problem:
                self.result.problems.append(problem)
