"""`co2unit-server serve`: run the app under uWSGI with the settings of an ini file.

The ini file's [uwsgi] section stays the one place where uWSGI is tuned; this module only
passes it on, with the port and data directories a caller asked for.
"""

from __future__ import annotations

import os
import shlex
import shutil
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from .core.config import CONFIG_FILE_ENV, env_name

SOMAXCONN_PATH = Path("/proc/sys/net/core/somaxconn")
# prometheus_client reads it when first imported: each worker then counts in files there.
METRICS_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"


def read_uwsgi_section(ini_path: Path) -> list[tuple[str, str]]:
    """Return the [uwsgi] options of an ini file in order (an option may repeat)."""
    options: list[tuple[str, str]] = []
    section = None
    for raw in ini_path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith((";", "#")):
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1].strip()
            continue
        if section == "uwsgi":
            key, sep, value = line.partition("=")
            if not sep:
                raise ValueError(f"{ini_path}: [uwsgi] line without '=': {raw!r}")
            options.append((key.strip(), value.strip()))
    return options


def ini_http_port(ini_path: Path) -> int | None:
    """The port of the ini's `http` option (`:8080`, `127.0.0.1:8080`), None without one."""
    http = dict(read_uwsgi_section(ini_path)).get("http", "")
    port = http.rpartition(":")[2]
    return int(port) if port.isdigit() else None


def system_somaxconn(path: Path = SOMAXCONN_PATH) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def uwsgi_argv(
    ini_path: Path,
    port: int | None = None,
    host: str = "",
    somaxconn: int | None = None,
    extra: Mapping[str, str] | None = None,
    added: Sequence[tuple[str, str]] = (),
) -> list[str]:
    """Build the uWSGI command line from the ini's [uwsgi] section plus overrides.

    `extra` options replace the ini's of the same name; `added` ones come on top of them.
    """
    options = read_uwsgi_section(ini_path) + list(added)
    if port is not None:
        options = [(k, v) for k, v in options if k != "http"] + [("http", f"{host}:{port}")]
    if somaxconn is not None:
        # uWSGI refuses to start when asked for more than the kernel allows.
        options = [(k, str(min(int(v), somaxconn)) if k == "listen" else v) for k, v in options]
    for key, value in (extra or {}).items():
        options = [(k, v) for k, v in options if k != key] + [(key, value)]
    argv = [find_uwsgi()]
    for key, value in options:
        argv += [f"--{key}"] if value.lower() == "true" else [f"--{key}", value]
    return argv


def find_uwsgi() -> str:
    """The uwsgi installed beside this Python (the venv's), else the one on PATH."""
    beside = Path(sys.executable).parent / "uwsgi"
    if beside.exists():
        return str(beside)
    found = shutil.which("uwsgi")
    if not found:
        raise FileNotFoundError("uwsgi is not installed (pip install -r requirements.txt)")
    return found


def serve_environ(
    environ: Mapping[str, str],
    ini_path: Path,
    remote_data_dir: str | None = None,
    var_dir: str | None = None,
    settings: Mapping[str, str | None] | None = None,
) -> dict[str, str]:
    """The environment uWSGI (and the gateway process) runs with: the ini, directories and
    settings given on the command line (by setting name; None or empty: not given)."""
    env = dict(environ)
    env[CONFIG_FILE_ENV] = str(ini_path.resolve())
    if remote_data_dir:
        env[env_name("remote_data_dir")] = str(Path(remote_data_dir).resolve())
    if var_dir:
        env[env_name("var_dir")] = str(Path(var_dir).resolve())
    for name, value in (settings or {}).items():
        if value:
            env[env_name(name)] = value
    return env


def gateway_daemon() -> tuple[str, str]:
    """The uWSGI option that runs `co2unit-server gateways` beside the app.

    The master starts it, restarts it if it dies, and stops it with SIGTERM (the gateway
    then makes what it received durable and stored) when the server stops.
    """
    command = shlex.join([sys.executable, "-m", "co2unit_server", "gateways"])
    if "," in command:
        raise ValueError(f"uWSGI's attach-daemon2 cannot take a comma in {command!r}")
    return ("attach-daemon2", f"cmd={command},stopsignal=15")


def metrics_environ(env: Mapping[str, str], metrics_dir: Path) -> dict[str, str]:
    """Empty (or create) the metrics directory and point the workers' prometheus_client at it."""
    path = metrics_dir.resolve()
    path.mkdir(parents=True, exist_ok=True)
    # An earlier run's files would be summed for ever: start from zero, as a restart does.
    # Only prometheus_client's own files are removed, whatever else the directory holds.
    for stale in path.glob("*.db"):
        stale.unlink()
    return {**env, METRICS_DIR_ENV: str(path)}


def exec_uwsgi(argv: list[str], env: dict[str, str]) -> None:
    """Replace this process by uWSGI, so signals (systemd, Ctrl-C) reach it directly."""
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(argv[0], argv, env)
