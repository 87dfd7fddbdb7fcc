"""The `co2unit-server` command line."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from co2unit_server.cli import build_parser, main
from co2unit_server.core.config import settings_markdown
from co2unit_server.gateways import ws_tokens
from co2unit_server.simulator.launcher import free_port

INI = Path(__file__).resolve().parent.parent / "server.ini.example"


def test_settings_markdown_prints_the_generated_table(capsys):
    assert main(["settings", "--markdown"]) == 0
    assert capsys.readouterr().out == settings_markdown()


def test_settings_lists_every_setting_with_its_value(capsys, tmp_path):
    ini = tmp_path / "server.ini"
    ini.write_text("[co2unit]\nmax_body_bytes = 1234\n")
    assert main(["settings", "--ini", str(ini)]) == 0
    out = capsys.readouterr().out
    assert "max_body_bytes = 1234" in out
    assert "CO2UNIT_PUSH_DIRS, default data,errors" in out


def test_bad_setting_is_a_clear_error_not_a_traceback(tmp_path):
    ini = tmp_path / "server.ini"
    ini.write_text("[co2unit]\nmax_body_bytes = lots\n")
    result = subprocess.run([sys.executable, "-m", "co2unit_server", "settings", "--ini",
                             str(ini)], capture_output=True, text=True)
    assert result.returncode == 2
    assert "max_body_bytes='lots'" in result.stderr and "Traceback" not in result.stderr


def test_serve_refuses_a_missing_ini(capsys, tmp_path):
    assert main(["serve", "--ini", str(tmp_path / "nope.ini")]) == 2
    assert "no such ini file" in capsys.readouterr().err


def test_serve_refuses_bad_uwsgi_option():
    with pytest.raises(SystemExit):
        build_parser().parse_args(["serve", "--uwsgi-option", "threads"])


def serve_refused(tmp_path: Path, *args: str, env: dict[str, str] | None = None,
                  port: int | None = None) -> tuple[str, float]:
    """Run `co2unit-server serve` as `make run` does; assert it exits 2 before uWSGI starts.

    Returns its stderr and how long it ran."""
    port = port or free_port()
    started = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "co2unit_server", "serve", "--ini", str(INI), "--host",
         "127.0.0.1", "--port", str(port), "--remote-data-dir", str(tmp_path / "remote_data"),
         "--var-dir", str(tmp_path / "var"), *args],
        env={**os.environ, "CO2UNIT_GATEWAY_HOST": "127.0.0.1", **(env or {})},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, 9)
    elapsed = time.monotonic() - started
    assert proc.returncode == 2, err
    assert "Traceback" not in err and "uwsgi" not in err  # no uWSGI command line: not started
    with pytest.raises(ProcessLookupError):
        os.killpg(proc.pid, 0)  # nothing of its session is left
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
        pass
    return err, elapsed


def test_serve_stops_at_once_on_a_malformed_devices_file_line(tmp_path):
    devices = tmp_path / "devices.tsv"
    devices.write_text("# name URL interval\nlab-1\thttp://10.0.0.7/circumstances\t10\n"
                       "lab-2 http://10.0.0.8/circumstances 10\n")
    err, elapsed = serve_refused(tmp_path, "--tcp-port", str(free_port()),
                                 "--pull-devices", str(devices))
    assert err == (f"co2unit-server serve: {devices}:3: expected name<TAB>URL<TAB>interval "
                   "seconds, found 1 tab-separated field(s)\n")
    assert elapsed < 10  # the imports, then the check: no uWSGI, no gateway process


def test_serve_refuses_a_devices_file_it_cannot_read(tmp_path):
    missing = tmp_path / "devices.tsv"
    err, _ = serve_refused(tmp_path, "--pull-devices", str(missing))
    assert f"pull_devices_file {missing}: cannot read it" in err


def test_serve_refuses_a_gateway_port_that_is_taken(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        err, _ = serve_refused(tmp_path, "--tcp-port", str(port))
    assert err.startswith(f"co2unit-server serve: tcp_gateway_port {port}: cannot listen on "
                          f"127.0.0.1:{port}: Address already in use")


def test_serve_refuses_one_port_for_two_servers(tmp_path):
    port = free_port()
    err, _ = serve_refused(tmp_path, "--tcp-port", str(port), port=port)
    assert f"the HTTP port {port} is also tcp_gateway_port" in err
    err, _ = serve_refused(tmp_path, "--tcp-port", str(port), "--ws-port", str(port))
    assert f"ws_gateway_port {port} is also tcp_gateway_port" in err


def test_serve_refuses_a_tokens_file_line_no_device_can_use(tmp_path):
    tokens = tmp_path / "ws_tokens"
    ws_tokens.add_device(tokens, "lab-1")
    tokens.write_text(tokens.read_text() + "lab-2:sha256$oops\n")
    err, _ = serve_refused(tmp_path, "--ws-port", str(free_port()),
                           env={"CO2UNIT_WS_TOKENS_FILE": str(tokens)})
    assert f"co2unit-server serve: {tokens}:2: not device:sha256$salt$hash" in err
