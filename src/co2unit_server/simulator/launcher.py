"""Start and stop co2unit-server under uWSGI on loopback: for tests, benchmarks and the demo."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from ..core.config import SHM_DIR, ConfigError, load_config
from .unitclient import Reply, request


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _kill_group(proc: subprocess.Popen | None, sig: int) -> None:
    """Signal a process started in a session of its own, and all it started; reap it."""
    if proc is not None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        proc.wait(timeout=30)


class ServerProcess:
    """co2unit-server under uWSGI on 127.0.0.1, with its own data dirs; can be killed."""

    host = "127.0.0.1"

    def __init__(self, base: Path, ini: Path, env: dict[str, str] | None = None,
                 extra_args: Sequence[str] = (), port: int | None = None) -> None:
        self.remote_data = base / "remote_data"
        self.var_dir = base / "var"
        self.log_path = base / "uwsgi.log"
        self.ini = ini
        self.env = env or {}
        self.extra_args = list(extra_args)
        self.port = port or free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout: float = 30.0) -> ServerProcess:
        cmd = [sys.executable, "-m", "co2unit_server", "serve", "--ini", str(self.ini),
               "--host", self.host, "--port", str(self.port),
               "--remote-data-dir", str(self.remote_data), "--var-dir", str(self.var_dir),
               *self.extra_args]
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                         env={**os.environ, **self.env},
                                         start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"uWSGI exited: {self.log_path.read_text()[-3000:]}")
            try:
                # 401: the index is up, behind the admin login (admin_users_file).
                if self.request("GET", "/").status in (200, 401):
                    return self
            except OSError:
                time.sleep(0.1)
        self.kill()
        raise RuntimeError(f"uWSGI did not answer in {timeout}s: {self.log_path.read_text()}")

    def request(self, method: str, path: str, body: bytes | None = None,
                timeout: float = 30.0) -> Reply:
        return request(self.host, self.port, method, path, body, timeout)

    @property
    def metrics_dir(self) -> Path:
        """Where its workers' prometheus_client files are (config.metrics_dir)."""
        return load_config({**os.environ, **self.env}, self.ini,
                           var_dir=self.var_dir.resolve()).metrics_dir

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Signal every process of the server (master, workers, HTTP router) and reap it;
        its metrics files go too when they are in RAM (they would outlive its temp dirs)."""
        self.proc = _kill_group(self.proc, sig)
        with contextlib.suppress(ConfigError):  # a server started with bad settings has none
            if self.metrics_dir.parent == SHM_DIR:
                shutil.rmtree(self.metrics_dir, ignore_errors=True)

    def stop(self, grace: float = 15.0) -> None:
        """Stop as systemd does: SIGTERM to the master, SIGKILL to all if it lingers."""
        if self.proc is None:
            return
        self.proc.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=grace)
        self.kill(signal.SIGKILL)

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class GatewayProcess:
    """`co2unit-server gateways` on 127.0.0.1 with its own data dirs and CO2UNIT_* settings.

    `env` holds settings by name (e.g. {"tcp_gateway_port": "5001"}); `tcp_port=True` picks a
    free port for the TCP gateway. Started, it has logged READY; it can be killed with -9.
    """

    host = "127.0.0.1"

    def __init__(self, base: Path, settings: dict[str, str] | None = None,
                 tcp: bool = False) -> None:
        self.remote_data = base / "remote_data"
        self.var_dir = base / "var"
        self.log_path = base / "gateways.log"
        self.settings = {"gateway_host": self.host, **(settings or {})}
        if tcp:
            self.settings["tcp_gateway_port"] = str(free_port())
        self.proc: subprocess.Popen | None = None

    @property
    def tcp_port(self) -> int:
        return int(self.settings["tcp_gateway_port"])

    def environ(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CO2UNIT_")}
        env.update({f"CO2UNIT_{name.upper()}": value for name, value in self.settings.items()})
        env["CO2UNIT_REMOTE_DATA_DIR"] = str(self.remote_data)
        env["CO2UNIT_VAR_DIR"] = str(self.var_dir)
        return env

    def start(self, timeout: float = 30.0) -> GatewayProcess:
        from ..gateways.process import READY

        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "co2unit_server", "gateways"],
                                         stdout=log, stderr=subprocess.STDOUT,
                                         env=self.environ(), start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if READY in self.log_path.read_text(errors="replace")[offset:]:
                return self
            if self.proc.poll() is not None:
                raise RuntimeError(f"gateways exited: {self.log_path.read_text()[-3000:]}")
            time.sleep(0.05)
        self.kill()
        raise RuntimeError(f"gateways not ready in {timeout}s: {self.log_path.read_text()}")

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def kill(self, sig: int = signal.SIGKILL) -> None:
        self.proc = _kill_group(self.proc, sig)

    def stop(self, grace: float = 15.0) -> int | None:
        """SIGTERM, as uWSGI and systemd stop it; SIGKILL if it lingers. Returns the exit code."""
        if self.proc is None:
            return None
        self.proc.send_signal(signal.SIGTERM)
        code = None
        with contextlib.suppress(subprocess.TimeoutExpired):
            code = self.proc.wait(timeout=grace)
        self.kill(signal.SIGKILL)
        return code
