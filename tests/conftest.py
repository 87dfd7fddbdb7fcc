"""Shared fixtures: the app against temp dirs, and the real server under uWSGI on loopback."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from co2unit_server import create_app
from co2unit_server.config import Config, load_config
from co2unit_server.unitclient import Reply, request

REPO = Path(__file__).resolve().parent.parent
INI = REPO / "server.ini.example"
HW_ID = "co2unit-30aea42a50bc"
OTHER_HW_ID = "co2unit-0123456789ab"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """co2unit-server under uWSGI on 127.0.0.1, with its own data dirs; can be killed."""

    host = "127.0.0.1"

    def __init__(self, base: Path, env: dict[str, str] | None = None,
                 ini: Path = INI) -> None:
        self.remote_data = base / "remote_data"
        self.var_dir = base / "var"
        self.log_path = base / "uwsgi.log"
        self.ini = ini
        self.env = env or {}
        self.port = free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout: float = 30.0) -> None:
        cmd = [sys.executable, "-m", "co2unit_server", "serve", "--ini", str(self.ini),
               "--host", self.host, "--port", str(self.port),
               "--remote-data-dir", str(self.remote_data), "--var-dir", str(self.var_dir)]
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                         env={**os.environ, **self.env},
                                         start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"uWSGI exited: {self.log_path.read_text()[-3000:]}")
            try:
                if self.request("GET", "/").status == 200:
                    return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"uWSGI did not answer in {timeout}s: {self.log_path.read_text()}")

    def request(self, method: str, path: str, body: bytes | None = None,
                timeout: float = 30.0) -> Reply:
        return request(self.host, self.port, method, path, body, timeout)

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Signal every process of the server (master, workers, HTTP router) and reap it."""
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, sig)
        except ProcessLookupError:
            pass
        self.proc.wait(timeout=30)
        self.proc = None

    def stop(self) -> None:
        self.kill(signal.SIGTERM)


@pytest.fixture
def server_factory(tmp_path: Path) -> Iterator:
    """Start real uWSGI servers (extra CO2UNIT_* environment allowed); all stopped at the end."""
    started: list[ServerProcess] = []

    def start(env: dict[str, str] | None = None, base: Path | None = None) -> ServerProcess:
        server = ServerProcess(base or tmp_path, env)
        server.start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def uwsgi_server(server_factory) -> ServerProcess:
    """The real server under uWSGI on a free loopback port, with temp data dirs."""
    return server_factory()


@pytest.fixture
def config(tmp_path: Path) -> Config:
    return load_config({}, remote_data_dir=tmp_path / "remote_data", var_dir=tmp_path / "var",
                       min_free_bytes=0)


@pytest.fixture
def client(config: Config):
    """Flask's test client on an app built against temp dirs."""
    return create_app(config).test_client()
