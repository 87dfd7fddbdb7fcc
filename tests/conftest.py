"""Shared fixtures: the app against temp dirs, and the real server under uWSGI on loopback."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from toolchain_fixtures import build_tree, import_tree, open_db

from co2unit_server.core.config import Config, load_config
from co2unit_server.core.headroom import free_bytes
from co2unit_server.server.app import create_app
from co2unit_server.simulator.launcher import GatewayProcess, ServerProcess

REPO = Path(__file__).resolve().parent.parent
INI = REPO / "server.ini.example"
HW_ID = "co2unit-30aea42a50bc"
OTHER_HW_ID = "co2unit-0123456789ab"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--hide-scrollbars"]


def chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    """Run headless Chromium; a missing browser fails the test (CI installs it)."""
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    assert exe, "chromium is not installed (apt-get install chromium)"
    profile = tmp_path / "chromium-profile"
    done = subprocess.run([exe, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args],
                          capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-2000:]
    return done


@pytest.fixture
def server_factory(tmp_path: Path) -> Iterator:
    """Start real uWSGI servers (extra CO2UNIT_* environment allowed); all stopped at the end."""
    started: list[ServerProcess] = []

    def start(env: dict[str, str] | None = None, base: Path | None = None,
              uwsgi_options: tuple[str, ...] = ()) -> ServerProcess:
        extra = [arg for option in uwsgi_options for arg in ("--uwsgi-option", option)]
        server = ServerProcess(base or tmp_path, INI, env, extra)
        server.start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def gateway_factory(tmp_path: Path) -> Iterator:
    """Start real `co2unit-server gateways` processes (settings by name); all stopped at the end.

    gateway_factory(settings={"pull_devices_file": ...}, tcp=True, base=tmp_path / "x")
    """
    started: list[GatewayProcess] = []

    def start(settings: dict[str, str] | None = None, tcp: bool = False,
              base: Path | None = None) -> GatewayProcess:
        gateway = GatewayProcess(base or tmp_path, settings, tcp)
        gateway.start()
        started.append(gateway)
        return gateway

    yield start
    for gateway in started:
        gateway.stop()


@pytest.fixture
def uwsgi_server(server_factory) -> ServerProcess:
    """The real server under uWSGI on a free loopback port, with temp data dirs."""
    return server_factory()


@pytest.fixture(scope="module")
def tree_db(tmp_path_factory) -> Path:
    """The importer's irregular tree (NULLs, glitches, 85.0, raw values, deployments), imported."""
    tree = build_tree(tmp_path_factory.mktemp("tree"))
    conn = open_db(tree)
    import_tree(tree, conn)
    conn.close()
    return tree.db_dir


@pytest.fixture
def config(tmp_path: Path) -> Config:
    return load_config({}, remote_data_dir=tmp_path / "remote_data", var_dir=tmp_path / "var",
                       min_free_bytes=0)


@pytest.fixture
def client(config: Config):
    """Flask's test client on an app built against temp dirs."""
    return create_app(config).test_client()


class SmallFs:
    """A tmpfs mounted by the test: a disk that can fill, and be emptied again."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fillers: list[Path] = []

    def free(self) -> int:
        return free_bytes(self.path)

    def fill(self, leave: int = 0) -> None:
        """Take all but about `leave` bytes (0: until the disk refuses even a byte)."""
        filler = self.path / f"filler-{len(self.fillers)}"
        self.fillers.append(filler)
        fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            if leave:
                os.posix_fallocate(fd, 0, max(0, self.free() - leave))
                return
            block = b"\0" * 65536
            while True:  # the last bytes too: a write takes what is left
                try:
                    os.write(fd, block)
                except OSError:
                    break
        finally:
            os.close(fd)

    def empty(self) -> None:
        """Delete the fillers: the space comes back."""
        for filler in self.fillers:
            filler.unlink(missing_ok=True)
        self.fillers.clear()


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator:
    """small_fs(size_bytes) mounts a tmpfs of that size under tmp_path (mounting needs root:
    the test is skipped, saying why, where it may not); every one is unmounted at the end."""
    mounted: list[Path] = []

    def mount(size: int, name: str = "small") -> SmallFs:
        path = tmp_path / name
        path.mkdir()
        if shutil.which("mount") is None:
            pytest.skip("cannot mount a tmpfs here: no mount command")
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                              capture_output=True, text=True)
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
        mounted.append(path)
        return SmallFs(path)

    yield mount
    for path in mounted:
        subprocess.run(["umount", "--lazy", str(path)], capture_output=True)
